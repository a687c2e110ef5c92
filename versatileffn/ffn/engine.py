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
from .ragged import (add_rows_, combine_rows, compute_dtype, gather_sum, gmm_fits, gmm_operand, gmm_runs,
                     linear_grad_rows, poison_rows, ragged_mm, rms_norm_rows, swiglu_grad_rows, swiglu_rows,
                     zero_grad_past)


def sort_by_depth(loops_n: torch.Tensor, max_loops: int):
    """Order of tokens by l_hat (descending), its inverse, the loop histogram [L_max] (tokens with l_hat = l)
    and live [L_max - 1] int32: live[l - 2] = #{l_hat >= l}, the prefix that runs loop l = 2..L_max."""
    order = torch.argsort(loops_n, descending=True, stable=True)
    inverse = torch.empty_like(order).scatter_(0, order, torch.arange(order.shape[0], device=order.device))
    hist = count_values(loops_n - 1, max_loops)
    live = hist.flip(0).cumsum(0).flip(0)[1:].to(torch.int32)
    return order, inverse, hist, live


def uses_grouped_width(layer, a_nh: torch.Tensor) -> bool:
    dt = compute_dtype(a_nh)
    return gmm_runs(a_nh.device, dt) and gmm_fits(dt, layer.config.expert_dim, layer.d_model)


# ------------------------------------------------------------------------------------------ width


def expert_outputs(layer, h_nd: torch.Tensor, a_nh: torch.Tensor, active_n: torch.Tensor | None = None,
                   logits_ne: torch.Tensor | None = None):
    """Eq. 6 per (token, expert) assignment: y = norm(W_out^(k) a[I_k]) (norm: the identity for a pre-norm F),
    one grouped GEMM over the assignments sorted by expert: K/N of a down projection per token.

    active_n: tokens whose assignments run (None: all); the others are sorted past the last offset and never
    computed, so their rows of y are garbage. Returns a dict: y [n*K, d] (expert order), pos [n, K] (row of
    each token's k-th assignment), order (its inverse), gates and experts [n, K], router logits [n, N],
    expert_counts [N] (of the assignments that ran). logits_ne: the router's logits, if already computed.
    """
    logits_ne, gates_nk, experts_nk, _ = layer._route(h_nd, logits_ne)
    m, k = experts_nk.shape
    n_experts = layer.n_experts
    key = experts_nk if active_n is None else torch.where(active_n.unsqueeze(-1), experts_nk, n_experts)
    flat = key.reshape(-1)
    order = torch.argsort(flat, stable=True)
    pos = torch.empty_like(order).scatter_(0, order, torch.arange(order.shape[0], device=order.device))
    counts = count_values(flat, n_experts)
    offsets = torch.cumsum(counts, 0).to(torch.int32)
    dt = compute_dtype(a_nh)
    width, step = layer.config.expert_dim, max(layer.config.expert_stride, 1)
    windows = a_nh.to(dt).unfold(1, width, step)[:, :n_experts].reshape(m * n_experts, width)  # Eq. 5 slices
    slot = (order // k) * n_experts + experts_nk.reshape(-1).index_select(0, order)
    w_out = layer.down_proj.weight.to(dt).t().unfold(0, width, step)[:n_experts].transpose(1, 2)  # [N, d_e, d]
    y_md = torch._grouped_mm(windows.index_select(0, slot), gmm_operand(w_out), offs=offsets)
    return {"y": layer.output_norm(poison_rows(y_md, offsets[-1:])), "pos": pos.view(m, k), "order": order,
            "gates": gates_nk, "experts": experts_nk, "logits": logits_ne, "expert_counts": counts}


def width_path(layer, h_nd: torch.Tensor, a_nh: torch.Tensor, delta1_nd: torch.Tensor):
    """Y_width (Eq. 8) on every token, differentiable: grouped where torch._grouped_mm runs, the layer's own
    path otherwise. delta1: loop 1's ΔF (a dense-preserving width path mixes it in). -> (Y_width, router
    logits, experts)."""
    if not uses_grouped_width(layer, a_nh):
        return layer._width(h_nd, a_nh)
    e = expert_outputs(layer, h_nd, a_nh)
    h_w, gates = layer.width_mix_of(h_nd, delta1_nd, e["gates"])
    return h_w + gather_sum(e["y"], e["pos"], e["order"], gates), e["logits"], e["experts"]


# ------------------------------------------------------------------------------------------- eval


def _ragged_step_(layer, cur: torch.Tensor, n: torch.Tensor) -> None:
    """H^(l) = F(H^(l-1)) (Eq. 2, 9) in place for rows [0, n); the others keep their state."""
    u = rms_norm_rows(layer.norm, cur, n)
    g = ragged_mm(u, layer.gate_proj.weight.t(), n)
    v = ragged_mm(u, layer.up_proj.weight.t(), n)
    y = ragged_mm(swiglu_rows(g, v, n), layer.down_proj.weight.t(), n)
    add_rows_(cur, layer.loop_delta(layer.output_norm(y)), n)


@torch.no_grad()
def eval_forward(layer, h_nd: torch.Tensor, loops_n: torch.Tensor, logits_ne: torch.Tensor | None = None):
    """Each token runs exactly l_hat loops; the width path only where lambda > 0. logits_ne: the router's
    logits, if already computed. -> (Y, loop histogram [L_max], expert counts [N] or None)."""
    mode, max_loops = layer.mode, layer.max_loops
    order, inverse, hist, live = sort_by_depth(loops_n, max_loops)
    a_nh = layer.hidden(h_nd)  # loop 1's activations (every token runs loop 1), shared with the width path
    delta1 = layer.project_out(a_nh)
    depth = (h_nd + delta1).index_select(0, order)  # H^(1), sorted by l_hat
    for loop in range(2, max_loops + 1):
        _ragged_step_(layer, depth, live[loop - 2:loop - 1])
    if mode == "depth":
        return depth.index_select(0, inverse), hist, None
    lam_n = width_weight(mode, max_loops, loops_n)
    active_n = lam_n > 0 if mode == "gated" else None  # lambda = 0 (l_hat = L_max): no width path
    if uses_grouped_width(layer, a_nh):
        e = expert_outputs(layer, h_nd, a_nh, active_n, logits_ne)
        h_w, gates = layer.width_mix_of(h_nd, delta1, e["gates"])
        y_nd = combine_rows(depth, inverse, h_w, e["y"], e["pos"], e["order"], gates, lam_n)
        return y_nd, hist, e["expert_counts"]
    y_depth = depth.index_select(0, inverse)
    y_width, _, experts_nk = layer._width(h_nd, a_nh)
    if active_n is not None:
        experts_nk = torch.where(active_n.unsqueeze(-1), experts_nk, layer.n_experts)  # not counted
    y_nd = torch.where((lam_n > 0).unsqueeze(-1), fuse(y_width, y_depth, lam_n), y_depth)
    return y_nd, hist, count_values(experts_nk, layer.n_experts)


# --------------------------------------------------------------------------------------- training


def _step_grad_rows(layer, cur: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """H^(l) = F(H^(l-1)) on every row, with a backward for rows [0, n) only (Eq. 9)."""
    u = zero_grad_past(layer.norm(cur), n)  # the ragged GEMMs' garbage input gradients stop here
    g = linear_grad_rows(u, layer.gate_proj.weight, n)
    v = linear_grad_rows(u, layer.up_proj.weight, n)
    y = linear_grad_rows(swiglu_grad_rows(g, v, n), layer.down_proj.weight, n)
    return cur + layer.loop_delta(layer.output_norm(y))


def train_forward(layer, h_nd: torch.Tensor, p_nl: torch.Tensor, loops_n: torch.Tensor):
    """Algorithm 1 with backward only up to each token's sampled depth. p_nl: the straight-through sample
    (forward value one-hot(loops_n)). -> (Y, lambda, router logits, experts)."""
    mode, max_loops = layer.mode, layer.max_loops
    order, inverse, _, live = sort_by_depth(loops_n, max_loops)
    h_nd, p_nl = permute_rows(h_nd, order, inverse), permute_rows(p_nl, order, inverse)
    a_nh = layer.hidden(h_nd)
    delta1 = layer.project_out(a_nh)
    states = [h_nd + delta1]  # H^(1): every token has l_hat >= 1
    for loop in range(2, max_loops + 1):
        states.append(_step_grad_rows(layer, states[-1], live[loop - 2:loop - 1]))
    y_depth = select_loop_states(states, p_nl)  # Eq. 11
    lam_n = width_weight(mode, max_loops, p_nl)
    y_width = logits_ne = experts_nk = None
    if mode != "depth":  # every token: lambda's gradient needs Y_width where its value is 0
        y_width, logits_ne, experts_nk = width_path(layer, h_nd, a_nh, delta1)
    y_nd = fuse(y_width, y_depth, lam_n)
    return permute_rows(y_nd, inverse, order), lam_n, logits_ne, experts_nk
