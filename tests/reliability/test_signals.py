"""SIGINT / SIGTERM: a checkpoint at the next step boundary, one line saying where, a bit-exact resume; the lock
keeps a second training out (issue 14: "Signals", "Data lost" 3). One real subprocess: Ctrl-C of a command line
run, and a lock held by another live process."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from reliability_helpers import one_line_error, write_config
from train_helpers import micro_config

from versatileffn.folders import FolderLock
from versatileffn.train import Trainer
from versatileffn.train import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[2]


def start_training(config: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "versatileffn.cli", "train", "--config", str(config), "--out",
                             str(out), "-q"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_steps(proc: subprocess.Popen | None, out: Path, steps: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    metrics = out / "metrics.jsonl"
    while time.monotonic() < deadline:
        if metrics.is_file() and metrics.read_text().count('"kind": "train"') >= steps:
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"training ended early ({proc.returncode}): {proc.communicate()[1]}")
        time.sleep(0.005)
    if proc is not None:
        proc.kill()
    raise AssertionError("training did not start in time")


def train_losses(out: Path) -> list:
    recs = map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
    return [r["loss"] for r in recs if r["kind"] == "train"]


def test_sigint_at_a_random_step_checkpoints_and_resumes_bit_exactly(token_dir, tmp_path):
    total = 30
    cfg = micro_config(token_dir, tmp_path / "run", "dense", f"train.max_steps={total}")
    proc = start_training(write_config(cfg, tmp_path / "c.yaml"), tmp_path / "run")
    try:
        # the uninterrupted reference meanwhile (the subprocess spends its first seconds importing torch)
        Trainer(micro_config(token_dir, tmp_path / "ref", "dense", f"train.max_steps={total}")).train()
        wait_for_steps(proc, tmp_path / "run", 1)
        with pytest.raises(ValueError, match=f"is in use by process {proc.pid} on "):  # a live process holds it
            FolderLock(tmp_path / "run").acquire()
        target = len(train_losses(tmp_path / "run")) + random.randint(0, 8)
        wait_for_steps(proc, tmp_path / "run", target)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    m = re.fullmatch(r"versatileffn train: stopped by SIGINT at step (\d+) of 30: checkpoint written to (\S+); "
                     r"continue with: versatileffn train --out (\S+) --resume", lines[0])
    assert m, lines[0]
    step = int(m.group(1))
    assert target <= step < total, (target, step)
    assert Path(m.group(2)) == tmp_path / "run" / "checkpoints" / f"step_{step:07d}"
    assert ckpt.verify_checksums(Path(m.group(2))) is None
    assert not (tmp_path / ".run.lock").exists()  # released on the way out

    resumed = Trainer(cfg, resume=True)
    assert resumed.step == step
    resumed.train()
    assert (tmp_path / "run" / "final" / "model.safetensors").read_bytes() == \
        (tmp_path / "ref" / "final" / "model.safetensors").read_bytes(), f"interrupted at step {step}"
    assert train_losses(tmp_path / "run") == train_losses(tmp_path / "ref")  # every step once, the same losses


def test_sigterm_checkpoints_and_exits_143(token_dir, tmp_path, cli):
    """In this process: the handler runs in the main thread, as in a job that a scheduler pre-empts."""
    cfg = write_config(micro_config(token_dir, tmp_path / "run", "dense", "train.max_steps=500"), tmp_path / "c.yaml")

    def preempt():
        wait_for_steps(None, tmp_path / "run", 2)
        os.kill(os.getpid(), signal.SIGTERM)

    timer = threading.Thread(target=preempt, daemon=True)
    timer.start()
    rc, _, err = cli("train", "--config", cfg, "-q")
    timer.join()
    assert rc == 143
    line = [x for x in err.splitlines() if x.strip()]
    assert len(line) == 1 and line[0].startswith("versatileffn train: stopped by SIGTERM at step "), err
    path, _, skipped = ckpt.find_resume_checkpoint(tmp_path / "run")
    assert skipped == [] and path.name in line[0]
    with FolderLock(tmp_path / "run"):  # free again
        pass


def test_two_trainings_on_one_folder_exclude_each_other(token_dir, tmp_path, cli):
    first = Trainer(micro_config(token_dir, tmp_path / "run", "dense", "train.max_steps=2"))
    cfg = write_config(micro_config(token_dir, tmp_path / "run", "moe", "train.max_steps=2"), tmp_path / "c.yaml")
    for extra in ([], ["--resume"], ["--overwrite"]):
        rc, _, err = cli("train", "--config", cfg, *extra, "-q")
        assert rc == 2 and f"is in use by process {os.getpid()} on " in one_line_error(err, "train")
    rc, _, err = cli("train", "--config", cfg, "--resume", "--overwrite", "-q")
    assert rc == 2 and "choose one" in one_line_error(err, "train")
    first.train()  # the first one was not disturbed, and releases the folder when done
    rc, _, err = cli("train", "--config", cfg, "--resume", "--set", "train.max_steps=3", "-q")
    assert rc == 2 and "does not fit this model" in one_line_error(err, "train")  # the lock is free: next check


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_signal_handlers_are_restored_after_training(token_dir, tmp_path, sig):
    before = signal.getsignal(getattr(signal, sig))
    Trainer(micro_config(token_dir, tmp_path / "run", "dense", "train.max_steps=1")).train()
    assert signal.getsignal(getattr(signal, sig)) == before
