"""Run the benchmark sections into one JSON file; a section that would overrun the time budget is skipped and
says so, and one that fails records its error (the others still run). The sections: ``registry.REGISTRY``."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from .common import QUICK, Bench, Inputs, Shape
from .registry import REGISTRY, SECTIONS
from .report import write_json
from .targets import TARGETS, targets
from .timing import peak_tflops

METHOD = """Times: medians of triton.testing.do_bench on CUDA (CUDA events, L2 flushed between calls; the yardsticks'
clock), wall-clock medians on the CPU. Every ratio is against dense timed in the same run and the same mode
(eager, or captured in one CUDA graph). FLOP ideal of a VersatileFFN sublayer (flops.versatile_sublayer_x_dense):
mean executed loops + share of width-path tokens x K/N of one down projection (grouped route; the whole down
projection otherwise). FLOP counting: 2 per multiply-accumulate; MFU = executed matmul FLOPs per step / (step
time x peak), peak = 989.4 TFLOP/s (H100/H200 SXM dense bf16); attention counted causal (half of 4 T d)."""


def _commit() -> str | None:
    """$VERSATILEFFN_COMMIT if set (a working tree copied to a device machine may carry a stale .git), else git's."""
    if os.environ.get("VERSATILEFFN_COMMIT"):
        return os.environ["VERSATILEFFN_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run(out_path: str | Path, quick: bool = False, budget_s: float = 540.0, sections: tuple[str, ...] = SECTIONS,
        device: str | None = None, compile: bool = True, inputs: Inputs | None = None,
        command: str | None = None) -> dict:
    """compile: also the torch.compile modes; inputs: the files some sections read; command: how the run was
    started (recorded; default the process's own command line)."""
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown sections {unknown}; choose from {list(SECTIONS)}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    shape = QUICK if quick else Shape()
    out_path = Path(out_path)
    b = Bench(shape, dev, dtype, budget_s, compile, inputs or Inputs(), out_path.parent)
    out = b.out
    out["env"] = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
                  "torch": torch.__version__, "dtype": str(dtype), "python": platform.python_version(),
                  "commit": _commit(), "command": command or " ".join(sys.argv),
                  "shape": {k: getattr(shape, k) for k in shape.__dataclass_fields__}, "peak_tflops": peak_tflops(dev),
                  "inputs": {k: None if v is None else str(v) for k, v in vars(b.inputs).items()},
                  "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out["method"] = METHOD
    out["targets_spec"] = {k: {"text": t.text, "target": t.limit} for k, t in TARGETS.items()}
    out["seconds"] = {}
    for name in sections:
        if b.left() < 20:
            out[name] = "skipped: time budget"
            continue
        t = time.time()
        try:
            out[name] = REGISTRY[name].run(b)
        except Exception as exc:  # keep the other sections' numbers
            out[name] = f"failed: {type(exc).__name__}: {str(exc)[:400]}"
        out["seconds"][name] = time.time() - t
        print(f"[bench] {name}: {out['seconds'][name]:.1f}s", flush=True)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        out["targets"] = targets(out, shape)
        write_json(out_path, out)
    return out
