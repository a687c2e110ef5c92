"""Sections ``train_eager`` / ``train_compiled``: one FFN sublayer, fwd+bwd, dense / 4-Loop / VersatileFFN ("full",
"exact") / the authors' approach (``ffn/reference.py``) / MoE (dense einsum, grouped GEMM), x dense."""
from __future__ import annotations

import torch

from ..ffn.reference import authors_train_forward
from .common import Bench, Shape, make_layers
from .timing import time_ms


def train_variants(layers: dict, compiled: bool) -> dict:
    vffn = layers["vffn"]

    def with_mode(mode):
        def f(x):
            vffn.depth_grad = mode
            return vffn(x)
        return f

    def moe_impl(impl):
        def f(x):
            layers["moe"].expert_impl = impl
            return layers["moe"](x)
        return f

    v = {"dense": layers["dense"], "loop4": layers["loop4"], "vffn_full": with_mode("full"),
         "vffn_exact": with_mode("exact"), "moe_grouped": moe_impl("grouped")}
    if not compiled:  # data-dependent Python loops: the authors' code and the dense-einsum MoE run eager only
        v["authors"] = lambda x: authors_train_forward(vffn, x)
        v["moe_dense"] = moe_impl("dense")
    return v


def compile_fn(name: str, fn):
    if name in ("dense", "loop4", "vffn_full"):  # sync-free paths must compile to one graph
        return torch.compile(fn, fullgraph=True)
    # the sorted path breaks the graph at its one host sync; bucket sizes change every step, so the
    # pieces are compiled with symbolic sizes once instead of once per bucket size
    return torch.compile(fn, dynamic=True)


def section_train(b: Bench, compiled: bool) -> dict:
    s, dev = b.shape, b.device
    layers = make_layers(b)
    res: dict = {}
    for n in s.tokens:
        x = torch.randn(1, n, s.d_model, device=dev, dtype=b.dtype, requires_grad=True)  # as inside a model
        gy = torch.randn_like(x)
        ms: dict = {}
        hist = None
        for name, fn in train_variants(layers, compiled).items():
            if b.left() < 20:
                ms[name] = "skipped: time budget"
                continue
            if compiled:
                fn = compile_fn(name, fn)
            params = [p for m in layers.values() for p in m.parameters()]

            def step(fn=fn):
                for p in params:
                    p.grad = None
                x.grad = None
                fn(x).backward(gy)

            layers["vffn"].reset_stats()
            try:
                ms[name] = time_ms(step, dev, warmup=3 if not compiled else 4)
            except Exception as exc:  # a variant that fails is reported, the others still run
                ms[name] = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
            if name == "vffn_exact":
                hist = layers["vffn"].stats.summary().get("loop_histogram")
        dense = ms["dense"]
        ratios = {k: v / dense for k, v in ms.items() if isinstance(v, float)}
        res[str(n)] = {"ms": ms, "x_dense": ratios, "vffn_loop_histogram": hist,
                       "flop_x_dense": train_flop_ratios(s, hist)}
    return res


def train_flop_ratios(s: Shape, hist: list[int] | None) -> dict:
    """Executed matmul FLOPs (fwd + bwd) as a multiple of the dense sublayer's, input gradient included."""
    L = s.max_loops
    full = (L * 3 + 1) / 3  # L loops + the width path's down projection, all with backward
    out = {"loop4": float(L), "vffn_full": full}
    if hist:
        tot = sum(hist)
        at_least = [sum(hist[k:]) / tot for k in range(L)]  # share of tokens with l_hat >= k + 1
        bwd_loops = sum(at_least)                          # loops that run with a backward graph
        out["vffn_exact"] = ((L * 3 + 1) + 2 * (bwd_loops * 3 + 1)) / 9
    return out
