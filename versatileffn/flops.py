"""FFN FLOP accounting (2 FLOPs per multiply-accumulate, 1 token in / 1 token out, heads and norms excluded,
as the paper's Table 2 counts them)."""
from __future__ import annotations

from .ffn.common import swiglu_flops
from .ffn.moe import MoEFFNConfig, moe_flops
from .ffn.registry import FFN_KINDS
from .ffn.versatile import VersatileFFNConfig
from .model import ModelConfig


def base_ffn_flops_per_token(config: ModelConfig) -> int:
    """The dense model's FFN FLOPs per token over all layers (paper 354M: 377.49M; 720M: 849.35M)."""
    return config.n_layers * swiglu_flops(config.d_model, config.d_hidden)


def moe_ffn_flops_per_token(config: ModelConfig) -> int:
    """The MoE baseline of the same shape: dense FFN plus top-K real experts of hidden d_expert (paper 354M:
    471.86M). Its experts are the model's own (MoE or VersatileFFN: N, K, d_expert), else the MoE defaults."""
    layer = config.ffn_layer_config()
    experts = {k: getattr(layer, k) for k in ("n_experts", "top_k", "d_expert") if hasattr(layer, k)}
    moe = MoEFFNConfig(**experts).shaped(config.d_model, config.d_hidden, config.norm_eps, config.init_std)
    return config.n_layers * moe_flops(moe)


def paper_formula_flops(config: ModelConfig, mean_loops: float, frac_below_max: float) -> float:
    """Table 2's estimate for VersatileFFN: Base * N_mean + (MoE - Base) * P.

    N_mean: mean executed loops over all layers; P: share of tokens whose loop count is below L_max
    (those run the width path, whose top-K of N virtual experts cost what the MoE's K experts cost).
    """
    base = base_ffn_flops_per_token(config)
    return base * mean_loops + (moe_ffn_flops_per_token(config) - base) * frac_below_max


def static_ffn_flops_per_token(config: ModelConfig) -> int | None:
    """FFN FLOPs per token for kinds whose cost does not depend on the data; None for VersatileFFN."""
    per_layer = FFN_KINDS[config.ffn.kind].flops_per_token(config.ffn_layer_config())
    return None if per_layer is None else config.n_layers * per_layer


# ------------------------------------------------------------------------ executed FLOPs (evaluation statistics)

FLOP_CONVENTIONS = {
    "paper": "a VersatileFFN token costs l_hat full FFN applications plus, when it takes the width path "
             "(lambda > 0), top-K of N virtual experts = K * 6 * d_model * d_expert (what the MoE's K real "
             "experts cost); router and loop head not counted (paper Table 2)",
    "implementation": "what versatileffn's eval forward computes: l_hat full FFN applications, plus for "
                      "width-path tokens one masked down projection 2 * d_model * d_hidden on the activations "
                      "shared with loop 1 and the router 2 * d_model * N, plus the loop head 2 * d_model * L_max "
                      "for every token (width-only ablation: one full FFN + router)",
}


def versatile_layer_flops(config: ModelConfig, loop_histogram: list[int] | None, n_tokens: int) -> dict[str, float]:
    """Total FFN FLOPs one VersatileFFN layer spent on ``n_tokens`` tokens in eval mode, both conventions.

    loop_histogram[l-1] = tokens that executed exactly l loops (``FFNStats.loop_counts``; None for the
    width-only ablation). Gated: tokens with l_hat < L_max take the width path; ungated: every token does.
    """
    f = config.ffn_layer_config()
    d, h, d_expert = config.d_model, config.d_hidden, f.expert_dim
    full = swiglu_flops(d, h)
    if f.mode == "width":
        return {"paper": n_tokens * f.top_k * swiglu_flops(d, d_expert),
                "implementation": n_tokens * (full + 2 * d * f.n_experts)}
    if loop_histogram is None or len(loop_histogram) != f.max_loops:
        raise ValueError(f"loop_histogram must list {f.max_loops} counts (tokens per executed loop count); "
                         f"got {loop_histogram!r}")
    depth = full * sum((i + 1) * c for i, c in enumerate(loop_histogram))
    width_tokens = {"gated": sum(loop_histogram[:-1]), "ungated": n_tokens, "depth": 0}[f.mode]
    return {"paper": depth + width_tokens * f.top_k * swiglu_flops(d, d_expert),
            "implementation": depth + width_tokens * (2 * d * h + 2 * d * f.n_experts)
            + n_tokens * 2 * d * f.max_loops}


def executed_ffn_flops(config: ModelConfig, layer_stats: list[dict]) -> dict:
    """FFN FLOPs per token over all layers from the per-layer statistics of an evaluation
    (``VersatileLM.ffn_stats()``: ``tokens`` and ``loop_histogram`` per layer).

    Returns ``paper`` and ``implementation`` (see FLOP_CONVENTIONS), the Table 2 formula
    Base * N_mean + (MoE - Base) * P with N_mean = mean executed loops over layers and tokens and
    P = share of (layer, token) pairs below L_max, and the per-layer numbers. For dense / k-loop / MoE models
    the cost does not depend on the data and every entry is the static count.
    """
    static = static_ffn_flops_per_token(config)
    if static is not None:
        return {"paper": float(static), "implementation": float(static), "formula": None, "mean_loops": None,
                "frac_below_max": None, "per_layer": [static / config.n_layers] * config.n_layers}
    if len(layer_stats) != config.n_layers:
        raise ValueError(f"need statistics for {config.n_layers} layers; got {len(layer_stats)}")
    tokens = [int(s.get("tokens", 0)) for s in layer_stats]
    if min(tokens) == 0:
        raise ValueError("the FFN statistics count no tokens: reset_ffn_stats() before the evaluation forward "
                         "and run at least one token in eval mode")
    per_layer = [versatile_layer_flops(config, s.get("loop_histogram"), n) for s, n in zip(layer_stats, tokens)]
    out = {key: sum(p[key] / n for p, n in zip(per_layer, tokens)) for key in ("paper", "implementation")}
    out["per_layer"] = [{k: v / n for k, v in p.items()} for p, n in zip(per_layer, tokens)]
    for entry, s, n in zip(out["per_layer"], layer_stats, tokens):  # Fig. 4: executed loops per layer
        hist = s.get("loop_histogram")
        if hist is not None:
            entry.update(mean_loops=sum((i + 1) * c for i, c in enumerate(hist)) / n, frac_below_max=sum(hist[:-1]) / n)
    if config.ffn.mode == "width":
        out.update(formula=None, mean_loops=None, frac_below_max=None)
        return out
    hists = [s["loop_histogram"] for s in layer_stats]
    n_all = sum(tokens)
    mean_loops = sum((i + 1) * c for hist in hists for i, c in enumerate(hist)) / n_all
    frac_below = sum(sum(hist[:-1]) for hist in hists) / n_all
    out.update(mean_loops=mean_loops, frac_below_max=frac_below,
               formula=paper_formula_flops(config, mean_loops, frac_below))
    return out


# ------------------------------------------------------------------------ one sublayer against the dense one (benchmarks)


def versatile_sublayer_x_dense(layer: VersatileFFNConfig, loop_histogram: list[int], *, training: bool = False,
                               grouped_width: bool = True, exact_depth_grad: bool = False) -> float:
    """Matmul FLOPs per token of one VersatileFFN sublayer over the dense sublayer's (the benchmark's FLOP ideal).

    In loops (one loop = one dense sublayer, ``swiglu_flops``): eval = mean executed loops + share of width-path
    tokens x the width path's cost. The width path reuses loop 1's activations, so it costs only its down
    projection: K d_expert of its d_hidden columns on the grouped route (``grouped_width``; K/N at the paper's
    default), the whole down projection (the mask identity) otherwise. Training (backward = 2x forward per matmul,
    the whole ratio over dense's 3x): every loop and the width path run forward on every token; backward runs
    every loop ("full") or loop l only for the tokens with l_hat >= l (``exact_depth_grad``). Router and loop
    head are not counted (< 0.1% at the paper's shape). loop_histogram[l-1]: tokens with l_hat = l.
    """
    L = layer.max_loops
    if layer.mode == "width":
        raise ValueError("the width-only ablation runs no loops: it costs one dense sublayer (plus its router)")
    if len(loop_histogram) != L or sum(loop_histogram) <= 0:
        raise ValueError(f"loop_histogram must list {L} token counts (not all zero); got {loop_histogram!r}")
    n = sum(loop_histogram)
    down = 2 * layer.d_model * layer.d_hidden / swiglu_flops(layer.d_model, layer.d_hidden)
    width = 0.0 if layer.mode == "depth" else down * (
        layer.top_k * layer.expert_dim / layer.d_hidden if grouped_width else 1.0)
    if not training:
        width_share = sum(loop_histogram[:-1]) / n if layer.mode == "gated" else 1.0  # gated: lambda = 0 at L_max
        return sum((i + 1) * c for i, c in enumerate(loop_histogram)) / n + width_share * width
    reach = sum(sum(loop_histogram[k:]) / n for k in range(L)) if exact_depth_grad else L  # loops with a backward
    return (L + width + 2 * (reach + width)) / 3  # every token's width path (lambda's gradient needs it)
