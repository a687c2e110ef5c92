"""Triton kernels over the live rows [0, n) of a static buffer, n read from device memory.

The grid covers every row; a program whose first row is past n returns at once, so the cost follows n and
no host ever learns n (no synchronisation, capturable in a CUDA graph). Outputs keep whatever their memory
held in rows past n. Each kernel rounds where PyTorch's eager ops round, so the live rows match
``versatileffn.ffn.ragged``'s torch fallbacks to the last bit in most cases and to one rounding in all.

Imported only when Triton is installed (CUDA wheels of PyTorch bring it; the CPU tests run without it).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

ROWS = 8       # rows per program of the elementwise kernels
COLS = 512     # columns per program of the elementwise kernels


@triton.jit
def _tile(n, width, ROWS: tl.constexpr, COLS: tl.constexpr):
    """This program's rows (int64 offsets, [ROWS, 1]), columns ([1, COLS]) and live mask."""
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.program_id(1) * COLS + tl.arange(0, COLS)
    return rows[:, None].to(tl.int64), cols[None, :], (rows[:, None] < n) & (cols[None, :] < width)


@triton.jit
def _swiglu_fwd(g_ptr, v_ptr, a_ptr, n_ptr, width, stride_g, stride_v, stride_a,
                ROWS: tl.constexpr, COLS: tl.constexpr):
    n = tl.load(n_ptr)
    if tl.program_id(0) * ROWS >= n:  # a block of dead rows: nothing to do
        return
    r, c, mask = _tile(n, width, ROWS, COLS)
    g = tl.load(g_ptr + r * stride_g + c, mask=mask, other=0.0).to(tl.float32)
    v = tl.load(v_ptr + r * stride_v + c, mask=mask, other=0.0).to(tl.float32)
    dt = a_ptr.dtype.element_ty
    silu = (g * tl.sigmoid(g)).to(dt).to(tl.float32)  # F.silu rounds before the product, as eager does
    tl.store(a_ptr + r * stride_a + c, (silu * v).to(dt), mask=mask)


@triton.jit
def _swiglu_bwd(da_ptr, g_ptr, v_ptr, dg_ptr, dv_ptr, n_ptr, width, stride_da, stride_g, stride_v, stride_dg,
                stride_dv, ROWS: tl.constexpr, COLS: tl.constexpr):
    n = tl.load(n_ptr)
    if tl.program_id(0) * ROWS >= n:  # a block of dead rows: nothing to do
        return
    r, c, mask = _tile(n, width, ROWS, COLS)
    da = tl.load(da_ptr + r * stride_da + c, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + r * stride_g + c, mask=mask, other=0.0).to(tl.float32)
    v = tl.load(v_ptr + r * stride_v + c, mask=mask, other=0.0).to(tl.float32)
    dt = dg_ptr.dtype.element_ty
    sig = tl.sigmoid(g)
    silu = (g * sig).to(dt).to(tl.float32)
    dsilu = (da * v).to(dt).to(tl.float32)  # autograd of silu(g) * v: the product's grad is rounded first
    tl.store(dg_ptr + r * stride_dg + c, (dsilu * sig * (1.0 + g * (1.0 - sig))).to(dt), mask=mask)
    tl.store(dv_ptr + r * stride_dv + c, (da * silu).to(dt), mask=mask)


@triton.jit
def _add_rows(x_ptr, y_ptr, n_ptr, width, stride_x, stride_y, ROWS: tl.constexpr, COLS: tl.constexpr):
    n = tl.load(n_ptr)
    if tl.program_id(0) * ROWS >= n:  # a block of dead rows: nothing to do
        return
    r, c, mask = _tile(n, width, ROWS, COLS)
    x = tl.load(x_ptr + r * stride_x + c, mask=mask, other=0.0)
    y = tl.load(y_ptr + r * stride_y + c, mask=mask, other=0.0)
    # eager x + y promotes to x's dtype (the residual stream) and rounds once
    tl.store(x_ptr + r * stride_x + c, (x.to(tl.float32) + y.to(tl.float32)).to(x.dtype), mask=mask)


@triton.jit
def _rms_norm_rows(x_ptr, w_ptr, out_ptr, n_ptr, width, stride_x, stride_out, eps,
                   ROWS: tl.constexpr, BLOCK: tl.constexpr):
    n = tl.load(n_ptr)
    if tl.program_id(0) * ROWS >= n:
        return
    r, c, mask = _tile(n, width, ROWS, BLOCK)  # one program holds whole rows (a 1-D grid: column block 0)
    x = tl.load(x_ptr + r * stride_x + c, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + c, mask=c < width, other=0.0)
    dt = out_ptr.dtype.element_ty
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / width + eps)
    normed = (x * rstd[:, None]).to(dt).to(tl.float32)  # versatileffn RMSNorm: fp32 norm, cast, then * weight
    y = normed * w.to(dt).to(tl.float32)
    tl.store(out_ptr + r * stride_out + c, y.to(dt), mask=mask)


@triton.jit
def _combine(out_ptr, depth_ptr, inverse_ptr, h_ptr, y_ptr, pos_ptr, gate_ptr, lam_ptr, m, width, stride_out,
             stride_depth, stride_h, stride_y, K: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr):
    r, c, mask = _tile(m, width, ROWS, COLS)  # rows: tokens in input order
    token = r < m
    y_depth = tl.load(depth_ptr + tl.load(inverse_ptr + r, mask=token, other=0) * stride_depth + c, mask=mask,
                      other=0.0).to(tl.float32)
    lam = tl.load(lam_ptr + r, mask=token, other=0.0)
    width_mask = mask & (lam > 0)  # lambda = 0: the width rows are garbage, never read
    y_width = tl.load(h_ptr + r * stride_h + c, mask=width_mask, other=0.0).to(tl.float32)
    for k in tl.static_range(K):
        pos = tl.load(pos_ptr + r * K + k, mask=token, other=0)
        gate = tl.load(gate_ptr + r * K + k, mask=token, other=0.0)
        y_width += gate * tl.load(y_ptr + pos * stride_y + c, mask=width_mask, other=0.0).to(tl.float32)
    out = tl.where(lam > 0, y_depth + lam * (y_width - y_depth), y_depth)
    tl.store(out_ptr + r * stride_out + c, out.to(out_ptr.dtype.element_ty), mask=mask)


def _grid(rows: int, cols: int) -> tuple[int, int]:
    return triton.cdiv(max(rows, 1), ROWS), triton.cdiv(max(cols, 1), COLS)


def swiglu_rows(g: torch.Tensor, v: torch.Tensor, n: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    m, width = g.shape
    _swiglu_fwd[_grid(m, width)](g, v, out, n, width, g.stride(0), v.stride(0), out.stride(0), ROWS=ROWS, COLS=COLS)
    return out


def swiglu_rows_backward(da, g, v, n, dg, dv) -> tuple[torch.Tensor, torch.Tensor]:
    m, width = g.shape
    _swiglu_bwd[_grid(m, width)](da, g, v, dg, dv, n, width, da.stride(0), g.stride(0), v.stride(0), dg.stride(0),
                                 dv.stride(0), ROWS=ROWS, COLS=COLS)
    return dg, dv


def add_rows_(x: torch.Tensor, y: torch.Tensor, n: torch.Tensor) -> None:
    m, width = x.shape
    _add_rows[_grid(m, width)](x, y, n, width, x.stride(0), y.stride(0), ROWS=ROWS, COLS=COLS)


def rms_norm_rows(x: torch.Tensor, weight: torch.Tensor, eps: float, n: torch.Tensor,
                  out: torch.Tensor) -> torch.Tensor:
    m, width = x.shape
    grid = (triton.cdiv(max(m, 1), ROWS),)
    _rms_norm_rows[grid](x, weight, out, n, width, x.stride(0), out.stride(0), eps, ROWS=ROWS,
                         BLOCK=triton.next_power_of_2(width))
    return out


def combine(out, depth, inverse, h, y, pos, gates, lam) -> torch.Tensor:
    m, width = out.shape
    _combine[_grid(m, width)](out, depth, inverse, h, y, pos, gates, lam, m, width, out.stride(0), depth.stride(0),
                              h.stride(0), y.stride(0), K=pos.shape[1], ROWS=ROWS, COLS=COLS)
    return out
