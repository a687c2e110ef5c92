"""Timing and error helpers of the benchmark: synchronisation, median wall / CUDA-event time, relative error,
the device's peak matmul throughput (for MFU)."""
from __future__ import annotations

import statistics
import time

import torch

PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}  # dense bf16, SXM


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device: torch.device, warmup: int = 5, reps: int = 20, min_ms: float = 200.0) -> float:
    """Median over repetitions of one call (CUDA events on the GPU), after warm-up calls; at least
    ``reps`` timed calls, more until ``min_ms`` of measured time has accumulated."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    while len(times) < reps or (sum(times) < min_ms and len(times) < 2000):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
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
