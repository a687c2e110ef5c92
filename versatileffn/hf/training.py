"""Continued pre-training of a converted model with Hugging Face's ``Trainer``: the one VersatileFFN-specific
step is annealing the Gumbel temperature after every optimizer step (Sec. 3.3), which this callback does."""
from __future__ import annotations

from transformers.trainer_callback import TrainerCallback

from .modeling import VersatileCausalLMMixin


class TemperatureAnnealCallback(TrainerCallback):
    """``Trainer(..., callbacks=[TemperatureAnnealCallback()])``: one ``anneal_temperature()`` per optimizer step
    (``on_step_end`` runs after the step, once per gradient-accumulation cycle), plus the loop / lambda /
    expert-load statistics of the last logging window in the logs."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if not isinstance(model, VersatileCausalLMMixin):
            raise TypeError(f"TemperatureAnnealCallback needs a converted VersatileFFN model; got {type(model).__name__}")
        model.anneal_temperature()
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
