"""LoopFFN: the paper's k-Loop baseline (Table 1), the dense sublayer applied k times with the same weights."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import require
from .common import FFNBaseConfig, check_sublayer_input, swiglu_flops
from .dense import DenseFFN
from .dense_preserving import LoopGain


@dataclass
class LoopFFNConfig(FFNBaseConfig):
    """k-Loop: the dense sublayer applied ``n_loops`` times with the same weights."""

    kind: str = "loop"
    n_loops: int = 2
    # a deviation from the paper (ffn/dense_preserving.py): loops >= 2 add s * alpha * ΔF, alpha = 0 at the start
    dense_preserving: bool = False
    dense_preserving_scale: float = 20.0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(isinstance(self.n_loops, int) and self.n_loops >= 1, "ffn.n_loops", "an integer >= 1", self.n_loops)
        require(self.dense_preserving_scale > 0, "ffn.dense_preserving_scale", "> 0", self.dense_preserving_scale)

    def build(self) -> "LoopFFN":
        self.require_shape()
        return LoopFFN(self.d_model, self.d_hidden, n_loops=self.n_loops, norm_eps=self.norm_eps,
                       init_std=self.init_std,
                       dense_preserving_scale=self.dense_preserving_scale if self.dense_preserving else None)


def loop_flops(config: LoopFFNConfig) -> int:
    """FLOPs per token of one layer: k full FFN applications."""
    return config.n_loops * swiglu_flops(config.d_model, config.d_hidden)


class LoopFFN(DenseFFN):
    def __init__(self, d_model: int, d_hidden: int, n_loops: int, norm_eps: float = 1e-6, init_std: float = 0.02,
                 dense_preserving_scale: float | None = None):
        """dense_preserving_scale: None for the paper's k-Loop; s > 0 for the dense-preserving start."""
        if n_loops < 1:
            raise ValueError(f"n_loops must be an integer >= 1; got {n_loops!r}")
        super().__init__(d_model, d_hidden, norm_eps=norm_eps, init_std=init_std)
        self.n_loops = n_loops
        if dense_preserving_scale is not None and n_loops > 1:
            self.loop_gain = LoopGain(d_model, dense_preserving_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_sublayer_input(x, self.d_model, self.check_finite, type(self).__name__)
        x = self.step(x)
        for _ in range(self.n_loops - 1):
            x = self.loop_step(x)
        return x

    def extra_repr(self) -> str:
        return super().extra_repr() + f", n_loops={self.n_loops}"
