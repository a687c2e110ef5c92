"""Driving the FFN sublayers of any model: statistics, aux loss, loop cap, temperature, parameter counts.

The functions work on any ``nn.Module`` holding FFN sublayers (our LM, a converted Hugging Face model, a
wrapper around either); ``FFNControl`` is the same API as methods, shared by ``VersatileLM`` and the converted
HF models, which is all the trainer, the evaluator and the analysis call.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .dense import DenseFFN
from .temperature import set_temperature_step
from .versatile import VersatileFFN


def ffn_layers(model: nn.Module) -> list[DenseFFN]:
    """Every FFN sublayer in ``model.modules()`` order (every kind builds on ``DenseFFN``)."""
    return [m for m in model.modules() if isinstance(m, DenseFFN)]


def versatile_layers(model: nn.Module) -> list[VersatileFFN]:
    return [m for m in ffn_layers(model) if isinstance(m, VersatileFFN)]


def set_inference_loop_cap(model: nn.Module, cap: int | None) -> None:
    """Clip every token's predicted loop count at inference (None: no cap) — trades quality for compute."""
    if cap is not None and (not isinstance(cap, int) or cap < 1):
        raise ValueError(f"inference loop cap must be None or an integer >= 1; got {cap!r}")
    for m in versatile_layers(model):
        m.runtime.loop_cap = cap


def reset_ffn_stats(model: nn.Module) -> None:
    for m in ffn_layers(model):
        if hasattr(m, "reset_stats"):  # the dense and k-loop sublayers keep no statistics
            m.reset_stats()


class FFNControl:
    """The FFN driver API of ``VersatileLM`` and the converted Hugging Face models. A subclass provides
    ``ffn_layers()`` (its sublayers in layer order) and ``ffn_model_config()``."""

    def ffn_layers(self) -> list[nn.Module]:
        raise NotImplementedError

    def ffn_model_config(self):
        """The ``ModelConfig`` describing the FFNs (shape, depth, kind and options), for FLOP accounting."""
        raise NotImplementedError

    def aux_loss(self) -> torch.Tensor | None:
        """Sum of the scaled auxiliary losses of the last training forward (detached), or None."""
        vals = [m.last_aux_loss for m in self.ffn_layers() if getattr(m, "last_aux_loss", None) is not None]
        return torch.stack(vals).sum() if vals else None

    def versatile_layers(self) -> list[VersatileFFN]:
        return [m for m in self.ffn_layers() if isinstance(m, VersatileFFN)]

    def set_temperature_step(self, step: int) -> None:
        """Every VersatileFFN's Gumbel temperature for optimizer step ``step`` (the schedule, Sec. 3.3)."""
        set_temperature_step(self, step)

    def set_inference_loop_cap(self, cap: int | None) -> None:
        set_inference_loop_cap(self, cap)

    def reset_ffn_stats(self) -> None:
        reset_ffn_stats(self)

    def ffn_stats(self) -> list[dict]:
        """Per-layer statistics since the last reset (loop histogram, mean loops/lambda, expert load), and a
        dense-preserving start's learned scales."""
        return [{**(m.stats.summary() if hasattr(m, "stats") else {}),
                 **(m.start_summary() if hasattr(m, "start_summary") else {})} for m in self.ffn_layers()]

    def mean_loops(self) -> float | None:
        """Executed loops per token since the last reset, averaged over the layers that loop (None without one)."""
        per_layer = [s["mean_loops"] for s in self.ffn_stats() if "mean_loops" in s]
        return sum(per_layer) / len(per_layer) if per_layer else None

    def ffn_params(self) -> int:
        return sum(p.numel() for m in self.ffn_layers() for p in m.parameters())

    def params_added_over_dense(self) -> int:
        """Parameters beyond those of dense SwiGLU sublayers of the same shapes (router, loop head, MoE experts)."""
        with torch.device("meta"):  # count without allocating
            dense = sum(p.numel() for m in self.ffn_layers() for p in DenseFFN(m.d_model, m.d_hidden).parameters())
        return self.ffn_params() - dense
