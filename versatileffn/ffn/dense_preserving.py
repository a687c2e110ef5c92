"""A dense-preserving start for continued pre-training: a deviation from the paper, off by default.

Converted from a dense checkpoint, the paper's layers start far from the dense model they were made from:
the k-Loop baseline applies the dense F k times, VersatileFFN adds a near-random mix of loop counts and a
width path that is a convex mix of 1/N-sized slices, and neither can represent the dense sublayer at step 0.
With ``dense_preserving=True`` (``VersatileFFNConfig`` and ``LoopFFNConfig``) the converted layer computes
EXACTLY the dense sublayer at step 0 and can learn its way to the paper's layer:

* depth (Eq. 9): loops l >= 2 add  s * alpha ⊙ ΔF(H^(l-1))  instead of ΔF(H^(l-1)), with a per-channel
  alpha ∈ R^d that starts at 0 (``LoopGain``). Every H^(l) then equals H^(1) at the start, so
  Y_depth = sum_l p_l H^(l) = H^(1) for ANY loop distribution p (Eq. 11);
* width (Eq. 8): Y_width becomes  gamma * H^(1) + (1 - gamma) * Y_width, i.e. for a pre-norm F
  H + W_out (gamma * a + (1 - gamma) * a ⊙ m): the full FFN mixed with the paper's masked slices, with
  gamma = 1 - s * delta and delta starting at 0 (``WidthMix``);
* so the fused output (Eq. 3) is H^(1), the dense sublayer, for ANY lambda: the paper's randomly initialised
  router and loop head learn from the first step while the function starts where the dense model was.

alpha = 1/s and gamma = 0 give the paper's layer exactly. s (``dense_preserving_scale``, default 20)
reparametrises alpha and delta: AdamW moves a parameter by about the learning rate per step whatever the size
of its gradient, so s is the learning-rate multiplier of the new scalars (at 5e-4, s * alpha moves by ~0.01
per step). Both are 1-D, so the optimizer applies no weight decay to them.

Why this start (issue 17): Relaxed Recursive Transformers (Bae et al., 2024) initialise looped blocks from the
pretrained layers and add per-loop LoRA deltas, and retrofitted recurrence (McLeish et al., 2025) ramps the
recurrence depth with a curriculum; both change the function at the start (the looped block is the pretrained
block applied again), so the model first pays for the perturbation. Zero-initialised residual gates (as in
ReZero, or LoRA's B = 0) keep the dense function exactly and add no FLOPs: one element-wise scale per loop.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class LoopGain(nn.Module):
    """s * alpha ⊙ ΔF for the loops after the first; alpha starts at 0 (loops >= 2 add nothing)."""

    def __init__(self, d_model: int, scale: float):
        super().__init__()
        self.scale = float(scale)
        self.gain = nn.Parameter(torch.zeros(d_model))

    def forward(self, delta: torch.Tensor) -> torch.Tensor:
        return delta * (self.scale * self.gain).to(delta.dtype)

    @torch.no_grad()
    def summary(self) -> dict:
        """The effective step size s * alpha of loops >= 2 (the paper's F: 1 on every channel)."""
        step = self.scale * self.gain.float()
        return {"loop_step_mean": float(step.mean()), "loop_step_abs_mean": float(step.abs().mean())}


class WidthMix(nn.Module):
    """gamma = 1 - s * delta, the share of the full FFN in the width path; delta starts at 0 (gamma = 1)."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = float(scale)
        self.shift = nn.Parameter(torch.zeros(1))  # 1-D, not 0-D: FSDP2 shards parameters along dim 0

    def forward(self) -> torch.Tensor:
        return 1.0 - self.scale * self.shift.float()

    @torch.no_grad()
    def summary(self) -> dict:
        """gamma: 1 = the full FFN, 0 = the paper's sparse top-K slices."""
        return {"width_gamma": float(self())}
