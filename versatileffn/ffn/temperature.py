"""The Gumbel temperature of the depth path's loop sample (Sec. 3.3) as a schedule of the optimizer step.

tau(step) = max(tau_end, tau_start * tau_decay**step) (``VersatileFFNConfig.temperature_at``). Nothing anneals in
place, so resuming needs only the step. One place applies it: ``attach_temperature_schedule`` registers a
per-step optimizer hook (torchtitan's way of updating layer state after ``optimizer.step()``), which the trainer
installs; the Hugging Face ``Trainer`` callback (``hf/training.py``) sets it from ``state.global_step``.
``set_temperature_step(model, step)`` sets every layer by hand (tests, experiments, benchmarks).
"""
from __future__ import annotations

import itertools
import re

import torch
from torch.utils.hooks import RemovableHandle

from .versatile import VersatileFFN

# weights saved while tau was an annealed buffer carry it under this name; it is derived from the step now
SAVED_TAU_KEY = re.compile(r"(^|\.)tau$")


def set_temperature_step(model: torch.nn.Module, step: int) -> None:
    """Set the tau of every VersatileFFN in ``model`` (a layer, our LM, a converted HF model) for ``step``."""
    if not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an integer >= 0; got {step!r}")
    for module in model.modules():
        if isinstance(module, VersatileFFN):
            module.set_temperature(module.temperature_at(step))


def attach_temperature_schedule(optimizer: torch.optim.Optimizer, model: torch.nn.Module,
                                step: int = 0) -> RemovableHandle:
    """Set tau for ``step`` (the next optimizer step) now, and after every ``optimizer.step()`` for the one after.

    Returns the hook's handle (``handle.remove()`` detaches it).
    """
    set_temperature_step(model, step)
    next_steps = itertools.count(step + 1)

    def after_step(optimizer, args, kwargs) -> None:
        set_temperature_step(model, next(next_steps))

    return optimizer.register_step_post_hook(after_step)


def compressed_tau_decay(steps: int, tau_start: float = 5.0, tau_end: float = 0.1) -> float:
    """The paper's tau schedule squeezed into ``steps``: its x0.99984 per step takes tau from 5.0 to the 0.1
    floor in 24.4k of its ~26.7k steps (40B tokens / 1.5M per step), i.e. at 91.5% of training. A 50-step run
    with the paper's factor would end at tau = 4.96 (loop choices still mostly Gumbel noise), so a short run
    reaches the floor at the same fraction of its own length."""
    return (tau_end / tau_start) ** (1.0 / max(1.0, 0.915 * steps))


def without_saved_tau(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict without the tau buffers that weights saved before the schedule hold."""
    return {k: v for k, v in state.items() if not SAVED_TAU_KEY.search(k)}
