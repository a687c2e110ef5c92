"""Timing and error helpers of the benchmark: synchronisation, the median time of a call, CUDA-graph capture,
relative error, the device's peak matmul throughput (for MFU)."""
from __future__ import annotations

import statistics
import time

import torch

from ..generation import capture as graphed  # noqa: F401  (fn captured in one CUDA graph -> its replay)

PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}  # dense bf16, SXM


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device: torch.device, warmup: int = 5, reps: int = 20, min_ms: float = 200.0) -> float:
    """Median time of one call after warm-up. On CUDA: ``triton.testing.do_bench`` (CUDA events, L2 flushed
    between calls: the yardsticks' clock) over at least ``min_ms`` (100 ms at the least); on the CPU the wall
    clock over at least ``reps`` calls and ``min_ms``."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=max(100, int(min_ms)), return_mode="median"))
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < reps or (sum(times) < min_ms and len(times) < 2000):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def peak_tflops(device: torch.device) -> float:
    if device.type != "cuda":
        return float("nan")
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), float("nan"))
