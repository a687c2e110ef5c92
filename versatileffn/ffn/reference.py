"""The authors' way of computing VersatileFFN, re-implemented from the paper's description (Sec. 3, Alg. 1).

Used as the plain reference in tests and as the yardstick in ``benchmarks/bench_ffn.py``; never in
training. It computes the same function as ``VersatileFFN`` with the costs the paper's description implies:
* training: all L_max loops of every token stacked into [n, d, L] and contracted with the one-hot p;
* width path: a loop over the N virtual experts; each gathers its weight slices with index tensors (a
  copy of W_proj / W_out rows), runs the full sublayer on its tokens, and scatters back with index_add;
* inference: every token runs the batch's maximum predicted loop count, then picks its own H^(l_hat);
  the width path runs for tokens with lambda > 0.
The Gumbel sample comes from ``layer._loop_sample``, so a fixed seed gives the sample the layer draws;
lambda comes from ``fusion.width_weight``, the layer's own Eq. 12-13.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import top_k_gates
from .fusion import width_weight
from .versatile import VersatileFFN


def _expert_index(layer: VersatileFFN) -> list[torch.Tensor]:
    dev = layer.down_proj.weight.device
    return [torch.arange(lo, hi, device=dev) for lo, hi in layer.config.expert_slices()]


def authors_width(layer: VersatileFFN, h_nd: torch.Tensor) -> torch.Tensor:
    """Eq. 6-8: sum_k g_k Y_k with Y_k = H + W_out^(k) phi(W_proj^(k) RMSNorm(H)), expert by expert."""
    logits_ne = layer.router(h_nd)
    gates_nk, experts_nk, _ = top_k_gates(logits_ne, layer.top_k)
    out_nd = torch.zeros_like(h_nd)
    u_nd = layer.norm(h_nd)
    for e, idx in enumerate(_expert_index(layer)):
        token, slot = torch.where(experts_nk == e)
        if token.numel() == 0:
            continue
        w_gate = layer.gate_proj.weight.index_select(0, idx)   # [d_expert, d] copies, as index tensors give
        w_up = layer.up_proj.weight.index_select(0, idx)
        w_down = layer.down_proj.weight.index_select(1, idx)    # [d, d_expert]
        u = u_nd[token]
        y = h_nd[token] + F.linear(F.silu(F.linear(u, w_gate)) * F.linear(u, w_up), w_down)
        out_nd = out_nd.index_add(0, token, y * gates_nk[token, slot].to(y.dtype).unsqueeze(-1))
    if layer.width_mix is not None:  # the dense-preserving start mixes in the full FFN (ffn/dense_preserving.py)
        gamma = layer.width_mix().to(out_nd.dtype)
        out_nd = gamma * layer.step(h_nd) + (1 - gamma) * out_nd
    return out_nd


def authors_train_forward(layer: VersatileFFN, x: torch.Tensor) -> torch.Tensor:
    """Algorithm 1 in its stacked form (gated or ungated mode). x: [B, T, d]."""
    h_nd = x.reshape(-1, layer.d_model)
    L = layer.max_loops
    p_nl, _ = layer._loop_sample(h_nd)
    states, cur = [], h_nd
    for loop in range(L):
        cur = layer.step(cur) if loop == 0 else layer.loop_step(cur)
        states.append(cur)
    y_depth = (torch.stack(states, dim=-1) * p_nl.to(h_nd.dtype).unsqueeze(1)).sum(-1)
    lam = width_weight(layer.mode, L, p_nl).to(h_nd.dtype).unsqueeze(-1)
    y_nd = lam * authors_width(layer, h_nd) + (1 - lam) * y_depth
    return y_nd.view_as(x)


@torch.no_grad()
def authors_eval_forward(layer: VersatileFFN, x: torch.Tensor, loops: torch.Tensor | None = None) -> torch.Tensor:
    """Inference with batch-max loops: every token runs max(l_hat) loops, then takes its own H^(l_hat).
    loops: per-token loop counts instead of the loop head's (as ``layer(x, loops=...)``). Gated or ungated."""
    h_nd = x.reshape(-1, layer.d_model)
    L = layer.max_loops
    loops_n = layer._predicted_loops(h_nd) if loops is None else loops.reshape(-1).to(h_nd.device)
    states, cur = [], h_nd
    for loop in range(int(loops_n.max())):
        cur = layer.step(cur) if loop == 0 else layer.loop_step(cur)
        states.append(cur)
    y_depth = torch.stack(states, dim=-1).gather(-1, (loops_n - 1).view(-1, 1, 1).expand(-1, layer.d_model, 1))
    y_depth = y_depth.squeeze(-1)
    lam = width_weight(layer.mode, L, loops_n).to(h_nd.dtype).unsqueeze(-1)
    active = lam.squeeze(-1) > 0
    y_width = torch.zeros_like(h_nd)
    if bool(active.any()):
        y_width[active] = authors_width(layer, h_nd[active])
    return (lam * y_width + (1 - lam) * y_depth).view_as(x)
