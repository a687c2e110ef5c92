"""FFN FLOP accounting (2 FLOPs per multiply-accumulate, 1 token in / 1 token out, heads and norms excluded,
as the paper's Table 2 counts them)."""
from __future__ import annotations

from .config import ModelConfig


def swiglu_flops(d_model: int, d_hidden: int) -> int:
    """gate, up and down projections: 3 matrices of d_model x d_hidden."""
    return 2 * 3 * d_model * d_hidden


def base_ffn_flops_per_token(config: ModelConfig) -> int:
    """The dense model's FFN FLOPs per token over all layers (paper 354M: 377.49M; 720M: 849.35M)."""
    return config.n_layers * swiglu_flops(config.d_model, config.d_hidden)


def moe_ffn_flops_per_token(config: ModelConfig) -> int:
    """Dense FFN plus top-K real experts of hidden d_expert (paper 354M: 471.86M)."""
    f = config.ffn
    d_expert = f.d_expert if f.d_expert is not None else config.d_hidden // f.n_experts
    return base_ffn_flops_per_token(config) + config.n_layers * f.top_k * swiglu_flops(config.d_model, d_expert)


def paper_formula_flops(config: ModelConfig, mean_loops: float, frac_below_max: float) -> float:
    """Table 2's estimate for VersatileFFN: Base * N_mean + (MoE - Base) * P.

    N_mean: mean executed loops over all layers; P: share of tokens whose loop count is below L_max
    (those run the width path, whose top-K of N virtual experts cost what the MoE's K experts cost).
    """
    base = base_ffn_flops_per_token(config)
    return base * mean_loops + (moe_ffn_flops_per_token(config) - base) * frac_below_max


def static_ffn_flops_per_token(config: ModelConfig) -> int | None:
    """FFN FLOPs per token for kinds whose cost does not depend on the data; None for VersatileFFN."""
    kind = config.ffn.kind
    base = base_ffn_flops_per_token(config)
    if kind == "dense":
        return base
    if kind == "loop":
        return base * config.ffn.n_loops
    if kind == "moe":
        return moe_ffn_flops_per_token(config)
    return None
