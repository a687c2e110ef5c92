"""Run folders and output folders: reuse refused without --resume / --overwrite, folders versatileffn did not write
never replaced, failed writes leave the old folder as it was, the user's umask, orphans of killed writes, the lock
(PID + host, stale locks of dead processes) (issue 14: "Data lost" 2-5, "Run folders")."""
import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from reliability_helpers import one_line_error, snapshot, write_config
from train_helpers import micro_config

from versatileffn import folders
from versatileffn.folders import MARKER, FolderLock, atomic_folder, clean_orphans
from versatileffn.io import save_model
from versatileffn.train import Trainer


@pytest.fixture
def old_run(token_dir, tmp_path):
    out = tmp_path / "run"
    Trainer(micro_config(token_dir, out, "dense", "train.ckpt_every=2", "train.keep_last=3")).train()
    return out


def test_a_fresh_run_refuses_a_folder_that_holds_another_run(old_run, token_dir, tmp_path, cli):
    cfg = write_config(micro_config(token_dir, old_run, "loop2", "train.max_steps=2"), tmp_path / "new.yaml")
    before = snapshot(old_run)
    rc, _, err = cli("train", "--config", cfg, "--out", old_run, "-q")
    assert rc == 2
    line = one_line_error(err, "train")
    assert "holds another run (checkpoints up to step 6)" in line and "--resume" in line and "--overwrite" in line
    assert snapshot(old_run) == before
    rc, _, err = cli("train", "--config", cfg, "--out", old_run, "--overwrite", "-q")
    assert rc == 0, err
    assert "--overwrite: replacing the run" in err
    assert sorted(p.name for p in (old_run / "checkpoints").iterdir()) == ["step_0000002"]  # only the new run's
    assert json.loads((old_run / MARKER).read_text())["kind"] == "run"


def test_folders_versatileffn_did_not_write_are_never_replaced(token_dir, tmp_path, cli):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my thesis")
    (mine / "config.json").write_text('{"model_type": "llama"}')  # even a model folder someone else wrote
    before = snapshot(mine)
    cfg = write_config(micro_config(token_dir, mine, "dense", "train.max_steps=1"), tmp_path / "c.yaml")
    src = tmp_path / "docs.txt"
    src.write_text("one document.\n\nanother document.\n")
    for command in (["train", "--config", cfg, "--out", mine, "--overwrite"],
                    ["convert", "--from", tmp_path / "nothing", "--out", mine],
                    ["prepare-data", src, "--out", mine, "--tokenizer", token_dir]):
        rc, _, err = cli(*command, "-q")
        assert rc == 2, command
        assert "holds files that versatileffn did not write" in one_line_error(err, command[0])
    assert snapshot(mine) == before
    model = micro_config(token_dir, tmp_path / "r", "dense").model.build()
    with pytest.raises(ValueError, match="did not write"):
        save_model(model, mine)
    assert snapshot(mine) == before
    results = tmp_path / "results.json"
    results.write_text("my own notes, not an eval result")
    rc, _, err = cli("eval", "--model", tmp_path / "nothing", "--tasks", "none", "--out", results, "-q")
    assert rc == 2 and "is not a `versatileffn eval` result; refusing to replace it" in one_line_error(err, "eval")
    assert results.read_text() == "my own notes, not an eval result"


def test_a_failed_prepare_data_leaves_the_dataset_as_it_was(token_dir, tmp_path, cli):
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"text": f"document number {i} about rivers and mills."}) + "\n"
                            for i in range(60)))
    data = tmp_path / "data"
    rc, _, err = cli("prepare-data", good, "--out", data, "--tokenizer", token_dir, "--val-fraction", "0.2", "-q")
    assert rc == 0, err
    before = snapshot(data)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"text": 12345}) + "\n")
    rc, _, err = cli("prepare-data", bad, "--out", data, "--tokenizer", "bpe:300", "-q")
    assert rc == 2
    assert f"{bad}:2: field 'text' holds int" in one_line_error(err, "prepare-data")
    assert snapshot(data) == before  # tokenizer.json, train.bin, index.json: all the old dataset's
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left
    rc, _, err = cli("prepare-data", good, "--out", data, "--tokenizer", token_dir, "--val-fraction", "0.3", "-q")
    assert rc == 0 and snapshot(data) != before  # a successful run replaces its own dataset


def test_folders_get_the_users_umask(token_dir, tmp_path):
    old = os.umask(0o027)
    try:
        out = tmp_path / "run"
        Trainer(micro_config(token_dir, out, "dense", "train.max_steps=2")).train()
    finally:
        os.umask(old)
    for folder in (out, out / "checkpoints", out / "checkpoints" / "step_0000002", out / "final"):
        assert oct(folder.stat().st_mode & 0o777) == oct(0o750), folder
    assert oct((out / "final" / "model.safetensors").stat().st_mode & 0o777) == oct(0o640)


def test_orphans_of_killed_writes_are_cleaned_and_an_interrupted_swap_is_undone(tmp_path):
    final = tmp_path / "model"
    orphan = tmp_path / ".model.tmp-4194999-0123abcd"  # a write killed half-way (its process is gone)
    orphan.mkdir()
    (orphan / "model.safetensors").write_bytes(b"half")
    aside = tmp_path / ".model.old-4194999-89abcdef"  # a swap killed between its two renames
    aside.mkdir()
    (aside / "config.json").write_text('{"format": "versatileffn"}')
    unrelated = tmp_path / ".model.tmp-notours"
    unrelated.mkdir()
    assert clean_orphans(final) == [orphan]
    assert not orphan.exists() and (final / "config.json").is_file() and unrelated.is_dir()
    with atomic_folder(final, "model") as tmp:  # the next write of the same folder cleans up by itself
        (tmp / "config.json").write_text('{"format": "versatileffn"}')
        stray = tmp_path / ".model.tmp-4194998-00000000"
        stray.mkdir()
    assert stray.is_dir()  # made during this write: cleaned on the next one
    with atomic_folder(final, "model"):
        pass
    assert not stray.exists() and sorted(p.name for p in final.iterdir()) == [MARKER]


def test_a_stale_lock_of_a_dead_process_is_taken_over(old_run, tmp_path, cli):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = old_run.with_name(f".{old_run.name}.lock")
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "yesterday"}))
    rc, _, err = cli("train", "--out", old_run, "--resume", "--set", "train.max_steps=7", "-q")
    assert rc == 0, err
    assert f"took over a stale lock of process {dead.pid}" in err
    assert not lock.exists()  # released at the end of the run


def test_without_flock_a_live_pid_on_this_host_keeps_the_lock(tmp_path, monkeypatch):
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "no locks here")

    monkeypatch.setattr(folders.fcntl, "flock", no_flock)
    folder = tmp_path / "run"
    lock = folder.with_name(".run.lock")
    lock.write_text(json.dumps({"pid": 1, "host": socket.gethostname()}))  # init: always alive
    with pytest.raises(ValueError, match=f"{folder} is in use by process 1 on {socket.gethostname()}"):
        FolderLock(folder).acquire()
    lock.write_text(json.dumps({"pid": 1, "host": "another-node"}))
    with pytest.raises(ValueError, match="in use by process 1 on another-node"):
        FolderLock(folder).acquire()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    with FolderLock(folder):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_two_locks_on_one_folder_in_one_process_exclude_each_other(tmp_path):
    with FolderLock(tmp_path / "x"):
        with pytest.raises(ValueError, match=f"in use by process {os.getpid()}"):
            FolderLock(tmp_path / "x").acquire()
    with FolderLock(tmp_path / "x"):
        pass


@pytest.mark.parametrize("command", ["train", "prepare-data", "convert", "analyze", "eval"])
def test_an_output_path_under_a_file_is_one_message(command, token_dir, tmp_path, cli):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    out = blocker / "sub" / ("r.json" if command == "eval" else "out")
    src = tmp_path / "docs.txt"
    src.write_text("a document.\n")
    args = {"train": ["--data", token_dir], "prepare-data": [src], "convert": ["--from", tmp_path],
            "analyze": ["--model", tmp_path, "--data", src], "eval": ["--model", tmp_path, "--tasks", "none"]}[command]
    rc, _, err = cli(command, *args, "--out", out, "-q")
    assert rc == 2
    assert f"cannot write to {out}: {blocker} is a file, not a folder" in one_line_error(err, command)
    assert blocker.read_text() == "x"


@pytest.fixture
def shared_dir():
    """A folder every user may enter (pytest's own tmp folders are private to their owner)."""
    base = Path(tempfile.mkdtemp(prefix="vffn-shared-"))
    base.chmod(0o755)
    yield base
    for p in base.rglob("*"):
        if p.is_dir():
            p.chmod(0o755)
    shutil.rmtree(base)


def test_permission_denied_and_read_only_outputs(shared_dir, cli, monkeypatch):
    """As root (this project's CI runs as root), the commands run with the effective uid of 'nobody'."""
    base = shared_dir
    locked = base / "locked"
    locked.mkdir()
    src = base / "docs.txt"
    src.write_text("a document.\n")
    src.chmod(0o644)
    locked.chmod(0o555)
    root = os.geteuid() == 0
    try:
        if root:
            os.seteuid(65534)
        rc, _, err = cli("prepare-data", src, "--out", locked / "data", "--tokenizer", "bpe:300", "-q")
        rc2, _, err2 = cli("eval", "--model", base, "--tasks", "none", "--out", locked / "r.json", "-q")
    finally:
        if root:
            os.seteuid(0)
    assert rc == 2 and f"permission denied on {locked}" in one_line_error(err, "prepare-data")
    assert rc2 == 2 and f"permission denied on {locked}" in one_line_error(err2, "eval")
    monkeypatch.setattr(folders.os, "statvfs", lambda p: type("S", (), {"f_flag": os.ST_RDONLY})())
    rc, _, err = cli("prepare-data", src, "--out", base / "data", "--tokenizer", "bpe:300", "-q")
    assert rc == 2 and "is on a read-only file system" in one_line_error(err, "prepare-data")


def test_disk_errors_while_writing_are_one_line_and_leave_no_temporary(tmp_path, monkeypatch):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr("versatileffn.io.save_file", full)
    from versatileffn import VersatileLM, model_config

    with pytest.raises(OSError):
        save_model(VersatileLM(model_config("micro")), tmp_path / "m")
    assert list(tmp_path.iterdir()) == []
    from versatileffn.cli import user_message

    assert user_message(OSError(errno.ENOSPC, "No space left on device", "/x")) == "No space left on device: /x"
