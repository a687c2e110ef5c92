"""Checkpoint integrity: checksums verified on resume, fallback to the newest checkpoint that verifies, nothing
written from NaN/Inf, "last good checkpoint" only ever a verified one, metrics without duplicates, the stored
config on resume (issue 14: "Integrity", "Small ones")."""
import json
import shutil

import pytest
import torch
import yaml
from reliability_helpers import one_line_error, snapshot
from train_helpers import micro_config

from versatileffn.errors import UserError
from versatileffn.io import load_state, save_model
from versatileffn.train import Trainer, TrainingDiverged
from versatileffn.train import checkpoint as ckpt
from versatileffn.train.checkpoint import list_checkpoints


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def without_speed(recs):
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in recs]


def model_files(folder):
    """The files that make the model (the marker records when and by which process it was written)."""
    return {k: v for k, v in snapshot(folder).items() if k in ("model.safetensors", "config.json", "tokenizer.json")}


def garble(path, offset_from_end=64):
    """Flip bytes inside a file without changing its size or its header (the issue's corruption)."""
    data = bytearray(path.read_bytes())
    for i in range(len(data) - offset_from_end, len(data) - offset_from_end + 16):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def run(token_dir, tmp_path):
    """A finished micro run: checkpoints at steps 2, 4, 6 and final/."""
    out = tmp_path / "run"
    Trainer(micro_config(token_dir, out, "dense", "train.ckpt_every=2", "train.keep_last=3")).train()
    return out


def test_corrupt_newest_checkpoint_falls_back_and_final_stays_exact(run, cli):
    final_before = model_files(run / "final")
    losses = {r["step"]: r["loss"] for r in records(run) if r["kind"] == "train"}
    garble(run / "checkpoints" / "step_0000006" / "model.safetensors")
    killed = run / "checkpoints" / ".step_0000008.tmp-4194999-0123abcd"  # a checkpoint write killed half-way
    killed.mkdir()
    (killed / "model.safetensors").write_bytes(b"half")
    rc, out, err = cli("train", "--out", run, "--resume", "-q")
    assert rc == 0, err
    assert not killed.exists()
    assert "Traceback" not in err
    assert "step_0000006 is corrupt or incomplete (model.safetensors does not match its checksum: " in err
    assert "resuming from" in err and "step_0000004" in err
    assert (run / "checkpoints" / "step_0000006.corrupt").is_dir()  # kept for inspection, never resumed
    assert ckpt.verify_checksums(run / "checkpoints" / "step_0000006") is None  # written again, verified
    assert model_files(run / "final") == final_before  # steps 5-6 again: bit for bit the same model
    recs = records(run)
    keys = [(r["kind"], r["step"]) for r in recs]
    assert len(keys) == len(set(keys))  # metrics.jsonl: no duplicate after the resume
    assert {r["step"]: r["loss"] for r in recs if r["kind"] == "train"} == losses
    assert json.loads(out)["loss"] == losses[6]


def test_no_checkpoint_verifies_is_one_clear_message(token_dir, tmp_path, cli):
    out = tmp_path / "run"
    Trainer(micro_config(token_dir, out, "dense", "train.ckpt_every=3", "train.keep_last=1")).train()
    opt = out / "checkpoints" / "step_0000006" / "optimizer.pt"
    opt.write_bytes(opt.read_bytes()[:100])  # truncated
    before = snapshot(out)
    rc, _, err = cli("train", "--out", out, "--resume", "-q")
    assert rc == 2
    line = one_line_error(err, "train")
    assert "no checkpoint" in line and "step_0000006" in line and "optimizer.pt holds 100 bytes" in line
    assert snapshot(out) == before  # the good final/ and everything else untouched


def test_legacy_checkpoint_without_checksums_is_loaded_and_checked(run, cli):
    step6 = run / "checkpoints" / "step_0000006"
    (step6 / "checksums.json").unlink()  # as written before checksums existed
    (step6 / "trainer_state.json").write_text('{"step": "six", "tokens_seen": 1}')
    opt4 = run / "checkpoints" / "step_0000004" / "optimizer.pt"
    (run / "checkpoints" / "step_0000004" / "checksums.json").unlink()
    opt4.write_bytes(b"PK\x03\x04garbage")  # a corrupt zip / pickle: loaded weights_only, refused cleanly
    rc, _, err = cli("train", "--out", run, "--resume", "-q")
    assert rc == 0, err
    assert "trainer_state.json is malformed: 'step' must be an integer" in err
    assert "optimizer.pt (truncated or corrupt)" in err and "resuming from" in err and "step_0000002" in err
    assert "Traceback" not in err


def test_nothing_is_written_from_nonfinite_weights(token_dir, tmp_path):
    cfg = micro_config(token_dir, tmp_path / "r", "dense")
    model = cfg.model.build()
    save_model(model, tmp_path / "m")
    before = snapshot(tmp_path / "m")
    with torch.no_grad():
        model.final_norm.weight[0] = float("inf")
    with pytest.raises(UserError, match="NaN/Inf values .*final_norm.weight"):
        save_model(model, tmp_path / "m")
    assert snapshot(tmp_path / "m") == before
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TrainingDiverged, match="final_norm.weight"):
        ckpt.save_checkpoint(tmp_path / "run", 3, state, {"state": {}}, "{}", {"step": 3, "tokens_seen": 0}, 2)
    assert list_checkpoints(tmp_path / "run") == []


def poison_after_update(trainer, step: int, also=None) -> None:
    """After the optimizer update that follows step ``step`` the model holds NaN (``also`` runs first)."""
    update = trainer.optimizer.step

    def poisoned(*a, **k):
        result = update(*a, **k)
        if trainer.step == step:
            if also is not None:
                also()
            with torch.no_grad():
                trainer.model.final_norm.weight.fill_(float("nan"))
        return result

    trainer.optimizer.step = poisoned


def test_nan_validation_loss_writes_no_final_and_names_a_verified_checkpoint(token_dir, tmp_path):
    out = tmp_path / "run"
    trainer = Trainer(micro_config(token_dir, out, "dense", "train.ckpt_every=2", "train.max_steps=4"))
    poison_after_update(trainer, 3)  # the last update: its training loss was finite, the validation loss is not
    with pytest.raises(TrainingDiverged, match="validation loss is nan at step 4.*last good checkpoint is .*step_0000002"
                       ):
        trainer.train()
    assert not (out / "final").exists() and [s for s, _ in list_checkpoints(out)] == [2]


def test_last_good_checkpoint_never_names_a_corrupt_one(token_dir, tmp_path):
    out = tmp_path / "run"
    trainer = Trainer(micro_config(token_dir, out, "dense", "train.ckpt_every=2", "train.max_steps=8"))
    poison_after_update(trainer, 2, also=lambda: garble(out / "checkpoints" / "step_0000002" / "model.safetensors"))
    with pytest.raises(TrainingDiverged, match="no verified checkpoint was written yet") as info:
        trainer.train()
    assert "step_0000002" not in str(info.value)


def test_resume_at_the_last_step_reports_the_real_loss_and_adds_nothing(run, cli):
    metrics = (run / "metrics.jsonl").read_bytes()
    last = [r for r in records(run) if r["kind"] == "train"][-1]["loss"]
    final_before, model_files_before = snapshot(run / "final"), model_files(run / "final")
    rc, out, err = cli("train", "--out", run, "--resume", "-q")
    assert rc == 0, err
    assert json.loads(out)["loss"] == last and json.loads(out)["val"]["val_loss"] > 0
    assert (run / "metrics.jsonl").read_bytes() == metrics and snapshot(run / "final") == final_before
    shutil.rmtree(run / "final")  # killed between the last checkpoint and final/: written from the checkpoint
    rc, out, err = cli("train", "--out", run, "--resume", "-q")
    assert rc == 0 and json.loads(out)["loss"] == last
    assert model_files(run / "final") == model_files_before and (run / "metrics.jsonl").read_bytes() == metrics


def test_metrics_have_no_duplicates_after_a_crash(run, cli):
    original = records(run)
    for step in (4, 6):  # as if killed after checkpoint 2 while steps 3-6 were being logged
        shutil.rmtree(run / "checkpoints" / f"step_{step:07d}")
    shutil.rmtree(run / "final")
    rc, _, err = cli("train", "--out", run, "--resume", "-q")
    assert rc == 0, err
    assert without_speed(records(run)) == without_speed(original)  # each step once, the same losses


def test_resume_without_config_yaml_uses_the_checkpoint_config(run, cli):
    stored = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").unlink()
    rc, out, err = cli("train", "--out", run, "--resume", "--set", "train.max_steps=7", "-q")
    assert rc == 0, err
    assert "config.yaml is missing: resuming with the config stored in" in err and json.loads(out)["step"] == 7
    assert yaml.safe_load((run / "config.yaml").read_text()) == {**stored, "train": {**stored["train"], "max_steps": 7}}
    empty = run.parent / "empty-run"
    empty.mkdir()
    rc, _, err = cli("train", "--out", empty, "--resume", "-q")
    assert rc == 2 and "no checkpoint" in one_line_error(err, "train")


def test_resume_with_a_changed_setting_says_so_and_keeps_the_old_config(run, cli):
    old = (run / "config.yaml").read_text()
    rc, _, err = cli("train", "--out", run, "--resume", "--set", "train.lr=0.005", "--set", "train.max_steps=7", "-q")
    assert rc == 0, err
    assert "resuming with changed settings: train.max_steps: 6 -> 7; train.lr: 0.01 -> 0.005" in err
    assert (run / "config.before-resume-step_0000006.yaml").read_text() == old
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["lr"] == 0.005
    state = json.loads((run / "checkpoints" / "step_0000007" / "trainer_state.json").read_text())
    assert state["config"]["train"]["lr"] == 0.005


def test_checkpoint_records_checksums_of_every_file(run):
    path = run / "checkpoints" / "step_0000006"
    sums = json.loads((path / "checksums.json").read_text())["files"]
    assert set(sums) == {"model.safetensors", "optimizer.pt", "trainer_state.json", "config.json", "tokenizer.json"}
    assert ckpt.verify_checksums(path) is None
    assert load_state(path / "model.safetensors")  # still a model folder
