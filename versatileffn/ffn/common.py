"""Pieces shared by the FFN family: the config base, RMSNorm, top-K routing, the Switch balance loss, aux-loss
attachment, the SwiGLU FLOP count."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import OMIT_IF_NONE, require

SHAPE_FIELDS = ("d_model", "d_hidden", "norm_eps", "init_std")


# Parameters of an FFN sublayer that a dense checkpoint cannot have, and that a conversion from a dense FFN
# initialises fresh (a regex over names inside the sublayer): VersatileFFN's router and loop head, the dense-
# preserving start's scales (zeros), the MoE baseline's real experts.
FRESH_AFTER_CONVERSION = r"(router\.weight|loop_predictor\.weight|loop_gain\.gain|width_mix\.shift|expert_(gate|up|down))"


@dataclass
class FFNBaseConfig:
    """The fields every FFN kind's config shares: the sublayer's shape.

    A standalone config names d_model and d_hidden (norm_eps / init_std then default to 1e-6 / 0.02). Inside a
    ``ModelConfig`` all four stay unset: the model fills them from its own fields when it builds its blocks
    (``ModelConfig.ffn_layer_config``), so no option is ever copied field by field. Each kind adds its options,
    its ``kind`` name and ``build()`` in its own module; ``ffn/registry.py`` lists the kinds.
    """

    d_model: int | None = field(default=None, metadata=OMIT_IF_NONE)
    d_hidden: int | None = field(default=None, metadata=OMIT_IF_NONE)
    norm_eps: float | None = field(default=None, metadata=OMIT_IF_NONE)
    init_std: float | None = field(default=None, metadata=OMIT_IF_NONE)

    def __post_init__(self) -> None:
        kind = type(self).__dataclass_fields__["kind"].default  # each kind's config fixes its own name
        require(self.kind == kind, "kind", f"{kind!r} for {type(self).__name__}", self.kind)
        if not self.has_shape:
            return
        require(isinstance(self.d_model, int) and self.d_model >= 1, "d_model", "an integer >= 1", self.d_model)
        require(isinstance(self.d_hidden, int) and self.d_hidden >= 1, "d_hidden", "an integer >= 1", self.d_hidden)
        self.norm_eps = 1e-6 if self.norm_eps is None else self.norm_eps
        self.init_std = 0.02 if self.init_std is None else self.init_std
        require(self.norm_eps > 0, "norm_eps", "> 0", self.norm_eps)

    @property
    def has_shape(self) -> bool:
        return self.d_model is not None or self.d_hidden is not None

    def shaped(self, d_model: int, d_hidden: int, norm_eps: float, init_std: float):
        """This config with the sublayer's shape set (validated as a whole)."""
        return dataclasses.replace(self, d_model=d_model, d_hidden=d_hidden, norm_eps=norm_eps, init_std=init_std)

    def unshaped(self):
        """This config's options only, as a ``ModelConfig`` holds them."""
        return dataclasses.replace(self, **dict.fromkeys(SHAPE_FIELDS))

    def require_shape(self) -> None:
        if not self.has_shape:
            raise ValueError(f"{type(self).__name__} has no shape: set d_model and d_hidden (inside a ModelConfig "
                             "the model sets them: build it with ModelConfig.ffn_layer_config().build())")


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32 and cast back, as OLMo2 does (the variance of bf16 inputs is fragile)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # one fused op instead of ~6 elementwise launches (eager GPU runs are launch-bound)
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return normed.to(x.dtype) * self.weight.to(x.dtype)


def swiglu_flops(d_model: int, d_hidden: int) -> int:
    """FLOPs per token of one SwiGLU FFN application (Eq. 2): gate, up and down projections, 2 per multiply-add."""
    return 2 * 3 * d_model * d_hidden


def check_sublayer_input(x: torch.Tensor, d_model: int, check_finite: bool, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} expects a torch.Tensor; got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"{name} expects x of shape [batch, seq, d_model={d_model}] (rank 3); "
                         f"got rank {x.dim()} with shape {tuple(x.shape)}")
    if x.shape[-1] != d_model:
        raise ValueError(f"{name} expects the last dimension of x to be d_model={d_model}; got {x.shape[-1]}")
    if check_finite and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} received non-finite input (NaN or Inf); check_finite=True is the debug mode "
                         "that catches this")


class LogitHead(nn.Linear):
    """A router / loop head: a bias-free linear map whose logits are computed in fp32, even under bf16 autocast
    (small logit gaps decide discrete choices). Called as a module, never read as ``.weight``, so wrappers that
    act on a module call see it: accelerate's offload hooks load its weight, PEFT adapters add their delta."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__(d_in, d_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return F.linear(x.float(), self.weight.float())  # x.float() is free when the caller made one fp32 copy


def top_k_gates(logits_ne: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-K routing (Eq. 7): softmax over the K selected logits.

    Returns (gates_nk, experts_nk, dense_gates_ne) where dense_gates_ne scatters the K gates into an
    [n, N] matrix (zeros elsewhere) — the form the masked width path and the statistics need.
    """
    top_logits_nk, experts_nk = torch.topk(logits_ne, top_k, dim=-1)
    gates_nk = torch.softmax(top_logits_nk, dim=-1)
    dense_gates_ne = torch.zeros_like(logits_ne).scatter(-1, experts_nk, gates_nk)
    return gates_nk, experts_nk, dense_gates_ne


def switch_balance_loss(logits_ne: torch.Tensor, experts_nk: torch.Tensor) -> torch.Tensor:
    """Switch Transformer load-balancing loss, N * sum_i f_i * P_i (Fedus et al. 2022, Eq. 4).

    f_i: fraction of the n*K routing assignments that went to expert i (not differentiable);
    P_i: mean over tokens of the full softmax probability of expert i. Perfect balance gives 1.0.
    """
    n_experts = logits_ne.shape[-1]
    probs_ne = torch.softmax(logits_ne.float(), dim=-1)
    counts_e = torch.zeros(n_experts, device=logits_ne.device, dtype=torch.float32)
    counts_e = counts_e.scatter_add(0, experts_nk.reshape(-1), torch.ones(experts_nk.numel(), device=logits_ne.device))
    frac_e = counts_e / max(experts_nk.numel(), 1)
    return n_experts * (frac_e * probs_ne.mean(0)).sum()


class _AttachAuxLoss(torch.autograd.Function):
    """Forward: return y unchanged. Backward: also send d(aux)/d(aux) = 1 into the aux-loss graph.

    This makes the auxiliary loss part of whatever objective is back-propagated through y, so a training
    loop cannot forget it (the pattern of DeepSeek-MoE and OLMo-core). Its value is reported separately.
    """

    @staticmethod
    def forward(ctx, y: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        ctx.aux_dtype, ctx.aux_shape = aux.dtype, aux.shape
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        return grad_y, torch.ones(ctx.aux_shape, dtype=ctx.aux_dtype, device=grad_y.device)


def attach_aux_loss(y: torch.Tensor, scaled_aux: torch.Tensor) -> torch.Tensor:
    if not (torch.is_grad_enabled() and scaled_aux.requires_grad):
        return y
    return _AttachAuxLoss.apply(y, scaled_aux)
