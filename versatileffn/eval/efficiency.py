"""Parameter and FFN-FLOP accounting of an evaluated model (the paper's Table 2)."""
from __future__ import annotations

from ..ffn.control import FFNControl
from ..flops import (FLOP_CONVENTIONS, base_ffn_flops_per_token, executed_ffn_flops, moe_ffn_flops_per_token,
                     static_ffn_flops_per_token, swiglu_flops)


def parameter_counts(model) -> dict:
    """total, FFN, and added over the dense model of the same shape (None where unknown)."""
    total = sum(p.numel() for p in model.parameters())
    if isinstance(model, FFNControl):  # our LM or a converted HF model
        added = model.params_added_over_dense()
        return {"total": total, "ffn": model.ffn_params(), "dense_base": total - added, "added_over_dense": added}
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
    if not isinstance(model, FFNControl):  # a plain Hugging Face model
        cfg = getattr(model, "config", None)
        d, h, n = (getattr(cfg, k, None) for k in ("hidden_size", "intermediate_size", "num_hidden_layers"))
        base = n * swiglu_flops(d, h) if all(isinstance(v, int) for v in (d, h, n)) else None
        return {"convention": "dense SwiGLU: n_layers * 6 * d_model * d_hidden (from the HF config)",
                "base": base, "moe": None, "all_tasks": {"paper": base, "implementation": base, "formula": None},
                "per_task": {}}
    cfg = model.ffn_model_config()  # our LM's config, or the equivalent one of a converted HF model
    out = {"convention": FLOP_CONVENTIONS, "base": base_ffn_flops_per_token(cfg), "per_task": {}}
    has_experts = hasattr(cfg.ffn, "top_k")  # MoE / VersatileFFN: the MoE baseline of the same experts
    out["moe"] = moe_ffn_flops_per_token(cfg) if has_experts else None
    static = static_ffn_flops_per_token(cfg) is not None  # the cost does not depend on the data
    stats_by_task = stats_by_task or {}
    for task, stats in stats_by_task.items():
        if any(s.get("tokens") for s in stats) or static:
            out["per_task"][task] = executed_ffn_flops(cfg, stats)
    if static:
        out["all_tasks"] = executed_ffn_flops(cfg, [])
    elif stats_by_task:
        out["all_tasks"] = executed_ffn_flops(cfg, merge_layer_stats(stats_by_task))
    else:
        out["all_tasks"] = None
    return out
