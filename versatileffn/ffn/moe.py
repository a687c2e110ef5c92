"""MoEFFN: the paper's MoE baseline — the dense sublayer plus N small *real* experts, top-K routed.

Y = H + W_out phi(W_proj u) + sum_{k in Top-K} g_k W_out^k phi(W_proj^k u), u = RMSNorm(H), with a Switch
balance loss. At the paper's 354M shape: 8 experts of hidden 512 add 12.59M parameters per layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import require
from .common import (FFNBaseConfig, attach_aux_loss, check_sublayer_input, LogitHead, swiglu_flops,
                     switch_balance_loss, top_k_gates)
from .dense import DenseFFN
from .fast import grouped_mm, grouped_mm_supported, is_recomputing, sort_by_expert
from .stats import FFNStats


@dataclass
class MoEFFNConfig(FFNBaseConfig):
    """The MoE baseline: ``n_experts`` real experts of hidden ``d_expert`` (default d_hidden // n_experts), top-K."""

    kind: str = "moe"
    n_experts: int = 8
    top_k: int = 2
    d_expert: int | None = None
    balance_loss_coef: float = 1e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        require(isinstance(self.n_experts, int) and self.n_experts >= 1, "ffn.n_experts", "an integer >= 1",
                self.n_experts)
        require(isinstance(self.top_k, int) and 1 <= self.top_k <= self.n_experts, "ffn.top_k",
                f"an integer in [1, n_experts={self.n_experts}]", self.top_k)
        require(self.balance_loss_coef >= 0, "ffn.balance_loss_coef", ">= 0", self.balance_loss_coef)
        if self.has_shape or self.d_expert is not None:
            require(self.expert_dim >= 1, "ffn.d_expert", ">= 1", self.expert_dim)

    @property
    def expert_dim(self) -> int:
        return self.d_expert if self.d_expert is not None else self.d_hidden // self.n_experts

    def build(self) -> "MoEFFN":
        self.require_shape()
        return MoEFFN(self.d_model, self.d_hidden, n_experts=self.n_experts, top_k=self.top_k,
                      d_expert=self.expert_dim, balance_loss_coef=self.balance_loss_coef, norm_eps=self.norm_eps,
                      init_std=self.init_std)


def moe_flops(config: MoEFFNConfig) -> int:
    """FLOPs per token of one layer: the dense FFN plus top-K experts of hidden d_expert."""
    return swiglu_flops(config.d_model, config.d_hidden) + config.top_k * swiglu_flops(config.d_model,
                                                                                          config.expert_dim)


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
        # runtime knob: "auto" (grouped GEMMs over expert-sorted tokens where torch._grouped_mm runs, i.e.
        # CUDA sm_90+ bf16; dense einsum elsewhere), "grouped" or "dense" (every expert on every token)
        self.expert_impl = "auto"
        super().__init__(d_model, d_hidden, norm_eps=norm_eps, init_std=init_std)
        self.router = LogitHead(d_model, n_experts)
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

    def experts_grouped(self, u_nd: torch.Tensor, gates_nk: torch.Tensor, experts_nk: torch.Tensor) -> torch.Tensor:
        """The same sum over only the K selected experts: assignments sorted by expert, one grouped GEMM per
        projection (sync-free on CUDA), outputs scaled by their gate and added back per token."""
        order, token_m, ends_e = sort_by_expert(experts_nk, self.n_experts)
        dt = _compute_dtype(u_nd)
        u_md = u_nd.index_select(0, token_m).to(dt)
        gate_mf = grouped_mm(u_md, self.expert_gate.to(dt).transpose(1, 2), ends_e)  # [N, d, de] views
        up_mf = grouped_mm(u_md, self.expert_up.to(dt).transpose(1, 2), ends_e)
        y_md = grouped_mm(F.silu(gate_mf) * up_mf, self.expert_down.to(dt).transpose(1, 2), ends_e)
        y_md = y_md * gates_nk.reshape(-1).index_select(0, order).to(dt).unsqueeze(-1)
        return torch.zeros_like(u_nd, dtype=dt).index_add(0, token_m, y_md)

    def _use_grouped(self, u_nd: torch.Tensor) -> bool:
        if self.expert_impl not in ("auto", "grouped", "dense"):
            raise ValueError(f"expert_impl must be 'auto', 'grouped' or 'dense'; got {self.expert_impl!r}")
        if self.expert_impl == "auto":  # under bf16 autocast the fp32 residual stream is cast for the GEMMs
            return grouped_mm_supported(u_nd.to(_compute_dtype(u_nd)))
        return self.expert_impl == "grouped"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_sublayer_input(x, self.d_model, self.check_finite, type(self).__name__)
        h_nd = x.reshape(-1, self.d_model)
        logits_ne = self.router(h_nd)
        gates_nk, experts_nk, dense_gates_ne = top_k_gates(logits_ne, self.top_k)
        u_nd = self.norm(h_nd)
        a_nh = F.silu(self.gate_proj(u_nd)) * self.up_proj(u_nd)
        if self._use_grouped(u_nd):
            y_experts = self.experts_grouped(u_nd, gates_nk, experts_nk)
        else:
            y_experts = self.experts(u_nd, dense_gates_ne)
        y_nd = h_nd + self.down_proj(a_nh) + y_experts
        self._record(experts_nk, h_nd.shape[0])
        if self.training and torch.is_grad_enabled():
            aux = switch_balance_loss(logits_ne, experts_nk)
            self.last_aux_loss = (self.balance_loss_coef * aux).detach()
            y_nd = attach_aux_loss(y_nd, self.balance_loss_coef * aux)
        return y_nd.view_as(x)

    @torch.no_grad()
    def _record(self, experts_nk: torch.Tensor, n: int) -> None:
        if is_recomputing():  # activation checkpointing re-runs the forward: count each token once
            return
        s = self.stats
        if s.n_tokens.device != experts_nk.device:
            self.stats = s = s.to(experts_nk.device)
        s.n_tokens += n
        flat = experts_nk.reshape(-1)
        s.expert_counts.index_add_(0, flat, torch.ones_like(flat, dtype=s.expert_counts.dtype))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", n_experts={self.n_experts}, top_k={self.top_k}, d_expert={self.d_expert}"


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a matmul on x runs in: the autocast dtype where autocast is on for x's device."""
    dev = x.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
