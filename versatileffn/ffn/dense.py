"""DenseFFN: the SwiGLU FFN sublayer of a pre-norm block, the substrate every other FFN here reuses.

F(H) = H + W_out phi(W_proj RMSNorm(H))  (Eq. 2), with phi(u) = silu(gate) * up (SwiGLU), no biases.
Weights use the ``nn.Linear`` layouts of Hugging Face Llama's gate_proj / up_proj / down_proj.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import FFNBaseConfig, RMSNorm, check_sublayer_input, swiglu_flops


@dataclass
class DenseFFNConfig(FFNBaseConfig):
    """The dense SwiGLU sublayer (the paper's Base): nothing to choose beyond the shape."""

    kind: str = "dense"

    def build(self) -> "DenseFFN":
        self.require_shape()
        return DenseFFN(self.d_model, self.d_hidden, norm_eps=self.norm_eps, init_std=self.init_std)


def dense_flops(config: DenseFFNConfig) -> int:
    """FLOPs per token of one layer (the paper's Base)."""
    return swiglu_flops(config.d_model, config.d_hidden)


class DenseFFN(nn.Module):
    def __init__(self, d_model: int, d_hidden: int, norm_eps: float = 1e-6, init_std: float = 0.02):
        for name, value in (("d_model", d_model), ("d_hidden", d_hidden)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{type(self).__name__}: {name} must be an integer >= 1; got {value!r} (an FFN config "
                                 "inside a ModelConfig gets its shape from the model: ModelConfig.ffn_layer_config())")
        super().__init__()
        self.d_model, self.d_hidden, self.init_std = d_model, d_hidden, init_std
        self.norm = RMSNorm(d_model, eps=norm_eps)
        self.gate_proj = nn.Linear(d_model, d_hidden, bias=False)
        self.up_proj = nn.Linear(d_model, d_hidden, bias=False)
        self.down_proj = nn.Linear(d_hidden, d_model, bias=False)
        self.check_finite = False
        # dense-preserving start (ffn/dense_preserving.py): scales what loops >= 2 add; None = the paper's F
        self.loop_gain: nn.Module | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.gate_proj, self.up_proj, self.down_proj):
            nn.init.normal_(lin.weight, std=self.init_std)
        nn.init.ones_(self.norm.weight)

    def hidden(self, h_nd: torch.Tensor) -> torch.Tensor:
        """phi(W_proj RMSNorm(H)) -> [n, d_hidden]: the activations every path of every FFN kind starts from."""
        u = self.norm(h_nd)
        return F.silu(self.gate_proj(u)) * self.up_proj(u)

    def output_norm(self, y: torch.Tensor) -> torch.Tensor:
        """The norm F applies after W_out: the identity for this pre-norm F (a post-norm sublayer, HF OLMo2's,
        owns and applies its norm here; the projection stays a plain ``nn.Linear`` that wrappers such as PEFT
        may replace)."""
        return y

    def project_out(self, a: torch.Tensor) -> torch.Tensor:
        """ΔF from the activations: output_norm(W_out a), what one application of F adds to H (Eq. 2)."""
        return self.output_norm(self.down_proj(a))

    def step(self, h: torch.Tensor) -> torch.Tensor:
        """One application of F (Eq. 2) on any [..., d_model] tensor."""
        return h + self.project_out(self.hidden(h))

    def loop_delta(self, delta: torch.Tensor) -> torch.Tensor:
        """What a loop after the first adds (Eq. 9): ΔF, or s * alpha ⊙ ΔF with a dense-preserving start."""
        return delta if self.loop_gain is None else self.loop_gain(delta)

    def loop_step(self, h: torch.Tensor) -> torch.Tensor:
        """F applied again, for loops l >= 2 (Eq. 9): ``step`` unless the start is dense-preserving."""
        return h + self.loop_delta(self.project_out(self.hidden(h)))

    def start_summary(self) -> dict:
        """The dense-preserving start's learned scales (``loop_step_*``, ``width_gamma``); {} for the paper's F."""
        out: dict = {}
        for part in (self.loop_gain, getattr(self, "width_mix", None)):
            if part is not None:
                out.update(part.summary())
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_sublayer_input(x, self.d_model, self.check_finite, type(self).__name__)
        return self.step(x)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, d_hidden={self.d_hidden}"
