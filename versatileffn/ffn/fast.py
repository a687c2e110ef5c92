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


# ------------------------------------------------------------------------------ sorting by loops


class _PermuteRows(torch.autograd.Function):
    """x[order] whose backward is the inverse gather (index_select's default backward is an atomic
    index_add into zeros, slow for bf16 rows)."""

    @staticmethod
    def forward(ctx, x, order, inverse):
        ctx.save_for_backward(inverse)
        return x.index_select(0, order)

    @staticmethod
    def backward(ctx, grad):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse), None, None


def permute_rows(x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    return _PermuteRows.apply(x, order, inverse) if x.requires_grad else x.index_select(0, order)


def sort_by_loops(loops_n: torch.Tensor, max_loops: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Order of tokens by loop count (descending), its inverse, and counts[l] = tokens with exactly l loops,
    l = 0..max_loops + 1, read on the host (the plain path; the engine keeps its counts on the device)."""
    order_n = torch.argsort(loops_n, descending=True, stable=True)
    inverse_n = torch.empty_like(order_n)
    inverse_n[order_n] = torch.arange(order_n.shape[0], device=order_n.device)
    return order_n, inverse_n, count_values(loops_n, max_loops + 2).tolist()


def count_values(values: torch.Tensor, n_values: int) -> torch.Tensor:
    """Histogram of integers in [0, n_values) by comparison and sum: no atomics, no sync, static shape."""
    return (values.reshape(-1, 1) == torch.arange(n_values, device=values.device)).sum(0)


# ---------------------------------------------------------------------------------- loop selection


def select_loop_states(states: list[torch.Tensor], p_nl: torch.Tensor) -> torch.Tensor:
    """Eq. 11, Y_depth = sum_l p_l H^(l), accumulated without stacking the L states into one tensor."""
    p_nl = p_nl.to(states[0].dtype)
    y = states[0] * p_nl[:, :1]
    for loop in range(1, len(states)):
        y = torch.addcmul(y, states[loop], p_nl[:, loop:loop + 1])
    return y
