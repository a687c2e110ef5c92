"""Section ``profile``: where the time goes at the small size (top kernels of one call, the cost of a host sync)."""
from __future__ import annotations

import torch

from .common import Bench, forced_loops, make_layers
from .timing import sync, time_ms


def section_profile(b: Bench) -> dict:
    """Where the time goes at the small size: top kernels / ops of one call, and the cost of a host sync."""
    s, dev = b.shape, b.device
    n = s.tokens[-1]
    layers = make_layers(b)
    vffn = layers["vffn"]
    x = torch.randn(1, n, s.d_model, device=dev, dtype=b.dtype, requires_grad=True)
    gy = torch.randn_like(x)

    def train(mode):
        def f():
            vffn.depth_grad = mode
            vffn(x).backward(gy)
        return f

    def infer_all1():
        vffn.eval()
        forced_loops(vffn, torch.ones(n, dtype=torch.long, device=dev))
        with torch.no_grad():
            vffn(x)
        del vffn._predicted_loops
        vffn.train()

    res: dict = {}
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    sort_key = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
    for name, fn in (("train_full", train("full")), ("train_exact", train("exact")), ("infer_all1", infer_all1)):
        for _ in range(3):
            fn()
        sync(dev)
        with torch.profiler.profile(activities=acts) as prof:
            fn()
            sync(dev)
        res[name] = prof.key_averages().table(sort_by=sort_key, row_limit=18, max_name_column_width=60)
    small = torch.randn(1024, device=dev)

    def no_sync():
        for _ in range(100):
            small.add_(1e-6)

    def with_sync():
        for _ in range(100):
            small.add_(1e-6).sum().item()
    res["100_tiny_ops_ms"] = time_ms(no_sync, dev, reps=5, min_ms=0)
    res["100_tiny_ops_with_item_ms"] = time_ms(with_sync, dev, reps=5, min_ms=0)
    return res
