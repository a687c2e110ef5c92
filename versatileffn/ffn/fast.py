"""Helpers of the FFN fast paths: grouped expert matmuls, loop-state selection, the recompute guard.

Nothing here changes what a layer computes; it changes how (sorted tokens and grouped GEMMs instead of
dense masks, no backward graph where the gradient is exactly zero). Every helper has a plain PyTorch
fallback that runs on the CPU, so the CPU tests check the same code paths the GPU uses.
"""
from __future__ import annotations

import contextlib

import torch

# --------------------------------------------------------------------------------- recompute guard

_RECOMPUTING = False


def is_recomputing() -> bool:
    """True while activation checkpointing re-runs a forward for its backward (statistics must not count twice)."""
    return _RECOMPUTING


@contextlib.contextmanager
def recomputing():
    global _RECOMPUTING
    previous, _RECOMPUTING = _RECOMPUTING, True
    try:
        yield
    finally:
        _RECOMPUTING = previous


def checkpoint_contexts():
    """``context_fn`` for ``torch.utils.checkpoint``: plain first forward, flagged recomputation."""
    return contextlib.nullcontext(), recomputing()


# ------------------------------------------------------------------------------------ grouped GEMM


def grouped_mm_supported(x: torch.Tensor) -> bool:
    """torch._grouped_mm runs on Hopper-class GPUs (sm_90+) with bf16 operands."""
    return (x.is_cuda and x.dtype == torch.bfloat16 and hasattr(torch, "_grouped_mm")
            and torch.cuda.get_device_capability(x.device)[0] >= 9)


def grouped_mm(x_md: torch.Tensor, w_edf: torch.Tensor, offsets_e: torch.Tensor) -> torch.Tensor:
    """Rows of x sorted by group; group e = rows [offsets[e-1], offsets[e]) times w[e] ([d, f]).

    CUDA/bf16/sm_90: one ``torch._grouped_mm`` launch, offsets stay on the device (no host sync).
    Elsewhere: one matmul per group (reads the offsets on the host) — the same function, for CPU runs.
    """
    if grouped_mm_supported(x_md):
        return torch._grouped_mm(x_md, w_edf, offs=offsets_e.to(torch.int32))
    ends = offsets_e.tolist()
    outs, start = [], 0
    for e, end in enumerate(ends):
        outs.append(x_md[start:end] @ w_edf[e])
        start = end
    return torch.cat(outs)


def sort_by_expert(experts_nk: torch.Tensor, n_experts: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token-expert assignments sorted by expert: (order over the n*K flat assignments, token index of
    each sorted assignment, inclusive end offsets [N]). Sync-free: counts come from scatter_add."""
    flat = experts_nk.reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts_e = torch.zeros(n_experts, dtype=torch.int64, device=flat.device).scatter_add_(0, flat, torch.ones_like(flat))
    return order, order // experts_nk.shape[-1], torch.cumsum(counts_e, 0)


# ---------------------------------------------------------------------------------- loop selection


def select_loop_states(states: list[torch.Tensor], p_nl: torch.Tensor) -> torch.Tensor:
    """Eq. 11, Y_depth = sum_l p_l H^(l), accumulated without stacking the L states into one tensor."""
    p_nl = p_nl.to(states[0].dtype)
    y = states[0] * p_nl[:, :1]
    for loop in range(1, len(states)):
        y = torch.addcmul(y, states[loop], p_nl[:, loop:loop + 1])
    return y
