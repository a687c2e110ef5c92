"""Continued pre-training of a converted model with Hugging Face's ``Trainer``: the one VersatileFFN-specific
step is the Gumbel temperature schedule (Sec. 3.3), which this callback applies from the trainer's step."""
from __future__ import annotations

from transformers.trainer_callback import TrainerCallback

from ..ffn.temperature import set_temperature_step
from .modeling import VersatileCausalLMMixin


def _converted(model):
    if not isinstance(model, VersatileCausalLMMixin):
        raise TypeError(f"TemperatureAnnealCallback needs a converted VersatileFFN model; got {type(model).__name__}")
    return model


class TemperatureAnnealCallback(TrainerCallback):
    """``Trainer(..., callbacks=[TemperatureAnnealCallback()])``: tau = the schedule's value for the coming optimizer
    step, set from ``state.global_step`` at the start of training and after every optimizer step (``on_step_end``
    runs once per gradient-accumulation cycle), so a resumed run continues the schedule with nothing replayed;
    plus the loop / lambda / expert-load statistics of the last logging window in the logs."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        set_temperature_step(_converted(model), state.global_step)
        return control

    def on_step_end(self, args, state, control, model=None, **kwargs):
        set_temperature_step(_converted(model), state.global_step)
        return control

    def on_log(self, args, state, control, model=None, logs=None, **kwargs):
        if isinstance(model, VersatileCausalLMMixin) and logs is not None:
            stats = model.ffn_stats()
            if stats and stats[0].get("tokens"):
                logs["ffn_mean_loops"] = sum(s.get("mean_loops", 0.0) for s in stats) / len(stats)
                logs["ffn_mean_lambda"] = sum(s.get("mean_lambda", 0.0) for s in stats) / len(stats)
                logs["ffn_tau"] = float(model.versatile_layers()[0].tau)
                aux = model.aux_loss()
                if aux is not None:
                    logs["aux_loss"] = float(aux)
            model.reset_ffn_stats()
        return control
