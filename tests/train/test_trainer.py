"""Trainer: learning, exact resume, tau schedule, continued pre-training, bad inputs, checkpoints, CLI."""
import json

import pytest
import torch
from train_helpers import micro_config

from versatileffn.cli import main as cli_main
from versatileffn.io import load_model, load_state, save_model
from versatileffn.train import Trainer, TrainingDiverged, init_from_dense, latest_checkpoint
from versatileffn.train.checkpoint import list_checkpoints
from versatileffn.train.optim import lr_at, param_groups


def records(out_dir, kind="train"):
    return [r for r in map(json.loads, (out_dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_loss_decreases_and_outputs(token_dir, tmp_path):
    cfg = micro_config(token_dir, tmp_path / "run", "dense", "train.max_steps=40", "train.log_every=5",
                       "train.tensorboard=true")
    result = Trainer(cfg).train()
    recs = records(tmp_path / "run")
    assert recs[-1]["loss"] < recs[0]["loss"] - 1.0
    assert {"loss", "aux_loss", "lr", "grad_norm", "tokens_per_s"} <= set(recs[0])
    assert result["val"]["val_loss"] < 5.0 and (tmp_path / "run" / "config.yaml").is_file()
    assert any((tmp_path / "run" / "tensorboard").iterdir())
    model, meta = load_model(tmp_path / "run" / "final")
    assert meta["train_step"] == 40 and (tmp_path / "run" / "final" / "tokenizer.json").is_file()


def test_resume_is_exact(token_dir, tmp_path):
    full = Trainer(micro_config(token_dir, tmp_path / "full", "versatile"))
    full_result = full.train()
    part = Trainer(micro_config(token_dir, tmp_path / "part", "versatile"))
    part.train(until_step=3)  # "interrupted" after step 3 (its checkpoint is written on the way out)
    del part
    resumed = Trainer(micro_config(token_dir, tmp_path / "part", "versatile"), resume=True)
    assert resumed.step == 3
    resumed_result = resumed.train()
    assert resumed_result["loss"] == full_result["loss"]
    assert resumed_result["val"]["val_loss"] == full_result["val"]["val_loss"]
    a, b = load_state(tmp_path / "full" / "final" / "model.safetensors"), load_state(
        tmp_path / "part" / "final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in records(tmp_path / "full")][3:] == [r["loss"] for r in records(tmp_path / "part")][3:]


def test_tau_reaches_floor_on_schedule(token_dir, tmp_path):
    cfg = micro_config(token_dir, tmp_path / "run", "versatile", "model.ffn.tau_decay=0.5", "train.max_steps=8")
    trainer = Trainer(cfg)
    trainer.train()
    layer = trainer.model.versatile_layers()[0]
    taus = [r["tau"] for r in records(tmp_path / "run")]
    assert taus == pytest.approx([layer.temperature_at(s) for s in range(1, 9)])  # once per optimizer step
    assert taus[5] == pytest.approx(0.1) and taus[4] > 0.1  # 5 * 0.5**6 < 0.1 <= 5 * 0.5**5
    rec = records(tmp_path / "run")[-1]
    assert 1 <= rec["loops"] <= 4 and 0 <= rec["lambda"] < 1 and rec["expert_imbalance"] >= 1


@pytest.mark.parametrize("kind", ["versatile", "moe", "loop2"])
def test_continued_pretraining_from_dense(token_dir, tmp_path, kind):
    dense = Trainer(micro_config(token_dir, tmp_path / "dense", "dense", "train.max_steps=2"))
    dense.train()
    src = load_state(tmp_path / "dense" / "final" / "model.safetensors")
    cfg = micro_config(token_dir, tmp_path / kind, kind, f"train.init_from={tmp_path / 'dense' / 'final'}",
                       "train.max_steps=2")
    trainer = Trainer(cfg)
    fresh = set(trainer.fresh_keys)
    expected_fresh = {"versatile": {"router.weight", "loop_predictor.weight"},
                      "moe": {"router.weight", "expert_gate", "expert_up", "expert_down"}, "loop2": set()}[kind]
    assert fresh == {f"blocks.{i}.ffn.{n}" for i in range(2) for n in expected_fresh}
    state = trainer.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in src.items())  # every dense weight carried over
    trainer.train()


def test_continued_pretraining_rejects_wrong_checkpoint(token_dir, tmp_path):
    cfg = micro_config(token_dir, tmp_path / "x", "versatile")
    other = micro_config(token_dir, tmp_path / "y", "dense", "model.d_model=48", "model.n_heads=4").model.build()
    save_model(other, tmp_path / "other")
    with pytest.raises(ValueError, match="shape mismatches.*embed.weight"):
        init_from_dense(cfg.model.build(), tmp_path / "other")
    bigger = micro_config(token_dir, tmp_path / "y", "dense", "model.n_layers=3").model.build()
    save_model(bigger, tmp_path / "bigger")
    with pytest.raises(ValueError, match=r"unexpected keys \['blocks.2"):
        init_from_dense(cfg.model.build(), tmp_path / "bigger")
    shallower = micro_config(token_dir, tmp_path / "y", "dense", "model.n_layers=1").model.build()
    save_model(shallower, tmp_path / "shallow")
    with pytest.raises(ValueError, match=r"missing keys \['blocks.1.attn"):
        init_from_dense(cfg.model.build(), tmp_path / "shallow")


def test_bad_inputs(token_dir, tmp_path):
    with pytest.raises(ValueError, match="model.vocab_size=256"):
        Trainer(micro_config(token_dir, tmp_path / "r", "dense", "model.vocab_size=256"))
    with pytest.raises(FileNotFoundError, match="no index.json"):
        Trainer(micro_config(tmp_path / "nothing", tmp_path / "r", "dense"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "index.json").write_text((token_dir / "index.json").read_text())
    (empty / "train.bin").write_bytes((token_dir / "train.bin").read_bytes())
    with pytest.raises(FileNotFoundError, match="val.bin"):  # checked before training, not at the end
        Trainer(micro_config(empty, tmp_path / "r", "dense"))
    (empty / "train.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="train.bin is empty"):
        Trainer(micro_config(empty, tmp_path / "r", "dense"))
    with pytest.raises(ValueError, match="global_batch_tokens"):
        Trainer(micro_config(token_dir, tmp_path / "r", "dense", "train.global_batch_tokens=100"))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(micro_config(token_dir, tmp_path / "fresh", "dense"), resume=True)
    Trainer(micro_config(token_dir, tmp_path / "dense", "dense", "train.max_steps=1")).train()
    with pytest.raises(ValueError, match="checkpoint .* does not fit"):  # resume with another architecture
        Trainer(micro_config(token_dir, tmp_path / "dense", "moe", "train.max_steps=1"), resume=True)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(token_dir, tmp_path):
    trainer = Trainer(micro_config(token_dir, tmp_path / "run", "dense", "train.ckpt_every=2", "train.max_steps=8"))
    step = trainer.optimizer.step

    def poisoned_step(*a, **k):
        out = step(*a, **k)
        if trainer.step == 2:  # the update of step 3 breaks the model: step 4 sees NaN
            with torch.no_grad():
                trainer.model.final_norm.weight.fill_(float("nan"))
        return out

    trainer.optimizer.step = poisoned_step
    with pytest.raises(TrainingDiverged, match="loss is nan at step 4.*step_0000002"):
        trainer.train()
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [2]
    good = load_state(latest_checkpoint(tmp_path / "run") / "model.safetensors")
    assert torch.isfinite(good["final_norm.weight"]).all()


def test_keep_last_checkpoints(token_dir, tmp_path):
    Trainer(micro_config(token_dir, tmp_path / "run", "dense", "train.ckpt_every=1", "train.keep_last=2")).train()
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [5, 6]
    model, _ = load_model(latest_checkpoint(tmp_path / "run"))  # a checkpoint is also a model folder
    assert model.num_params() > 0


def test_recipe_schedule_and_groups(token_dir, tmp_path):
    cfg = micro_config(token_dir, tmp_path / "r", "versatile")
    t = cfg.train
    lrs = [lr_at(s, 100, t) for s in range(100)]
    assert lrs[0] == pytest.approx(t.lr / 5) and lrs[4] == pytest.approx(t.lr)  # 5% warm-up
    assert lrs[-1] == pytest.approx(0.1 * t.lr) and all(a >= b - 1e-12 for a, b in zip(lrs[4:], lrs[5:]))
    model = cfg.model.build()
    decay, no_decay = param_groups(model, t)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.dim() == 2 and "embed" not in names[id(p)] for p in decay["params"])
    assert {names[id(p)] for p in no_decay["params"]} >= {"final_norm.weight", "embed.weight"}
    assert decay["weight_decay"] == 0.1 and t.beta2 == 0.95 and t.eps == 1e-8 and t.grad_clip == 1.0


def test_cli_train_and_resume(token_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["train", "--config", str(tmp_path / "c.yaml"), "--data", str(token_dir), "--out", str(out),
            "--ffn", "loop2", "--set", "train.max_steps=2", "--set", "train.progress=false"]
    cfg = micro_config(token_dir, out, "dense")
    import yaml

    from versatileffn.train.config import run_config_to_dict
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(run_config_to_dict(cfg)))
    assert cli_main(args) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 2
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["ffn"]["n_loops"] == 2
    resume = ["train", "--out", str(out), "--resume", "--set", "train.max_steps=3", "--set", "train.progress=false"]
    assert cli_main(resume) == 0  # config.yaml of the run folder: loop2 model, same data
    assert json.loads(capsys.readouterr().out)["step"] == 3
    assert cli_main(args + ["--set", "train.lr=oops"]) == 2
    assert "train.lr must be a number" in capsys.readouterr().err
