"""LoopFFN: the paper's k-Loop baseline (Table 1), the dense sublayer applied k times with the same weights."""
from __future__ import annotations

import torch

from .common import check_sublayer_input
from .dense import DenseFFN


class LoopFFN(DenseFFN):
    def __init__(self, d_model: int, d_hidden: int, n_loops: int, norm_eps: float = 1e-6, init_std: float = 0.02):
        if n_loops < 1:
            raise ValueError(f"n_loops must be an integer >= 1; got {n_loops!r}")
        super().__init__(d_model, d_hidden, norm_eps=norm_eps, init_std=init_std)
        self.n_loops = n_loops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_sublayer_input(x, self.d_model, self.check_finite, type(self).__name__)
        for _ in range(self.n_loops):
            x = self.step(x)
        return x

    def extra_repr(self) -> str:
        return super().extra_repr() + f", n_loops={self.n_loops}"
