"""The ragged-loop engine: VersatileFFN's eval and exact-gradient training forwards without a host read.

Tokens are sorted by loop count l_hat, descending, on the device, so the tokens that still run loop l are a
prefix of the sorted rows; its length n_l = #{l_hat >= l} stays on the device (``ragged``: rows past n_l are
garbage that never reaches an output or a gradient). Every tensor keeps its full static shape, so a forward
compiles with ``torch.compile(fullgraph=True)`` and replays in a CUDA graph with another loop mix.

* eval (discrete early exit + conditional parallelism, "Inference Optimization"): loop l computes only
  rows [0, n_l); the width path (Eq. 6-8) runs only the (token, expert) assignments of tokens with lambda > 0,
  sorted by expert for one grouped GEMM of K/N of a down projection per token.
* exact-gradient training: the forward value of p is one-hot(l_hat), so dY/dH^(l) = 0 for l != l_hat and no
  gradient enters loop l through a token with l_hat < l. Every loop runs forward on every row (the loop
  head's straight-through term <dY, H^(l)> needs the values); the backward of loop l runs on rows [0, n_l)
  only. Same gradients as Algorithm 1 (``depth_grad="full"``) up to summation order.
"""
from __future__ import annotations

import torch

from .fast import count_values, permute_rows, select_loop_states
from .fusion import fuse, width_weight
from .ragged import (add_rows_, compute_dtype, gmm_fits, gmm_operand, gmm_runs, linear_grad_rows, poison_rows,
                     ragged_mm, rms_norm_rows, swiglu_grad_rows, swiglu_rows, zero_grad_past)


def sort_by_depth(loops_n: torch.Tensor, max_loops: int):
    """Order of tokens by l_hat (descending), its inverse, and n [L_max - 1] int32: n[l - 2] = #{l_hat >= l},
    the live prefix of loop l = 2..L_max (loop 1 runs on every token)."""
    order = torch.argsort(loops_n, descending=True, stable=True)
    positions = torch.arange(order.shape[0], device=order.device)
    inverse = torch.empty_like(order).scatter_(0, order, positions)
    thresholds = torch.arange(2, max_loops + 1, device=loops_n.device)
    live = (loops_n.unsqueeze(-1) >= thresholds).sum(0, dtype=torch.int32)
    return order, inverse, live


# ------------------------------------------------------------------------------------------ width


def grouped_width(layer, h_nd: torch.Tensor, a_nh: torch.Tensor, active_n: torch.Tensor | None = None):
    """Eq. 6-8 per (token, expert) assignment: Y_width = H + sum_k g_k norm(W_out^(k) a[I_k]) (norm: the
    identity for a pre-norm F), one grouped GEMM over expert-sorted assignments (K/N of a down projection).

    active_n: tokens whose assignments run (None: all); the others are sorted past the last offset and never
    computed, so their rows of Y_width are garbage. Returns (Y_width, router logits, experts for the
    statistics: n_experts where a token is inactive).
    """
    logits_ne, gates_nk, experts_nk, _ = layer._route(h_nd)
    m, k = experts_nk.shape
    n_experts = layer.n_experts
    key = experts_nk if active_n is None else torch.where(active_n.unsqueeze(-1), experts_nk, n_experts)
    flat = key.reshape(-1)
    order = torch.argsort(flat, stable=True)
    inverse = torch.empty_like(order).scatter_(0, order, torch.arange(order.shape[0], device=order.device))
    offsets = torch.cumsum(count_values(flat, n_experts), 0).to(torch.int32)
    dt = compute_dtype(a_nh)
    width, step = layer.config.expert_dim, max(layer.config.expert_stride, 1)
    windows = a_nh.to(dt).unfold(1, width, step)[:, :n_experts].reshape(m * n_experts, width)  # Eq. 5 slices
    slot = (order // k) * n_experts + experts_nk.reshape(-1).index_select(0, order)
    w_out = layer.down_proj.weight.to(dt).t().unfold(0, width, step)[:n_experts].transpose(1, 2)  # [N, d_e, d]
    y_md = torch._grouped_mm(windows.index_select(0, slot), gmm_operand(w_out), offs=offsets)  # Eq. 6
    y_md = poison_rows(y_md, offsets[-1:])
    gates_m = gates_nk.reshape(-1).index_select(0, order).to(y_md.dtype).unsqueeze(-1)
    y_md = layer.output_norm(y_md) * gates_m
    y_nd = permute_rows(y_md, inverse, order).view(m, k, -1).sum(1)  # Eq. 8: back to tokens, sum over K
    return h_nd + y_nd, logits_ne, key


def width_rows(layer, h_nd, a_nh, active_n=None):
    """The width path for the engine: grouped where torch._grouped_mm runs, the layer's plain one otherwise."""
    dt = compute_dtype(a_nh)
    if gmm_runs(a_nh.device, dt) and gmm_fits(dt, layer.config.expert_dim, layer.d_model):
        return grouped_width(layer, h_nd, a_nh, active_n)
    y_nd, logits_ne, experts_nk = layer._width(h_nd, a_nh)
    if active_n is not None:
        experts_nk = torch.where(active_n.unsqueeze(-1), experts_nk, layer.n_experts)
    return y_nd, logits_ne, experts_nk


# ------------------------------------------------------------------------------------------- eval


def _ragged_step_(layer, cur: torch.Tensor, n: torch.Tensor) -> None:
    """H^(l) = F(H^(l-1)) (Eq. 2, 9) in place for rows [0, n); the others keep their state."""
    u = rms_norm_rows(layer.norm, cur, n)
    g = ragged_mm(u, layer.gate_proj.weight.t(), n)
    v = ragged_mm(u, layer.up_proj.weight.t(), n)
    y = ragged_mm(swiglu_rows(g, v, n), layer.down_proj.weight.t(), n)
    add_rows_(cur, layer.output_norm(y), n)


@torch.no_grad()
def eval_forward(layer, h_nd: torch.Tensor, loops_n: torch.Tensor):
    """Each token runs exactly l_hat loops; the width path only where lambda > 0. -> (Y, lambda, experts)."""
    mode, max_loops = layer.mode, layer.max_loops
    order, inverse, live = sort_by_depth(loops_n, max_loops)
    h_nd = h_nd.index_select(0, order)
    lam_n = width_weight(mode, max_loops, loops_n.index_select(0, order))
    a_nh = layer.hidden(h_nd)  # loop 1's activations, shared with the width path
    y_depth = h_nd + layer.down_proj(a_nh)  # H^(1): every token runs loop 1
    for loop in range(2, max_loops + 1):
        _ragged_step_(layer, y_depth, live[loop - 2:loop - 1])
    experts_nk = None
    y_nd = y_depth
    if mode != "depth":
        active_n = lam_n > 0 if mode == "gated" else None  # lambda = 0 (l_hat = L_max): no width path
        y_width, _, experts_nk = width_rows(layer, h_nd, a_nh, active_n)
        y_nd = fuse(y_width, y_depth, lam_n)
        if active_n is not None:  # select, never weight: garbage rows may hold NaN
            y_nd = torch.where(active_n.unsqueeze(-1), y_nd, y_depth)
    return y_nd.index_select(0, inverse), lam_n, experts_nk


# --------------------------------------------------------------------------------------- training


def _step_grad_rows(layer, cur: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """H^(l) = F(H^(l-1)) on every row, with a backward for rows [0, n) only (Eq. 9)."""
    u = zero_grad_past(layer.norm(cur), n)  # the ragged GEMMs' garbage input gradients stop here
    g = linear_grad_rows(u, layer.gate_proj.weight, n)
    v = linear_grad_rows(u, layer.up_proj.weight, n)
    y = linear_grad_rows(swiglu_grad_rows(g, v, n), layer.down_proj.weight, n)
    return cur + layer.output_norm(y)


def train_forward(layer, h_nd: torch.Tensor, p_nl: torch.Tensor, loops_n: torch.Tensor):
    """Algorithm 1 with backward only up to each token's sampled depth. p_nl: the straight-through sample
    (forward value one-hot(loops_n)). -> (Y, lambda, router logits, experts)."""
    mode, max_loops = layer.mode, layer.max_loops
    order, inverse, live = sort_by_depth(loops_n, max_loops)
    h_nd, p_nl = permute_rows(h_nd, order, inverse), permute_rows(p_nl, order, inverse)
    a_nh = layer.hidden(h_nd)
    states = [h_nd + layer.down_proj(a_nh)]  # H^(1): every token has l_hat >= 1
    for loop in range(2, max_loops + 1):
        states.append(_step_grad_rows(layer, states[-1], live[loop - 2:loop - 1]))
    y_depth = select_loop_states(states, p_nl)  # Eq. 11
    lam_n = width_weight(mode, max_loops, p_nl)
    y_width = logits_ne = experts_nk = None
    if mode != "depth":  # every token: lambda's gradient needs Y_width where its value is 0
        y_width, logits_ne, experts_nk = width_rows(layer, h_nd, a_nh)
    y_nd = fuse(y_width, y_depth, lam_n)
    return permute_rows(y_nd, inverse, order), lam_n, logits_ne, experts_nk
