"""Parameter and FFN-FLOP accounting of an evaluated model (the paper's Table 2)."""
from __future__ import annotations

import copy

import torch

from ..ffn import DenseFFNConfig
from ..flops import (FLOP_CONVENTIONS, base_ffn_flops_per_token, executed_ffn_flops, moe_ffn_flops_per_token,
                     swiglu_flops)
from ..model import VersatileLM


def parameter_counts(model) -> dict:
    """total, FFN, and added over the dense model of the same shape (None where unknown)."""
    total = sum(p.numel() for p in model.parameters())
    if isinstance(model, VersatileLM):
        dense_cfg = copy.deepcopy(model.config)
        dense_cfg.ffn = DenseFFNConfig()
        with torch.device("meta"):  # count without allocating
            dense = VersatileLM(dense_cfg).num_params()
        return {"total": total, "ffn": model.ffn_params(), "dense_base": dense, "added_over_dense": total - dense}
    if hasattr(model, "versatile_layers"):  # a converted HF model: only router + loop head are new
        layers = model.versatile_layers()
        ffn = sum(p.numel() for m in layers for p in m.parameters())
        added = sum(head.weight.numel() for m in layers for head in (m.router, m.loop_predictor) if head is not None)
        return {"total": total, "ffn": ffn, "dense_base": total - added, "added_over_dense": added}
    ffn = sum(p.numel() for n, p in model.named_parameters() if ".mlp." in n)
    return {"total": total, "ffn": ffn or None, "dense_base": None, "added_over_dense": None}


def merge_layer_stats(stats_by_task: dict[str, list[dict]]) -> list[dict]:
    """Sum per-layer token counts and loop histograms over tasks (for FLOPs over all evaluated tokens)."""
    merged: list[dict] = []
    for stats in stats_by_task.values():
        for i, s in enumerate(stats):
            if i == len(merged):
                merged.append({"tokens": 0, **({"loop_histogram": [0] * len(s["loop_histogram"])}
                                               if "loop_histogram" in s else {})})
            merged[i]["tokens"] += s.get("tokens", 0)
            if "loop_histogram" in s:
                merged[i]["loop_histogram"] = [a + b for a, b in zip(merged[i]["loop_histogram"], s["loop_histogram"])]
    return merged


def flop_accounting(model, stats_by_task: dict[str, list[dict]] | None) -> dict:
    """FFN FLOPs per token: over all evaluated tokens and per task, both conventions, plus the paper formula."""
    if not isinstance(model, VersatileLM) and not hasattr(model, "ffn_model_config"):
        cfg = getattr(model, "config", None)
        d, h, n = (getattr(cfg, k, None) for k in ("hidden_size", "intermediate_size", "num_hidden_layers"))
        base = n * swiglu_flops(d, h) if all(isinstance(v, int) for v in (d, h, n)) else None
        return {"convention": "dense SwiGLU: n_layers * 6 * d_model * d_hidden (from the HF config)",
                "base": base, "moe": None, "all_tasks": {"paper": base, "implementation": base, "formula": None},
                "per_task": {}}
    # our LM, or a converted HF model described by the equivalent ModelConfig (same FFN shapes)
    cfg = model.config if isinstance(model, VersatileLM) else model.ffn_model_config()
    out = {"convention": FLOP_CONVENTIONS, "base": base_ffn_flops_per_token(cfg), "per_task": {}}
    out["moe"] = moe_ffn_flops_per_token(cfg) if cfg.ffn.kind in ("moe", "versatile") else None
    stats_by_task = stats_by_task or {}
    for task, stats in stats_by_task.items():
        if any(s.get("tokens") for s in stats) or cfg.ffn.kind != "versatile":
            out["per_task"][task] = executed_ffn_flops(cfg, stats)
    if cfg.ffn.kind != "versatile":
        out["all_tasks"] = executed_ffn_flops(cfg, [])
    elif stats_by_task:
        out["all_tasks"] = executed_ffn_flops(cfg, merge_layer_stats(stats_by_task))
    else:
        out["all_tasks"] = None
    return out
