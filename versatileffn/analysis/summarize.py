"""Turn the collected traces into the numbers behind each picture (plain Python, JSON-ready)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from .collect import LayerTrace


def _mean(a: np.ndarray | None) -> float | None:
    return None if a is None or a.size == 0 else float(np.mean(a))


def layer_table(traces: list[LayerTrace], per_layer_flops: list[dict] | None = None) -> list[dict]:
    """One row per VersatileFFN layer: the layer's own statistics (loop histogram, mean loops, mean lambda,
    expert load) plus per-token distributions (lambda histogram, branch cosine similarity) and, given
    ``per_layer_flops`` (``ffn_flops_summary(...)["per_layer"]``), the layer's FFN FLOPs per token."""
    rows = []
    for i, t in enumerate(traces):
        s = t.summary
        n = s.get("tokens", 0)
        row = {"layer": t.index, "name": t.name, "mode": t.mode, "tokens": n, "max_loops": t.max_loops,
               "n_experts": t.n_experts, "top_k": t.top_k}
        if "loop_histogram" in s:
            hist = s["loop_histogram"]
            row.update(loop_histogram=hist, loop_fraction=[c / n if n else 0.0 for c in hist],
                       mean_loops=s["mean_loops"], frac_below_max_loops=s["frac_below_max_loops"])
        if t.lam is not None and t.lam.size:
            values, counts = np.unique(np.round(t.lam, 6), return_counts=True)
            row["mean_lambda"] = s.get("mean_lambda", float(t.lam.mean()))
            row["lambda_histogram"] = {f"{v:g}": int(c) for v, c in zip(values, counts)}
        if "expert_load" in s:
            row.update(expert_load=s["expert_load"], expert_imbalance=s["expert_imbalance"])
        row["width_fraction"] = t.width_tokens / n if n else 0.0
        row["mean_cos_width_depth"] = _mean(t.cos_out)
        row["mean_cos_width_depth_update"] = _mean(t.cos_update)
        if per_layer_flops is not None:
            row["ffn_flops_per_token"] = per_layer_flops[i]["paper"]
            row["ffn_flops_implementation"] = per_layer_flops[i]["implementation"]
        rows.append(row)
    return rows


def by_position(traces: list[LayerTrace], key: str) -> list[list[float]] | None:
    """Mean over sequences of a per-token quantity at each position: [n_layers][seq_len] (None if absent)."""
    arrays = [getattr(t, key) for t in traces]
    if any(a is None for a in arrays):
        return None
    return [a.astype(np.float64).mean(axis=0).tolist() for a in arrays]


def sample_cos_matrix(trace: LayerTrace, n_positions: int) -> list[list[float]] | None:
    """Paper-style Fig. 5 heatmap for one sample: C[i, j] = cos(Y_width at position i, Y_depth at position j)
    over the first ``n_positions`` positions. The diagonal compares the two branches on the same token; the
    off-diagonal shows whether the branches live in one shared feature space."""
    if trace.sample_width is None or trace.sample_depth is None:
        return None
    w = trace.sample_width[:n_positions].astype(np.float64)
    d = trace.sample_depth[:n_positions].astype(np.float64)
    w /= np.maximum(np.linalg.norm(w, axis=-1, keepdims=True), 1e-12)
    d /= np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-12)
    return (w @ d.T).tolist()


def decode_token(tokenizer, token_id: int) -> str:
    return tokenizer.decode([int(token_id)]).strip()


def token_lambda_ranking(trace: LayerTrace, rows: np.ndarray, tokenizer, top: int = 50, min_count: int = 2,
                         skip_ids: set[int] | None = None) -> dict:
    """Fig. 6's data at one layer: per distinct token text, its count and mean gate lambda (and mean loops).

    Tokens are grouped by their decoded, stripped text (so " cut" and "cut" merge); tokens without a letter or
    digit and ids in ``skip_ids`` (EOS) are left out. ``low`` = the ``top`` token texts with the lowest mean
    lambda (most loops), ``high`` = the highest (each at most half of the ranked texts); ties are broken by
    frequency. Only texts seen at least
    ``min_count`` times are ranked.
    """
    if trace.lam is None or trace.loops is None:
        return {"layer": trace.index, "low": [], "high": [], "ranked": 0}
    skip_ids = skip_ids or set()
    ids = rows.reshape(-1)
    lam = trace.lam.reshape(-1)
    loops = trace.loops.reshape(-1)
    per_id: dict[int, list[int]] = defaultdict(list)
    for pos, tid in enumerate(ids.tolist()):
        if tid not in skip_ids:
            per_id[tid].append(pos)
    groups: dict[str, list[int]] = defaultdict(list)
    for tid, positions in per_id.items():
        text = decode_token(tokenizer, tid)
        if any(ch.isalnum() for ch in text):
            groups[text].extend(positions)
    entries = []
    for text, positions in groups.items():
        if len(positions) >= min_count:
            idx = np.asarray(positions)
            entries.append({"token": text, "count": len(positions), "mean_lambda": float(lam[idx].mean()),
                            "mean_loops": float(loops[idx].mean())})
    k = min(top, (len(entries) + 1) // 2)  # each side at most half, so the two lists differ
    low = sorted(entries, key=lambda e: (e["mean_lambda"], -e["count"], e["token"]))[:k]
    high = sorted(entries, key=lambda e: (-e["mean_lambda"], -e["count"], e["token"]))[:k]
    # when every ranked text has the same mean lambda (a collapsed loop head) the split says nothing
    distinct = len({e["mean_lambda"] for e in entries}) > 1
    return {"layer": trace.index, "min_count": min_count, "ranked": len(entries), "distinct_lambda": distinct,
            "low": low, "high": high}
