"""Sections ``infer_eager`` / ``infer_compiled``: the eval forward per loop mix against dense and the FLOP ideal;
ours (compacted) against the authors' batch-max inference."""
from __future__ import annotations

import torch

from ..ffn.reference import authors_eval_forward
from .common import LOOP_MIXES, Bench, forced_loops, make_layers, mix_loops
from .timing import time_ms


def section_infer(b: Bench, compiled: bool) -> dict:
    s, dev = b.shape, b.device
    layers = make_layers(b)
    vffn, dense = layers["vffn"].eval(), layers["dense"].eval()
    ours = torch.compile(vffn, dynamic=True) if compiled else vffn  # bucket sizes vary: symbolic sizes
    dense_fn = torch.compile(dense) if compiled else dense
    res: dict = {}
    for n in s.tokens:
        x = torch.randn(1, n, s.d_model, device=dev, dtype=b.dtype)
        per: dict = {}
        with torch.no_grad():
            dense_ms = time_ms(lambda: dense_fn(x), dev)
            for name, probs in LOOP_MIXES.items():
                if b.left() < 15:
                    per[name] = "skipped: time budget"
                    continue
                loops = mix_loops(probs, n, dev)
                forced_loops(vffn, loops)
                lf = loops.float()
                ideal = float(lf.mean() + (loops < s.max_loops).float().mean() * s.top_k / s.n_experts)
                ours_ms = time_ms(lambda: ours(x), dev)
                row = {"ideal_flop_x_dense": ideal, "ours_ms": ours_ms, "ours_x_dense": ours_ms / dense_ms,
                       "ours_over_ideal": ours_ms / dense_ms / ideal}
                if not compiled:
                    a_ms = time_ms(lambda: authors_eval_forward(vffn, x), dev)
                    row.update(authors_ms=a_ms, authors_x_dense=a_ms / dense_ms, authors_over_ideal=a_ms / dense_ms / ideal)
                per[name] = row
        if hasattr(vffn, "_predicted_loops") and "_predicted_loops" in vffn.__dict__:
            del vffn._predicted_loops
        res[str(n)] = {"dense_ms": dense_ms, "mixes": per}
    return res
