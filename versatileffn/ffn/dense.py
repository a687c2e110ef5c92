"""DenseFFN: the SwiGLU FFN sublayer of a pre-norm block, the substrate every other FFN here reuses.

F(H) = H + W_out phi(W_proj RMSNorm(H))  (Eq. 2), with phi(u) = silu(gate) * up (SwiGLU), no biases.
Weights use the ``nn.Linear`` layouts of Hugging Face Llama's gate_proj / up_proj / down_proj.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import RMSNorm, check_sublayer_input


class DenseFFN(nn.Module):
    def __init__(self, d_model: int, d_hidden: int, norm_eps: float = 1e-6, init_std: float = 0.02):
        super().__init__()
        self.d_model, self.d_hidden, self.init_std = d_model, d_hidden, init_std
        self.norm = RMSNorm(d_model, eps=norm_eps)
        self.gate_proj = nn.Linear(d_model, d_hidden, bias=False)
        self.up_proj = nn.Linear(d_model, d_hidden, bias=False)
        self.down_proj = nn.Linear(d_hidden, d_model, bias=False)
        self.check_finite = False
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.gate_proj, self.up_proj, self.down_proj):
            nn.init.normal_(lin.weight, std=self.init_std)
        nn.init.ones_(self.norm.weight)

    def hidden(self, h_nd: torch.Tensor) -> torch.Tensor:
        """phi(W_proj RMSNorm(H)) -> [n, d_hidden]: the activations every path of every FFN kind starts from."""
        u = self.norm(h_nd)
        return F.silu(self.gate_proj(u)) * self.up_proj(u)

    def step(self, h: torch.Tensor) -> torch.Tensor:
        """One application of F (Eq. 2) on any [..., d_model] tensor."""
        return h + self.down_proj(self.hidden(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_sublayer_input(x, self.d_model, self.check_finite, type(self).__name__)
        return self.step(x)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, d_hidden={self.d_hidden}"
