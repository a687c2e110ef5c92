"""Run the benchmark sections into one JSON file; a section that would overrun the time budget is skipped and says so.

A section is one module of this package plus one line in ``SECTION_RUNNERS`` (name -> function of the run's
``Bench`` returning the section's JSON object).
"""
from __future__ import annotations

import platform
import time
from functools import partial
from pathlib import Path
from typing import Callable

import torch

from . import check, decode, e2e, infer, profile, train
from .common import QUICK, Bench, Shape
from .report import write_json
from .targets import TARGETS, targets
from .timing import peak_tflops

SECTION_RUNNERS: dict[str, Callable[[Bench], dict]] = {
    "check": check.section_check,
    "train_eager": partial(train.section_train, compiled=False),
    "infer_eager": partial(infer.section_infer, compiled=False),
    "decode": decode.section_decode,
    "e2e_eager": partial(e2e.section_e2e, compiled=False),
    "train_compiled": partial(train.section_train, compiled=True),
    "e2e_compiled": partial(e2e.section_e2e, compiled=True),
    "infer_compiled": partial(infer.section_infer, compiled=True),
    "profile": profile.section_profile,
}
SECTIONS = tuple(SECTION_RUNNERS)

METHOD = """FLOP counting (2 FLOPs per multiply-accumulate): one SwiGLU loop = 6 d h per token forward; backward =
2x forward for every matmul that runs with autograd. MFU = executed matmul FLOPs per step / (step time
x peak), peak = 989.4 TFLOP/s (H100/H200 SXM dense bf16); attention counted causal (half of 4 T d)."""


def run(out_path: str | Path, quick: bool = False, budget_s: float = 540.0, sections: tuple[str, ...] = SECTIONS,
        device: str | None = None, compile: bool = True) -> dict:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    shape = QUICK if quick else Shape()
    b = Bench(shape, dev, dtype, budget_s, compile)
    out_path = Path(out_path)
    out = b.out
    out["env"] = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
                  "torch": torch.__version__, "dtype": str(dtype), "python": platform.python_version(),
                  "shape": {k: getattr(shape, k) for k in shape.__dataclass_fields__}, "peak_tflops": peak_tflops(dev),
                  "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out["method"] = METHOD
    out["targets_spec"] = TARGETS
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    for name in sections:
        if name not in SECTION_RUNNERS:
            raise ValueError(f"unknown section {name!r}; choose from {SECTIONS}")
        if name.endswith("compiled") and not compile:
            out[name] = "skipped: --no-compile"
            continue
        if b.left() < 20:
            out[name] = "skipped: time budget"
            continue
        t = time.time()
        try:
            out[name] = SECTION_RUNNERS[name](b)
        except Exception as exc:  # keep the other sections' numbers
            out[name] = f"failed: {type(exc).__name__}: {str(exc)[:400]}"
        print(f"[bench] {name}: {time.time() - t:.1f}s", flush=True)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        out["targets"] = targets(out, shape)
        write_json(out_path, out)
    return out
