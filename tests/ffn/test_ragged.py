"""The ragged-row primitives keep their contracts on every route: rows < n exact, rows >= n garbage that the
callers never read, backward only for rows < n. Routes on the CPU: torch._grouped_mm (bf16 / fp32), the
full-row torch fallback (float64), and the Triton kernels when the suite runs with TRITON_INTERPRET=1 and
triton installed (skipped otherwise)."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from versatileffn.ffn import ragged
from versatileffn.ffn.common import RMSNorm

M, K, N_OUT = 13, 32, 48
DTYPES = [torch.float32, torch.bfloat16, torch.float64]
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float64: 1e-12}


def live(n: int) -> torch.Tensor:
    return torch.tensor([n], dtype=torch.int32)


def close(a, b, dtype):
    torch.testing.assert_close(a.double(), b.double(), rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 5, M])
def test_ragged_mm_computes_the_live_rows(dtype, n):
    x, w = torch.randn(M, K, dtype=dtype), torch.randn(N_OUT, K, dtype=dtype)  # w: an nn.Linear weight
    with ragged.poison_garbage():
        y = ragged.ragged_mm(x, w.t(), live(n))
    close(y[:n], x[:n] @ w.t(), dtype)
    assert torch.isnan(y[n:]).all()  # poisoned: a leak of these rows would show as NaN downstream
    expected_route = dtype != torch.float64
    assert ragged.gmm_runs(x.device, dtype) == expected_route


def test_ragged_mm_falls_back_for_unaligned_rows():
    x, w = torch.randn(M, 6), torch.randn(10, 6)  # 24-byte rows: not a grouped-GEMM operand
    assert not ragged.gmm_fits(torch.float32, 6, 10)
    torch.testing.assert_close(ragged.ragged_mm(x, w.t(), live(M)), x @ w.t())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 7, M])  # n = 0: the weight gradient of an empty group is exactly zero
def test_linear_grad_rows_backward_only_for_live_rows(dtype, n):
    x = torch.randn(M, K, dtype=dtype, requires_grad=True)
    w = torch.randn(N_OUT, K, dtype=dtype, requires_grad=True)
    dy = torch.randn(M, N_OUT, dtype=dtype)
    with ragged.poison_garbage():
        y = ragged.linear_grad_rows(ragged.zero_grad_past(x, live(n)), w, live(n))
        y.backward(dy)
    close(y, F.linear(x, w), dtype)  # the forward runs on every row
    close(w.grad, dy[:n].t() @ x[:n], dtype)  # weight gradient from the live rows only
    close(x.grad[:n], dy[:n] @ w, dtype)
    assert (x.grad[n:] == 0).all()  # the garbage input gradient stops at zero_grad_past


def test_linear_grad_rows_garbage_input_gradient_is_garbage():
    x = torch.randn(M, K, requires_grad=True)
    w = torch.randn(N_OUT, K)
    with ragged.poison_garbage():
        ragged.linear_grad_rows(x, w, live(4)).backward(torch.randn(M, N_OUT))
    assert torch.isnan(x.grad[4:]).all() and torch.isfinite(x.grad[:4]).all()


def test_linear_grad_rows_ignores_garbage_in_the_incoming_gradient():
    """Rows >= n of dy may be garbage (another ragged op's backward): the weight gradient must not see them."""
    n = 6
    x, w = torch.randn(M, K), torch.randn(N_OUT, K, requires_grad=True)
    dy = torch.randn(M, N_OUT)
    dy[n:] = float("nan")
    ragged.linear_grad_rows(x, w, live(n)).backward(dy)
    torch.testing.assert_close(w.grad, dy[:n].t() @ x[:n])


@pytest.mark.parametrize("dtype", DTYPES)
def test_swiglu_rows_and_its_backward(dtype):
    n = 9
    g, v = torch.randn(M, K, dtype=dtype), torch.randn(M, K, dtype=dtype)
    with ragged.poison_garbage():
        a = ragged.swiglu_rows(g, v, live(n))
    close(a[:n], F.silu(g[:n]) * v[:n], dtype)
    assert torch.isnan(a[n:]).all()
    g1, v1 = g.clone().requires_grad_(), v.clone().requires_grad_()
    g2, v2 = g.clone().requires_grad_(), v.clone().requires_grad_()
    da = torch.randn(M, K, dtype=dtype)
    with ragged.poison_garbage():
        a = ragged.swiglu_grad_rows(g1, v1, live(n))
        a.backward(da)
    (F.silu(g2) * v2).backward(da)
    close(a, F.silu(g) * v, dtype)
    close(g1.grad[:n], g2.grad[:n], dtype)
    close(v1.grad[:n], v2.grad[:n], dtype)
    assert torch.isnan(g1.grad[n:]).all() and torch.isnan(v1.grad[n:]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_rows_and_rms_norm_rows(dtype):
    n = 4
    x, y = torch.randn(M, K, dtype=dtype), torch.randn(M, K, dtype=dtype)
    before = x.clone()
    ragged.add_rows_(x, y, live(n))
    close(x[:n], before[:n] + y[:n], dtype)
    assert torch.equal(x[n:], before[n:])  # rows past n keep their state (not garbage)
    norm = RMSNorm(K).to(dtype)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        with ragged.poison_garbage():
            u = ragged.rms_norm_rows(norm, before, live(n))
        close(u[:n], norm(before[:n]), dtype)
    assert torch.isnan(u[n:]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_combine_rows_reads_only_the_rows_of_tokens_with_a_width_path(dtype):
    """Eq. 8 + 3 in input order: lerp(depth[inverse], h + sum_k g_k y[pos_k], lambda) where lambda > 0."""
    n, k, d = 9, 2, 16
    order_n = torch.randperm(n)
    inverse_n = torch.argsort(order_n)
    depth = torch.randn(n, d, dtype=dtype)
    h = torch.randn(n, d, dtype=dtype)
    order_m = torch.randperm(n * k)
    pos = torch.argsort(order_m).view(n, k)
    gates = torch.softmax(torch.randn(n, k), -1)
    lam = torch.tensor([0.0, 0.25, 0.5, 0.75, 0.0, 0.25, 0.0, 0.5, 0.75])
    y = torch.randn(n * k, d, dtype=dtype)
    y[pos[lam == 0].flatten()] = float("nan")  # garbage: the rows of tokens without a width path
    out = ragged.combine_rows(depth, inverse_n, h, y, pos, order_m, gates, lam)
    y_depth = depth[inverse_n]
    y_width = h + (gates.to(dtype).unsqueeze(-1) * y[pos]).sum(1)
    expected = torch.where((lam > 0).unsqueeze(-1), torch.lerp(y_depth, y_width, lam.to(dtype).unsqueeze(-1)),
                           y_depth)
    assert torch.isfinite(out).all()
    close(out, expected, dtype)


def test_compute_dtype_follows_autocast():
    x = torch.randn(2, 8)
    assert ragged.compute_dtype(x) == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ragged.compute_dtype(x) == torch.bfloat16
        y = ragged.ragged_mm(x, torch.randn(8, 16), live(2))
    assert y.dtype == torch.bfloat16


needs_interpreter = pytest.mark.skipif(
    ragged._kernels is None or os.environ.get("TRITON_INTERPRET") != "1",
    reason="the Triton route runs on the CPU with triton installed and TRITON_INTERPRET=1")


@needs_interpreter
def test_the_triton_route_is_taken_under_the_interpreter():
    assert ragged.triton_runs(torch.zeros(1))
