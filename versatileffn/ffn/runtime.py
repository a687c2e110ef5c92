"""The run-time side of VersatileFFN: its knobs (``layer.runtime``) and the check of a given loop mix."""
from __future__ import annotations

from dataclasses import dataclass

import torch

DEPTH_GRAD_MODES = ("auto", "full", "exact")  # how the training forward builds the depth graph
from .ragged import compute_dtype, gmm_runs

IMPLS = ("auto", "engine", "plain")


@dataclass
class RuntimeOptions:
    """The layer's run-time knobs (``layer.runtime``), checked when set.

    loop_cap: None or k >= 1, clip l_hat at k loops at inference. impl: eval forward, "auto" | "engine" |
    "plain". depth_grad: training forward, "auto" | "full" | "exact" (see ``versatile.py``'s docstring); auto
    takes exact on CUDA from ``exact_min_tokens`` tokens per call, where it measured faster than full (H200,
    bf16, eager, x dense: 4.96 vs 5.13 at 16k tokens; 7.79 vs 5.33 at 4k, where its split GEMMs are launch-bound;
    benchmarks/results/targets_summary.json).
    """

    loop_cap: int | None = None
    impl: str = "auto"
    depth_grad: str = "auto"
    exact_min_tokens: int = 16384

    def __setattr__(self, name: str, value) -> None:
        if name == "loop_cap" and not (value is None or (isinstance(value, int) and value >= 1)):
            raise ValueError(f"inference loop cap must be None or an integer >= 1; got {value!r}")
        if name == "impl" and value not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}; got {value!r}")
        if name == "depth_grad" and value not in DEPTH_GRAD_MODES:
            raise ValueError(f"depth_grad must be one of {DEPTH_GRAD_MODES}; got {value!r}")
        if name == "exact_min_tokens" and not (isinstance(value, int) and value >= 1):
            raise ValueError(f"exact_min_tokens must be an integer >= 1; got {value!r}")
        super().__setattr__(name, value)

    def eval_engine(self, h: torch.Tensor) -> bool:
        return self.impl == "engine" or (self.impl == "auto" and h.is_cuda)

    def exact_depth_grad(self, h: torch.Tensor) -> bool:
        if self.depth_grad == "auto":  # exact pays off where its backward GEMMs skip rows without a host read
            return h.is_cuda and h.shape[0] >= self.exact_min_tokens and gmm_runs(h.device, compute_dtype(h))
        return self.depth_grad == "exact"


def given_loops(loops: torch.Tensor | None, x: torch.Tensor, mode: str, max_loops: int,
                check_values: bool) -> torch.Tensor | None:
    """``forward(x, loops=...)``: per-token loop counts [B, T] or [B*T] -> [B*T] long on x's device. Values are
    checked where that costs no host synchronisation (CPU tensors), or always with ``check_values``."""
    if loops is None:
        return None
    if mode == "width":
        raise ValueError("loops= needs the depth path; mode='width' has none")
    if not isinstance(loops, torch.Tensor) or loops.is_floating_point() or loops.is_complex():
        raise TypeError(f"loops must be an integer tensor of per-token loop counts; got {loops!r:.80}")
    n = x.shape[0] * x.shape[1]
    if tuple(loops.shape) not in (tuple(x.shape[:-1]), (n,)):
        raise ValueError(f"loops must have shape {tuple(x.shape[:-1])} or ({n},) for x of shape "
                         f"{tuple(x.shape)}; got {tuple(loops.shape)}")
    if (loops.device.type == "cpu" or check_values) and not torch.compiler.is_compiling():
        if bool(((loops < 1) | (loops > max_loops)).any()):
            raise ValueError(f"loops must lie in [1, max_loops={max_loops}]")
    return loops.reshape(-1).to(device=x.device, dtype=torch.long)
