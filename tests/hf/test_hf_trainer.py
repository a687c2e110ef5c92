"""A few steps of the HF Trainer on CPU: the FFN metrics reach ``state.log_history`` and TensorBoard (issue 15)."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from versatileffn.hf import TemperatureAnnealCallback, VersatileTrainer, convert_dense_model
from versatileffn.hf.training import FFN_METRICS

from .conftest import VOCAB


def _dataset(n: int = 8, length: int = 12):
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(3, VOCAB, (n, length), generator=g)
    return [{"input_ids": r, "labels": r} for r in rows]


def _args(tmp_path, **overrides):
    options = dict(output_dir=str(tmp_path / "out"), max_steps=4, logging_steps=2, per_device_train_batch_size=4,
                   learning_rate=1e-3, use_cpu=True, save_strategy="no", disable_tqdm=True, report_to=[])
    return transformers.TrainingArguments(**{**options, **overrides})


def _train_logs(trainer) -> list[dict]:
    return [h for h in trainer.state.log_history if "loss" in h]


def test_versatile_trainer_metrics_reach_log_history_and_tensorboard(make_dense, ffn_options, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="pip install 'versatileffn[logging]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = convert_dense_model(make_dense("llama"), ffn_options)
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    trainer = VersatileTrainer(model=model, args=_args(tmp_path, report_to=["tensorboard"]), train_dataset=_dataset())
    assert sum(isinstance(c, TemperatureAnnealCallback) for c in trainer.callback_handler.callbacks) == 1
    trainer.train()
    logs = _train_logs(trainer)
    assert [h["step"] for h in logs] == [2, 4]
    for h in logs:
        assert set(FFN_METRICS) <= h.keys()
        assert 1.0 <= h["ffn_mean_loops"] <= ffn_options["max_loops"] and h["aux_loss"] > 0
    assert logs[1]["ffn_tau"] == pytest.approx(model.versatile_layers()[0].temperature_at(4))
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    tags = events.Tags()["scalars"]
    assert {f"train/{m}" for m in FFN_METRICS} <= set(tags)
    assert [e.step for e in events.Scalars("train/ffn_mean_loops")] == [2, 4]


def test_plain_trainer_with_the_callback_fills_log_history(make_dense, ffn_options, tmp_path):
    model = convert_dense_model(make_dense("llama"), ffn_options)
    trainer = transformers.Trainer(model=model, args=_args(tmp_path), train_dataset=_dataset(),
                                   callbacks=[TemperatureAnnealCallback()])
    trainer.train()
    assert all(set(FFN_METRICS) <= h.keys() for h in _train_logs(trainer))
