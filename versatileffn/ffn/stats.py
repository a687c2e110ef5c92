"""Statistics a user can read after a forward: executed loops, mean lambda, virtual-expert load.

Kept as device tensors and accumulated without host syncs; ``summary()`` converts them once.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class FFNStats:
    """Accumulated since the last ``reset_stats()`` of the layer (the LM resets them all at once).

    loop_counts[l-1]: tokens that executed exactly l loops (depth path); expert_counts[e]: top-K
    assignments to expert e (each token counts K times); lambda_sum: sum of the fusion gate over tokens.
    """

    n_tokens: torch.Tensor
    loop_counts: torch.Tensor | None = None
    expert_counts: torch.Tensor | None = None
    lambda_sum: torch.Tensor | None = None

    @classmethod
    def empty(cls, device, max_loops: int | None, n_experts: int | None, has_lambda: bool) -> "FFNStats":
        z = lambda k: torch.zeros(k, dtype=torch.float64, device=device)  # noqa: E731
        return cls(n_tokens=z(()), loop_counts=z(max_loops) if max_loops else None,
                   expert_counts=z(n_experts) if n_experts else None, lambda_sum=z(()) if has_lambda else None)

    def to(self, device) -> "FFNStats":
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return FFNStats(mv(self.n_tokens), mv(self.loop_counts), mv(self.expert_counts), mv(self.lambda_sum))

    def summary(self) -> dict:
        """Plain-Python view: loop histogram, mean loops, mean lambda, expert load fractions."""
        n = float(self.n_tokens)
        out: dict = {"tokens": int(n)}
        if self.loop_counts is not None:
            hist = self.loop_counts.tolist()
            out["loop_histogram"] = [int(c) for c in hist]
            out["mean_loops"] = sum((i + 1) * c for i, c in enumerate(hist)) / n if n else 0.0
            out["frac_below_max_loops"] = (sum(hist[:-1]) / n) if n else 0.0
        if self.lambda_sum is not None:
            out["mean_lambda"] = float(self.lambda_sum) / n if n else 0.0
        if self.expert_counts is not None:
            c = self.expert_counts.tolist()
            tot = sum(c)
            out["expert_load"] = [x / tot if tot else 0.0 for x in c]
            # max load over the balanced load: 1.0 is perfect balance, N means one expert takes everything
            out["expert_imbalance"] = (max(c) * len(c) / tot) if tot else 0.0
        return out
