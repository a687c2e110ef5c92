"""Section ``check``: every fast path against the plain references on fresh random inputs (bf16 on the GPU):
exact against full depth gradients, the engine's eval forward against the plain path and the authors' batch-max
inference for each forced loop mix, the grouped MoE against its dense einsum."""
from __future__ import annotations

import torch

from ..ffn.reference import authors_eval_forward, authors_train_forward
from .common import LOOP_MIXES, Bench, make_layers, mix_loops
from .timing import rel_err


def section_check(b: Bench) -> dict:
    s, dev = b.shape, b.device
    n = s.tokens[-1]
    layers = make_layers(b)
    vffn = layers["vffn"]
    x = torch.randn(1, n, s.d_model, device=dev, dtype=b.dtype)
    gy = torch.randn_like(x)
    res: dict = {}
    grads = {}
    for mode in ("full", "exact"):
        vffn.runtime.depth_grad = mode
        xg = x.clone().requires_grad_()
        for p in vffn.parameters():
            p.grad = None
        torch.manual_seed(3)
        y = vffn(xg)
        y.backward(gy)
        grads[mode] = (y.detach(), {k: p.grad.clone() for k, p in vffn.named_parameters()}, xg.grad.clone())
    (y_f, g_f, x_f), (y_e, g_e, x_e) = grads["full"], grads["exact"]
    res["exact_vs_full_out"] = rel_err(y_e, y_f)
    res["exact_vs_full_grad_max"] = max([rel_err(g_e[k], g_f[k]) for k in g_f] + [rel_err(x_e, x_f)])
    with torch.no_grad():
        vffn.runtime.depth_grad = "auto"
        torch.manual_seed(4)
        ours = vffn(x)
        torch.manual_seed(4)
        res["train_vs_authors_out"] = rel_err(ours, authors_train_forward(vffn, x))
        vffn.eval()
        for name, probs in LOOP_MIXES.items():
            loops = mix_loops(probs, n, dev).view(1, n)
            vffn.runtime.impl = "engine"
            engine_y = vffn(x, loops=loops)
            vffn.runtime.impl = "plain"
            res[f"eval_{name}_engine_vs_plain"] = rel_err(engine_y, vffn(x, loops=loops))
            res[f"eval_{name}_vs_authors"] = rel_err(engine_y, authors_eval_forward(vffn, x, loops))
        vffn.runtime.impl = "auto"
        vffn.train()
        moe = layers["moe"]
        moe.expert_impl = "dense"
        ref = moe(x)
        moe.expert_impl = "grouped"
        res["moe_grouped_vs_dense"] = rel_err(moe(x), ref)
        moe.expert_impl = "auto"
    tol = 1e-5 if b.dtype == torch.float32 else 2e-2
    res["tolerance"] = tol
    res["ok"] = all(v < tol for k, v in res.items() if k not in ("tolerance",))
    return res


def summary(sec: dict) -> list[str]:
    worst = max((v for k, v in sec.items() if k not in ("tolerance", "ok")), default=0.0)
    return [f"check: {'ok' if sec['ok'] else 'FAILED'} (largest relative error {worst:.2e}, tolerance "
            f"{sec['tolerance']:.0e})"]
