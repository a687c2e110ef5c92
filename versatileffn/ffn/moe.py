"""MoEFFN: the paper's MoE baseline — the dense sublayer plus N small *real* experts, top-K routed.

Y = H + W_out phi(W_proj u) + sum_{k in Top-K} g_k W_out^k phi(W_proj^k u), u = RMSNorm(H), with a Switch
balance loss. At the paper's 354M shape: 8 experts of hidden 512 add 12.59M parameters per layer.
"""
from __future__ import annotations


import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import attach_aux_loss, check_sublayer_input, fp32_logits, switch_balance_loss, top_k_gates
from .dense import DenseFFN
from .stats import FFNStats


class MoEFFN(DenseFFN):
    def __init__(self, d_model: int, d_hidden: int, n_experts: int = 8, top_k: int = 2, d_expert: int | None = None,
                 balance_loss_coef: float = 1e-5, norm_eps: float = 1e-6, init_std: float = 0.02):
        if not (isinstance(n_experts, int) and n_experts >= 1):
            raise ValueError(f"n_experts must be an integer >= 1; got {n_experts!r}")
        if not (isinstance(top_k, int) and 1 <= top_k <= n_experts):
            raise ValueError(f"top_k must be an integer in [1, n_experts={n_experts}]; got {top_k!r}")
        d_expert = d_expert if d_expert is not None else d_hidden // n_experts
        if d_expert < 1:
            raise ValueError(f"d_expert must be >= 1; got {d_expert!r}")
        self.n_experts, self.top_k, self.d_expert = n_experts, top_k, d_expert
        self.balance_loss_coef = balance_loss_coef
        super().__init__(d_model, d_hidden, norm_eps=norm_eps, init_std=init_std)
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.expert_gate = nn.Parameter(torch.empty(n_experts, d_expert, d_model))   # [N, de, d]
        self.expert_up = nn.Parameter(torch.empty(n_experts, d_expert, d_model))     # [N, de, d]
        self.expert_down = nn.Parameter(torch.empty(n_experts, d_model, d_expert))   # [N, d, de]
        self.reset_expert_parameters()
        self.reset_stats()

    def reset_expert_parameters(self) -> None:
        nn.init.normal_(self.router.weight, std=self.init_std)
        for p in (self.expert_gate, self.expert_up, self.expert_down):
            nn.init.normal_(p, std=self.init_std)

    def reset_stats(self) -> None:
        self.stats = FFNStats.empty(self.down_proj.weight.device, None, self.n_experts, has_lambda=False)
        self.last_aux_loss: torch.Tensor | None = None

    def experts(self, u_nd: torch.Tensor, dense_gates_ne: torch.Tensor) -> torch.Tensor:
        """sum_k g_k expert_k(u): every expert computed, unselected ones weighted by 0 (sync-free, compilable)."""
        gate = torch.einsum("nd,efd->nef", u_nd, self.expert_gate.to(u_nd.dtype))
        up = torch.einsum("nd,efd->nef", u_nd, self.expert_up.to(u_nd.dtype))
        act = F.silu(gate) * up * dense_gates_ne.to(u_nd.dtype).unsqueeze(-1)
        return torch.einsum("nef,edf->nd", act, self.expert_down.to(u_nd.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_sublayer_input(x, self.d_model, self.check_finite, type(self).__name__)
        h_nd = x.reshape(-1, self.d_model)
        logits_ne = fp32_logits(h_nd, self.router.weight)
        _, experts_nk, dense_gates_ne = top_k_gates(logits_ne, self.top_k)
        u_nd = self.norm(h_nd)
        a_nh = F.silu(self.gate_proj(u_nd)) * self.up_proj(u_nd)
        y_nd = h_nd + self.down_proj(a_nh) + self.experts(u_nd, dense_gates_ne)
        self._record(experts_nk, h_nd.shape[0])
        if self.training and torch.is_grad_enabled():
            aux = switch_balance_loss(logits_ne, experts_nk)
            self.last_aux_loss = (self.balance_loss_coef * aux).detach()
            y_nd = attach_aux_loss(y_nd, self.balance_loss_coef * aux)
        return y_nd.view_as(x)

    @torch.no_grad()
    def _record(self, experts_nk: torch.Tensor, n: int) -> None:
        s = self.stats
        if s.n_tokens.device != experts_nk.device:
            self.stats = s = s.to(experts_nk.device)
        s.n_tokens += n
        s.expert_counts += torch.bincount(experts_nk.reshape(-1), minlength=self.n_experts).to(s.expert_counts)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", n_experts={self.n_experts}, top_k={self.top_k}, d_expert={self.d_expert}"
