"""Ragged rows: work on the live rows [0, n) of a static [M, ...] buffer, n a one-element int32 device tensor.

No host ever reads n, so code built from these ops has static shapes, never synchronises, compiles with
``torch.compile(fullgraph=True)`` and replays in a CUDA graph with a different n. The contracts:

* ``ragged_mm``, ``swiglu_rows``, ``rms_norm_rows``: rows < n exact; rows >= n GARBAGE (anything, NaN too);
* ``add_rows_``: rows < n updated in place, rows >= n untouched;
* ``linear_grad_rows``, ``swiglu_grad_rows``: forward exact on EVERY row; backward only for rows < n (input
  gradient garbage past n, weight gradient exact);
* ``zero_grad_past``: the identity; its backward zeroes gradient rows >= n (where garbage gradients stop).

Garbage never meets arithmetic that mixes rows: callers select with ``torch.where`` (never multiply by 0:
NaN * 0 = NaN). Routes, chosen per call: ``torch._grouped_mm`` with one group and ``offs=n`` (CUDA sm_90
bf16; CPU bf16/fp32) and Triton kernels that read n from device memory (``ragged_kernels``, CUDA, or
the CPU with ``TRITON_INTERPRET=1``); elsewhere full-row torch ops compute every row (same live rows, more
work). ``poison_garbage()`` (tests) makes every garbage row NaN so that a leak cannot hide.
"""
from __future__ import annotations

import contextlib
import os

import torch
import torch.nn.functional as F

from .common import RMSNorm
from .fast import permute_rows
from .fusion import fuse

try:
    from . import ragged_kernels as _kernels
except ImportError:  # no Triton: the torch routes
    _kernels = None

_POISON = False


@contextlib.contextmanager
def poison_garbage():
    """Fill every row past n that the contracts call garbage with NaN (tests: nothing may leak)."""
    global _POISON
    previous, _POISON = _POISON, True
    try:
        yield
    finally:
        _POISON = previous


def live_rows(n: torch.Tensor, m: int) -> torch.Tensor:
    """[m, 1] bool: row i < n."""
    return (torch.arange(m, device=n.device) < n).unsqueeze(-1)


def poison_rows(t: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """t, with rows past n set to NaN under ``poison_garbage()`` (tests); t itself otherwise."""
    return torch.where(live_rows(n, t.shape[0]), t, float("nan")) if _POISON else t


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a matmul on x runs in: the autocast dtype where autocast is on for x's device."""
    dev = x.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype


# ------------------------------------------------------------------------------------------- routes


def gmm_runs(device: torch.device, dtype: torch.dtype) -> bool:
    """torch._grouped_mm computes only rows [0, offs[-1]) without reading offs on the host: CUDA sm_90 with bf16
    (its other CUDA routes copy offs to the host; sm_100 gives non-zero weight gradients for empty groups,
    pytorch/pytorch#172439), and the CPU kernel (bf16, or fp32 when eager: the meta function that compilation
    uses accepts bf16 only)."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    if device.type == "cuda":
        return dtype == torch.bfloat16 and torch.cuda.get_device_properties(device).major == 9
    if device.type != "cpu":
        return False
    return dtype == torch.bfloat16 or (dtype == torch.float32 and not torch.compiler.is_compiling())


def gmm_fits(dtype: torch.dtype, *sizes: int) -> bool:
    """Rows of these lengths can be grouped-GEMM operands (16-byte multiples)."""
    return all(s * dtype.itemsize % 16 == 0 for s in sizes)


def _aligned(t: torch.Tensor) -> bool:
    """torch._grouped_mm wants 16-byte aligned strides for every dimension but a unit one (the operands here
    start at offset 0: weights, their transposed or unfolded views, freshly computed activations)."""
    q = 16 // t.element_size()
    return all(s % q == 0 for s in t.stride() if s != 1)


def gmm_operand(t: torch.Tensor) -> torch.Tensor:
    return t if _aligned(t) else t.contiguous()


def triton_runs(x: torch.Tensor) -> bool:
    if _kernels is None:
        return False
    return x.is_cuda or (x.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")


def _uses_kernels(x: torch.Tensor) -> bool:
    return triton_runs(x) and x.dtype in (torch.bfloat16, torch.float16, torch.float32) and x.stride(-1) == 1


# ------------------------------------------------------------------------------------ forward ops


def ragged_mm(x: torch.Tensor, w_t: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """x @ w_t for rows < n (x [M, k], w_t [k, f]; under autocast in the autocast dtype); rows past n garbage."""
    dt = compute_dtype(x)
    x, w_t = x.to(dt), w_t.to(dt)
    if gmm_runs(x.device, dt) and gmm_fits(dt, *w_t.shape):
        return poison_rows(torch._grouped_mm(gmm_operand(x), gmm_operand(w_t).unsqueeze(0), offs=n), n)
    return poison_rows(x @ w_t, n)


def swiglu_rows(g: torch.Tensor, v: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """silu(g) * v (SwiGLU, Eq. 2's phi) for rows < n; rows past n garbage."""
    if _uses_kernels(g) and v.stride(-1) == 1:
        return _kernel(_swiglu_op, _swiglu_kernel)(g, v, n)
    return poison_rows(F.silu(g) * v, n)


def add_rows_(x: torch.Tensor, y: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """x[:n] += y[:n] in place (the residual of Eq. 2 for the live rows); rows past n keep their values."""
    if _uses_kernels(x) and y.stride(-1) == 1 and x.is_contiguous():
        _kernel(_add_op, _add_kernel)(x, y, n)
        return x
    return x.copy_(torch.where(live_rows(n, x.shape[0]), x + y, x))


def rms_norm_rows(norm: torch.nn.Module, x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """norm(x) for rows < n: a Triton kernel for versatileffn's own RMSNorm, the module on every row otherwise."""
    if type(norm) is RMSNorm and _uses_kernels(x) and x.shape[-1] <= 16384:
        return _kernel(_rms_norm_op, _rms_norm_kernel)(x, norm.weight, norm.eps, n)
    return poison_rows(norm(x), n)


def gather_sum(y_md: torch.Tensor, pos_nk: torch.Tensor, order_m: torch.Tensor, weights_nk: torch.Tensor):
    """sum_k w[t, k] y[pos[t, k]] for every token t -> [n, d], differentiable. pos flattened is a permutation of
    y's rows and order_m its inverse. Token t reads only its own K rows: garbage in other rows stays there."""
    n, k = pos_nk.shape
    rows = permute_rows(y_md, pos_nk.reshape(-1), order_m).view(n, k, -1)
    return torch.bmm(weights_nk.to(y_md.dtype).unsqueeze(1), rows).squeeze(1)


def combine_rows(depth_sorted: torch.Tensor, inverse_n: torch.Tensor, h_nd: torch.Tensor, y_md: torch.Tensor,
                 pos_nk: torch.Tensor, order_m: torch.Tensor, gates_nk: torch.Tensor,
                 lam_n: torch.Tensor) -> torch.Tensor:
    """Eq. 8 and 3 per token, in input order (eval): Y_depth = depth_sorted[inverse], Y_width = H + sum_k g_k
    y[pos_k]; out = lerp(Y_depth, Y_width, lambda) where lambda > 0, Y_depth where lambda = 0 (there the y rows
    are garbage and are never read). One Triton kernel, or the same in torch ops."""
    if _uses_kernels(h_nd) and all(t.is_contiguous() for t in (depth_sorted, h_nd, pos_nk, gates_nk, lam_n)):
        args = (depth_sorted, inverse_n, h_nd, y_md, pos_nk, gates_nk.float(), lam_n.float())
        return _kernel(_combine_op, _combine_kernel)(*args)
    y_depth = depth_sorted.index_select(0, inverse_n)
    y_width = h_nd + gather_sum(y_md, pos_nk, order_m, gates_nk)
    return torch.where((lam_n > 0).unsqueeze(-1), fuse(y_width, y_depth, lam_n), y_depth)


# ------------------------------------------------------------------------------ Triton kernels as ops
# Eager calls launch the kernels directly; a compiled graph calls them as opaque custom ops (dynamo does not
# trace into them, and the graph keeps them in place, CUDA graphs included).


def _kernel(op, direct):
    return op if torch.compiler.is_compiling() else direct


def _unwritten(like: torch.Tensor) -> torch.Tensor:
    """The output of a kernel that writes only the live rows."""
    return torch.full_like(like, float("nan")) if _POISON else torch.empty_like(like)


def _swiglu_kernel(g: torch.Tensor, v: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    return _kernels.swiglu_rows(g, v, n, _unwritten(g))


def _swiglu_backward_kernel(da: torch.Tensor, g: torch.Tensor, v: torch.Tensor,
                            n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _kernels.swiglu_rows_backward(da, g, v, n, _unwritten(g), _unwritten(v))


def _add_kernel(x: torch.Tensor, y: torch.Tensor, n: torch.Tensor) -> None:
    _kernels.add_rows_(x, y, n)


def _combine_kernel(depth: torch.Tensor, inverse: torch.Tensor, h: torch.Tensor, y: torch.Tensor, pos: torch.Tensor,
                    gates: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    return _kernels.combine(torch.empty_like(depth), depth, inverse, h, y, pos, gates, lam)


def _rms_norm_kernel(x: torch.Tensor, weight: torch.Tensor, eps: float, n: torch.Tensor) -> torch.Tensor:
    return _kernels.rms_norm_rows(x, weight, eps, n, _unwritten(x))


_swiglu_op = torch.library.custom_op("versatileffn::swiglu_rows", _swiglu_kernel, mutates_args=())
_swiglu_backward_op = torch.library.custom_op("versatileffn::swiglu_rows_backward", _swiglu_backward_kernel,
                                              mutates_args=())
_add_op = torch.library.custom_op("versatileffn::add_rows_", _add_kernel, mutates_args=("x",))
_rms_norm_op = torch.library.custom_op("versatileffn::rms_norm_rows", _rms_norm_kernel, mutates_args=())
_combine_op = torch.library.custom_op("versatileffn::combine_rows", _combine_kernel, mutates_args=())
_swiglu_op.register_fake(lambda g, v, n: torch.empty_like(g))
_swiglu_backward_op.register_fake(lambda da, g, v, n: (torch.empty_like(g), torch.empty_like(v)))
_add_op.register_fake(lambda x, y, n: None)
_rms_norm_op.register_fake(lambda x, weight, eps, n: torch.empty_like(x))
_combine_op.register_fake(lambda depth, inverse, h, y, pos, gates, lam: torch.empty_like(depth))


# ------------------------------------------------------------------------- backward restricted to rows < n


class _LinearGradRows(torch.autograd.Function):
    """y = x @ w.T on every row; backward only for rows < n: dx = dy @ w (garbage past n), dw = dy[:n].T x[:n]."""

    @staticmethod
    def forward(ctx, x, w, n):
        ctx.save_for_backward(x, w, n)
        return F.linear(x, w)

    @staticmethod
    def backward(ctx, dy):
        x, w, n = ctx.saved_tensors
        dy = dy.contiguous()
        if gmm_runs(dy.device, dy.dtype) and x.dtype == dy.dtype and gmm_fits(dy.dtype, *w.shape):
            dx = torch._grouped_mm(dy, gmm_operand(w).unsqueeze(0), offs=n)
            dw = torch._grouped_mm(gmm_operand(dy.t()), gmm_operand(x), offs=n)[0]  # sums rows [0, n) only
        else:
            dy_live = torch.where(live_rows(n, dy.shape[0]), dy, 0)  # rows past n may hold garbage
            dx, dw = dy_live @ w, dy_live.t() @ x
        return poison_rows(dx, n), dw.to(w.dtype), None


def linear_grad_rows(x: torch.Tensor, weight: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """F.linear(x, weight) whose backward runs only for rows < n (under autocast: in the autocast dtype)."""
    dt = compute_dtype(x)
    return _LinearGradRows.apply(x.to(dt), weight.to(dt), n)


class _SwiGLUGradRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, v, n):
        ctx.save_for_backward(g, v, n)
        return F.silu(g) * v

    @staticmethod
    def backward(ctx, da):
        g, v, n = ctx.saved_tensors
        da = da.contiguous()
        if _uses_kernels(g) and g.is_contiguous() and v.is_contiguous():
            return (*_kernel(_swiglu_backward_op, _swiglu_backward_kernel)(da, g, v, n), None)
        # what autograd computes for silu(g) * v, on every row
        return poison_rows(torch.ops.aten.silu_backward(da * v, g), n), poison_rows(da * F.silu(g), n), None


def swiglu_grad_rows(g: torch.Tensor, v: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """silu(g) * v on every row; backward only for rows < n (garbage past n)."""
    return _SwiGLUGradRows.apply(g, v, n)


class _ZeroGradPast(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, n):
        ctx.save_for_backward(n)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        (n,) = ctx.saved_tensors
        return torch.where(live_rows(n, grad.shape[0]), grad, 0), None


def zero_grad_past(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    return _ZeroGradPast.apply(x, n)
