"""Section ``decode``: one new token per sequence with a KV cache, the whole LM, dense vs VersatileFFN."""
from __future__ import annotations

import torch

from ..model import KVCache
from .common import Bench, build_lm
from .timing import time_ms

DECODE_VARIANTS = {  # name: (ffn kind, VersatileFFN.eval_impl, compile the FFN sublayers)
    "dense": ("dense", None, False),
    "versatile_compact": ("versatile", "compact", False),
    "versatile_all_loops": ("versatile", "all_loops", False),
    "dense_ffn_compiled": ("dense", None, True),
    "versatile_ffn_compiled": ("versatile", "auto", True),  # auto = all_loops (sync-free) when compiled
}


def section_decode(b: Bench) -> dict:
    s, dev = b.shape, b.device
    res: dict = {}
    for name, (ffn, impl, compiled) in DECODE_VARIANTS.items():
        if compiled and not b.compile:
            continue
        model = build_lm(b, ffn).to(b.dtype).eval()
        for m in model.versatile_layers():
            m.eval_impl = impl
        if compiled:
            for m in model.ffn_layers():
                m.compile()
        vocab = model.config.vocab_size
        per: dict = {}
        for batch in s.decode_batches:
            if b.left() < (60 if compiled else 10):
                per[str(batch)] = "skipped: time budget"
                continue
            cache = KVCache(model.config, batch, s.decode_prompt + 1, dev, b.dtype)
            ids = torch.randint(0, vocab, (batch, s.decode_prompt), device=dev)
            nxt = torch.randint(0, vocab, (batch, 1), device=dev)
            with torch.no_grad():
                model(ids, cache=cache)

                def step():
                    cache.pos = s.decode_prompt  # the same position every time: one decode step
                    model(nxt, cache=cache)

                step()
                model.reset_ffn_stats()
                ms = time_ms(step, dev, warmup=5, reps=30, min_ms=100)
            row = {"step_ms": ms, "tokens_per_s": batch / ms * 1e3}
            if ffn == "versatile":
                st = model.ffn_stats()
                row["mean_loops"] = sum(x["mean_loops"] for x in st) / len(st)
            per[str(batch)] = row
        res[name] = per
        del model
    for name, base in (("versatile_compact", "dense"), ("versatile_all_loops", "dense"),
                       ("versatile_ffn_compiled", "dense_ffn_compiled")):
        if name in res and base in res:
            res[f"{name}_x_{base}"] = {k: res[name][k]["step_ms"] / res[base][k]["step_ms"] for k in res[base]
                                       if isinstance(res[base][k], dict) and isinstance(res[name].get(k), dict)}
    best = {}
    for key in ("versatile_compact_x_dense", "versatile_all_loops_x_dense"):
        for k, v in res.get(key, {}).items():
            best[k] = min(best.get(k, v), v)
    res["versatile_x_dense"] = best  # eager, the faster eval implementation per batch size
    return res
