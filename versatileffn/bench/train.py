"""Section ``train``: exact-gradient training of one FFN sublayer, fwd+bwd at 4k and 16k tokens, eager: dense,
4-Loop and VersatileFFN with ``depth_grad`` "auto" (what it picks is recorded), "full" (Algorithm 1) and "exact"
(the engine: a backward only up to each token's depth) on the Gumbel sample of a zero loop head (a uniform
mix), and "exact" on each forced loop mix; x dense and x 4-Loop, beside the FLOP ratios of ``flops.py``."""
from __future__ import annotations

import torch

from ..ffn import engine
from ..flops import versatile_sublayer_x_dense
from .common import LOOP_MIXES, Bench, make_layers, mix_loops


def section_train(b: Bench) -> dict:
    s, dev = b.shape, b.device
    layers = make_layers(b)
    dense, loop4, vffn = layers["dense"], layers["loop4"], layers["vffn"]
    params = [p for m in (dense, loop4, vffn) for p in m.parameters()]
    res: dict = {}
    for n in s.tokens:
        x = torch.randn(1, n, s.d_model, device=dev, dtype=b.dtype, requires_grad=True)  # as inside a model
        gy = torch.randn_like(x)
        forced = mix_loops(LOOP_MIXES["uniform"], n, dev).view(1, n)

        def step(fn):
            def run():
                for p in params:
                    p.grad = None
                x.grad = None
                fn().backward(gy)
            return run

        def vffn_with(depth_grad: str, loops=None):
            def run():
                vffn.runtime.depth_grad = depth_grad
                return vffn(x, loops=loops)
            return run

        variants = {"dense": lambda: dense(x), "loop4": lambda: loop4(x), "vffn_auto": vffn_with("auto"),
                    "vffn_full": vffn_with("full"), "vffn_exact": vffn_with("exact")}
        variants.update({f"vffn_exact_{m}": vffn_with("exact", forced) for m in LOOP_MIXES})
        ms: dict = {}
        hist = picks = None
        for name, fn in variants.items():
            if b.left() < 10:
                ms[name] = "skipped: time budget"
                continue
            if name.startswith("vffn_exact_"):
                forced.copy_(mix_loops(LOOP_MIXES[name.removeprefix("vffn_exact_")], n, dev).view(1, n))
            vffn.reset_stats()
            ms[name] = b.time_ms(step(fn), warmup=3)
            if name == "vffn_auto":
                picks = vffn.last_depth_grad
                hist = vffn.stats.summary()["loop_histogram"]
        timed = {k: v for k, v in ms.items() if isinstance(v, float)}
        flops = {}
        if hist is not None:
            grouped = engine.uses_grouped_width(vffn, x.detach().reshape(n, -1))
            flops = {"loop4": float(s.max_loops),
                     "vffn_full": versatile_sublayer_x_dense(vffn.config, hist, training=True, grouped_width=False),
                     "vffn_exact": versatile_sublayer_x_dense(vffn.config, hist, training=True, grouped_width=grouped,
                                                              exact_depth_grad=True)}
        if "dense" not in timed:
            res[str(n)] = {"ms": ms}
            continue
        res[str(n)] = {"ms": ms, "x_dense": {k: v / timed["dense"] for k, v in timed.items()},
                       "x_loop4": {k: v / timed["loop4"] for k, v in timed.items()} if "loop4" in timed else {},
                       "auto_picks": picks, "sampled_loop_histogram": hist, "flop_x_dense": flops}
    return res


def summary(sec: dict) -> list[str]:
    lines = []
    for n, row in sec.items():
        if "x_dense" not in row:
            continue
        r = " ".join(f"{k} {v:.2f}" for k, v in row["x_dense"].items() if k != "dense")
        lines.append(f"train {n} tok eager (x dense; auto -> {row['auto_picks']}): {r}")
    return lines
