"""A plain, token-by-token VersatileFFN written straight from the paper's equations (fp32), for tests."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rms(h, w, eps):
    return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * w


def ffn_step(layer, h):
    """Eq. 2 with full weights."""
    u = rms(h, layer.norm.weight, layer.norm.eps)
    return h + layer.down_proj.weight @ (F.silu(layer.gate_proj.weight @ u) * (layer.up_proj.weight @ u))


def expert_output(layer, h, k):
    """Eq. 6 + 8: Y_k = H + W_out^(k) phi(W_proj^(k) RMSNorm(H)) with explicit weight slices."""
    lo, hi = layer.config.expert_slices()[k]
    u = rms(h, layer.norm.weight, layer.norm.eps)
    wg, wu, wd = layer.gate_proj.weight[lo:hi], layer.up_proj.weight[lo:hi], layer.down_proj.weight[:, lo:hi]
    return h + wd @ (F.silu(wg @ u) * (wu @ u))


def width_output(layer, h):
    """Eq. 7: top-K over router logits on the un-normalised H, softmax over the K selected."""
    logits = layer.router.weight @ h
    top, idx = torch.topk(logits, layer.top_k)
    g = torch.softmax(top, -1)
    return sum(g[j] * expert_output(layer, h, int(idx[j])) for j in range(layer.top_k))


@torch.no_grad()
def reference_eval(layer, x):
    """Inference per token: l_hat = argmax loop logits (clipped by the cap), exactly l_hat loops, Eq. 13 with
    E[L] = l_hat, width path skipped when lambda = 0."""
    L = layer.max_loops
    out = []
    for h in x.reshape(-1, x.shape[-1]):
        lhat = int((layer.loop_predictor.weight @ h).argmax()) + 1
        if layer.runtime.loop_cap is not None:
            lhat = min(lhat, layer.runtime.loop_cap)
        cur = h
        for _ in range(lhat):
            cur = ffn_step(layer, cur)
        lam = (L - lhat) / L
        out.append(lam * width_output(layer, h) + (1 - lam) * cur if lam > 0 else cur)
    return torch.stack(out).view_as(x)


def reference_train(layer, x, gumbel):
    """Algorithm 1 per token with a given Gumbel sample [n, L]: all L_max loops, straight-through p."""
    L = layer.max_loops
    out = []
    for h, g in zip(x.reshape(-1, x.shape[-1]), gumbel):
        soft = torch.softmax((layer.loop_predictor.weight @ h + g) / layer.tau, -1)
        hard = F.one_hot(soft.argmax(), L).to(soft)
        p = hard + soft - soft.detach()
        states, cur = [], h
        for _ in range(L):
            cur = ffn_step(layer, cur)
            states.append(cur)
        y_depth = sum(p[l] * states[l] for l in range(L))
        lam = (L - sum((l + 1) * p[l] for l in range(L))) / L
        out.append(lam * width_output(layer, h) + (1 - lam) * y_depth)
    return torch.stack(out).view_as(x)
