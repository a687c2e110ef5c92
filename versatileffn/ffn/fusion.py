"""Eq. 12-13 and 3: how much of the width path each token's output takes, for every mode of the layer.

The one place that knows the modes' fusion rule; the layer, its engine, the authors-style reference and the
analysis tools all call it.
"""
from __future__ import annotations

import torch


def width_weight(mode: str, max_loops: int, depth: torch.Tensor | None) -> torch.Tensor | None:
    """lambda per token [n] (fp32) in Y = lambda Y_width + (1 - lambda) Y_depth (Eq. 3).

    depth: the training forward's straight-through p [n, L_max] (floating; Eq. 12, E[L] = sum_l l p_l, whose
    forward value is l_hat and whose gradient is that of the soft p) or the inference loop counts l_hat [n]
    (integer; E[L] = l_hat).
    gated: Eq. 13, lambda = (L_max - E[L]) / L_max, 0 for tokens that run every loop; ungated (Table 3):
    0.5; width / depth (Table 3): None, the output is that one path.
    """
    if mode in ("width", "depth"):
        return None
    if mode not in ("gated", "ungated"):
        raise ValueError(f"mode must be 'gated', 'ungated', 'width' or 'depth'; got {mode!r}")
    n = depth.shape[0]
    if mode == "ungated":
        return torch.full((n,), 0.5, device=depth.device)
    if depth.is_floating_point():
        steps = torch.arange(1, max_loops + 1, device=depth.device, dtype=depth.dtype)
        expected = (depth * steps).sum(-1)  # Eq. 12
    else:
        expected = depth.float()
    return ((max_loops - expected) / max_loops).float()  # Eq. 13


def fuse(y_width: torch.Tensor | None, y_depth: torch.Tensor | None, lam: torch.Tensor | None) -> torch.Tensor:
    """Eq. 3 as one lerp kernel (fp32 arithmetic inside); a mode without fusion returns its one path."""
    if lam is None:
        return y_width if y_depth is None else y_depth
    return torch.lerp(y_depth, y_width, lam.to(y_depth.dtype).unsqueeze(-1))
