"""Continued pre-training of a converted model with Hugging Face's ``Trainer``: the one VersatileFFN-specific
step is the Gumbel temperature schedule (Sec. 3.3), which the callback applies from the trainer's step; the
FFN metrics (mean loops, mean lambda, tau, balance loss) join the trainer's own training logs."""
from __future__ import annotations

from transformers import Trainer
from transformers.trainer_callback import TrainerCallback

from ..ffn.temperature import set_temperature_step
from .modeling import VersatileCausalLMMixin

FFN_METRICS = ("ffn_mean_loops", "ffn_mean_lambda", "ffn_tau", "aux_loss")


def _converted(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT model: its base
    if not isinstance(base, VersatileCausalLMMixin):
        raise TypeError(f"TemperatureAnnealCallback needs a converted VersatileFFN model; got {type(model).__name__}")
    return base


def ffn_log_metrics(model) -> dict:
    """The FFN metrics of the last logging window (then reset): mean loops and lambda over layers, tau, the
    summed scaled balance loss of the last step. {} when no token went through the FFNs since the last call."""
    model = _converted(model)
    stats, out = model.ffn_stats(), {}
    if stats and stats[0].get("tokens"):
        out["ffn_mean_loops"] = model.mean_loops()
        out["ffn_mean_lambda"] = sum(s.get("mean_lambda", 0.0) for s in stats) / len(stats)
        out["ffn_tau"] = float(model.versatile_layers()[0].tau)
        aux = model.aux_loss()
        if aux is not None:
            out["aux_loss"] = float(aux)
    model.reset_ffn_stats()
    return out


class TemperatureAnnealCallback(TrainerCallback):
    """``Trainer(..., callbacks=[TemperatureAnnealCallback()])``: tau = the schedule's value for the coming optimizer
    step, set from ``state.global_step`` at the start of training and after every optimizer step (``on_step_end``
    runs once per gradient-accumulation cycle), so a resumed run continues the schedule with nothing replayed.

    With a plain ``Trainer`` it also adds the FFN metrics to each training log and to ``state.log_history``; the
    reporting integrations (TensorBoard, W&B) run before user callbacks and see them only with
    ``VersatileTrainer``, which adds them where the trainer builds its logs."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        set_temperature_step(_converted(model), state.global_step)
        return control

    def on_step_end(self, args, state, control, model=None, **kwargs):
        set_temperature_step(_converted(model), state.global_step)
        return control

    def on_log(self, args, state, control, model=None, logs=None, **kwargs):
        if logs is not None and not any(k in logs for k in FFN_METRICS):  # VersatileTrainer has added them
            metrics = ffn_log_metrics(model)
            logs.update(metrics)
            if state.log_history and state.log_history[-1].get("step") == state.global_step:
                state.log_history[-1].update(metrics)
        return control


class VersatileTrainer(Trainer):
    """``transformers.Trainer`` for converted models: the temperature callback is added if not given, and the FFN
    metrics join every training log (``Trainer.log``, the documented place to add metrics), so they reach
    ``state.log_history`` and every ``report_to`` integration (TensorBoard, W&B: ``pip install
    'versatileffn[wandb]'``) as ``train/ffn_mean_loops`` and so on."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not any(isinstance(c, TemperatureAnnealCallback) for c in self.callback_handler.callbacks):
            self.add_callback(TemperatureAnnealCallback())

    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs:  # a training log (evaluation logs carry eval_loss)
            logs.update(ffn_log_metrics(self.model))
        super().log(logs, *args, **kwargs)
