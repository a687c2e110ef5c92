"""Executed FFN FLOPs from the layers' statistics, and the inference loop-cap sweep (compute vs quality).

FLOPs follow the paper's Table 2 convention (versatileffn/flops.py): 2 FLOPs per multiply-accumulate, a loop
costs one SwiGLU FFN, a token that runs the width path additionally costs its top-K virtual experts. Per layer
and token:  base * mean executed loops + top_k * swiglu(d_model, d_expert) * (share of tokens on the width path),
both counted exactly from ``layer.stats`` (loop histogram; expert assignments / top_k). Summed over layers this
equals the paper's ``Base * N_mean + (MoE - Base) * P`` (``flops.paper_formula_flops``) for the gated model.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from ..config import ModelConfig
from ..flops import base_ffn_flops_per_token, paper_formula_flops, swiglu_flops
from .collect import LayerTrace, fill_from_stats, find_versatile_layers, layer_trace, reset_stats, set_loop_cap


def layer_ffn_flops(trace: LayerTrace) -> float:
    """Executed FFN FLOPs per token of one layer from its statistics (paper Table 2 convention)."""
    n = trace.summary.get("tokens", 0)
    if not n:
        return 0.0
    loop_cost = swiglu_flops(trace.d_model, trace.d_hidden)
    width_cost = trace.top_k * swiglu_flops(trace.d_model, trace.d_expert)
    return loop_cost * trace.summary.get("mean_loops", 0.0) + width_cost * trace.width_tokens / n


def ffn_flops_summary(traces: list[LayerTrace], config=None) -> dict:
    """Executed FFN FLOPs per token over all VersatileFFN layers, the dense model's FFN FLOPs for comparison,
    and (for our LM's ModelConfig) the paper's closed formula from the pooled loop statistics."""
    executed = sum(layer_ffn_flops(t) for t in traces)
    dense = sum(swiglu_flops(t.d_model, t.d_hidden) for t in traces)
    out = {"ffn_flops_per_token": executed, "dense_ffn_flops_per_token": dense,
           "ffn_flops_over_dense": executed / dense if dense else 0.0}
    hists = [t.summary.get("loop_histogram") for t in traces]
    if isinstance(config, ModelConfig) and all(h is not None for h in hists) and len(traces) == config.n_layers:
        total = np.sum(hists, axis=0)
        n = float(total.sum())
        mean_loops = float((np.arange(1, len(total) + 1) * total).sum() / n) if n else 0.0
        frac_below = float(total[:-1].sum() / n) if n else 0.0
        out["mean_loops_all_layers"] = mean_loops
        out["frac_below_max_loops"] = frac_below
        out["paper_formula_flops"] = paper_formula_flops(config, mean_loops, frac_below)
        out["dense_ffn_flops_per_token"] = base_ffn_flops_per_token(config)
    return out


def read_stats(model: torch.nn.Module) -> list[LayerTrace]:
    """Per-layer statistics accumulated since the last reset, as LayerTraces without per-token data."""
    traces = []
    for i, (name, layer) in enumerate(find_versatile_layers(model)):
        t = layer_trace(i, name, layer)
        fill_from_stats(t, layer)
        traces.append(t)
    return traces


def default_caps(model: torch.nn.Module) -> list[int | None]:
    max_loops = max(layer.max_loops for _, layer in find_versatile_layers(model))
    return [*range(1, max_loops + 1), None]


def loop_cap_sweep(model: torch.nn.Module, tokens: np.ndarray, seq_len: int, caps: list[int | None] | None = None,
                   tokenizer=None, tasks: list[str] | None = None, task_limit: int | None = None,
                   batch_size: int = 8, max_tokens: int | None = None, n_bytes: int | None = None,
                   device=None, progress: bool = False, validation_fn=None, tasks_fn=None) -> list[dict]:
    """For each inference loop cap (default 1..L_max and None = uncapped): validation loss on ``tokens``, the
    executed FFN FLOPs per token measured on that validation pass, and, with ``tasks``, benchmark accuracy (and
    the FLOPs measured on the benchmark pass). The model's own cap is restored afterwards.

    ``validation_fn`` / ``tasks_fn`` default to ``versatileffn.eval.validation_metrics`` / ``evaluate_tasks``.
    """
    layers = find_versatile_layers(model)
    if validation_fn is None or (tasks and tasks_fn is None):
        try:
            from ..eval import evaluate_tasks, validation_metrics
        except ImportError as exc:
            raise ValueError("the loop-cap sweep needs versatileffn.eval (validation_metrics, evaluate_tasks), "
                             f"which is not available: {exc}; skip the sweep with --no-sweep") from exc
        validation_fn = validation_fn or validation_metrics
        tasks_fn = tasks_fn or evaluate_tasks
    if tasks and tokenizer is None:
        raise ValueError("benchmark tasks need a tokenizer")
    caps = default_caps(model) if caps is None else list(caps)
    config = getattr(model, "config", None)
    saved_caps = [layer.inference_loop_cap for _, layer in layers]
    rows = []
    try:
        for cap in caps:
            set_loop_cap(model, layers, cap)
            t0 = time.perf_counter()
            reset_stats(model, layers)
            val = validation_fn(model, tokens, seq_len, batch_size=batch_size, device=device,
                                max_tokens=max_tokens, n_bytes=n_bytes)
            row = {"cap": cap, "val_loss": float(val["loss"]), "val_ppl": float(val["ppl"]),
                   "val_bpb": None if val.get("bpb") is None else float(val["bpb"]),
                   "val_tokens": int(val["tokens"])}
            stats = read_stats(model)
            row.update(ffn_flops_summary(stats, config))
            row["mean_loops_per_layer"] = [t.summary.get("mean_loops") for t in stats]
            if tasks:
                reset_stats(model, layers)
                res = tasks_fn(model, tokenizer, tasks=tasks, limit=task_limit, batch_size=batch_size,
                               device=device, progress=progress)
                row["accuracy"] = float(res["average"])
                row["tasks"] = {name: float(r["primary"]) for name, r in res["tasks"].items()}
                row["task_ffn_flops_per_token"] = ffn_flops_summary(read_stats(model), config)["ffn_flops_per_token"]
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            if progress:
                acc = f", acc {row['accuracy']:.4f}" if "accuracy" in row else ""
                print(f"loop cap {cap}: val loss {row['val_loss']:.4f}, FFN FLOPs/token "
                      f"{row['ffn_flops_per_token'] / 1e6:.3f}M{acc}", flush=True)
    finally:
        for (_, layer), cap in zip(layers, saved_caps):
            layer.inference_loop_cap = cap
    return rows
