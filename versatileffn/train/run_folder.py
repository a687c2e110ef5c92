"""The run folder's rules (README "Reliability") and the stop request of SIGINT / SIGTERM.

* A fresh run never reuses a folder that holds another run: ``--resume`` continues it, ``--overwrite`` replaces
  it, and a folder versatileffn did not write is never used (``folders.check_replaceable``).
* One process at a time: ``folders.FolderLock`` (PID + host, stale locks of dead processes are taken over).
* The folder is created atomically (a temporary sibling with the marker, renamed into place) with the user's umask.
* On resume, ``metrics.jsonl`` is cut back to its size when the checkpoint was written, so the steps that are
  trained again are not logged twice; a config that differs from the stored one is said aloud, and the stored
  one is kept beside it.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
from pathlib import Path

import yaml

from ..errors import MissingInputError, UserError
from ..folders import (FolderLock, check_replaceable, check_writable, clean_orphans, folder_kind, make_dirs,
                       new_temp_folder, swap_in, write_file_atomic, write_marker)
from .checkpoint import CKPT_DIR, list_checkpoints

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
CONFIG = "config.yaml"


class RunFolder:
    def __init__(self, path: str | Path, resume: bool = False, overwrite: bool = False):
        self.path = Path(path)
        self.resume, self.overwrite = resume, overwrite
        self.lock = FolderLock(self.path)

    def open(self) -> None:
        """Check the rules, take the lock and make sure the folder exists (main rank only)."""
        check_writable(self.path)
        make_dirs(self.path.parent)
        self.lock.acquire()
        try:
            clean_orphans(self.path)
            for inside in (self.path, self.path / CKPT_DIR):  # killed checkpoint / final/ writes of this run
                clean_orphans(parent=inside)
            if self.resume:
                self._check_resumable()
            else:
                self._prepare_fresh()
        except BaseException:
            self.lock.release()
            raise

    def close(self) -> None:
        self.lock.release()

    def _check_resumable(self) -> None:
        if not self.path.exists():
            raise MissingInputError(f"--resume: run folder {self.path} does not exist (no checkpoint to resume from)")
        kind = folder_kind(self.path)
        if kind not in ("run", None) or (kind is None and any(self.path.iterdir())
                                         and not (self.path / CKPT_DIR).is_dir()):
            raise UserError(f"--resume: {self.path} is not a training run folder")
        if not list_checkpoints(self.path):
            raise MissingInputError(f"--resume: no checkpoint under {self.path / CKPT_DIR} (start the run again "
                                    "with --overwrite)")

    def _prepare_fresh(self) -> None:
        p = self.path
        if p.exists() and p.is_dir() and any(p.iterdir()):
            kind = folder_kind(p) or ("run" if (p / CKPT_DIR).is_dir() else None)
            if kind == "run" and not _has_progress(p):
                pass  # a run that stopped before its first step logged: nothing to lose, start it again
            elif kind == "run":
                steps = [s for s, _ in list_checkpoints(p)]
                held = f"checkpoints up to step {steps[-1]}" if steps else "no checkpoint yet"
                if not self.overwrite:
                    raise UserError(f"{p} holds another run ({held}); continue it with --resume, replace it with "
                                    "--overwrite, or choose another --out")
                log.warning("--overwrite: replacing the run in %s (%s)", p, held)
            else:
                check_replaceable(p, "run")  # a folder we did not write, or of another kind: refused
        tmp = new_temp_folder(p)  # the user's umask
        try:
            write_marker(tmp, "run")
            swap_in(tmp, p)  # replaces an empty folder, or the old run (deleted after the swap)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    # ---------------------------------------------------------------------------- metrics and config

    def metrics_size(self) -> int:
        f = self.path / METRICS
        return f.stat().st_size if f.is_file() else 0

    def cut_metrics(self, offset: int | None) -> None:
        """Drop what metrics.jsonl gained after the checkpoint we resume from (it is logged again)."""
        f = self.path / METRICS
        if offset is None or not f.is_file():
            return
        size = f.stat().st_size
        if size > offset:
            with open(f, "r+b") as fh:
                fh.truncate(offset)
            log.info("metrics.jsonl: dropped %d bytes logged after the checkpoint (those steps run again)",
                     size - offset)
        elif size < offset:
            log.warning("metrics.jsonl is shorter than when the checkpoint was written; left as it is")

    def write_config(self, config: dict, step: int | None = None, previous: dict | None = None) -> None:
        """Write config.yaml. On resume (``step``), say which settings differ from the stored config.yaml (or, when
        it is gone, from ``previous``, the checkpoint's) and keep the old file beside it."""
        f = self.path / CONFIG
        text = yaml.safe_dump(config, sort_keys=False)
        if step is not None:
            old = previous
            if f.is_file():
                try:
                    old = yaml.safe_load(f.read_text(encoding="utf-8"))
                except (yaml.YAMLError, UnicodeDecodeError):
                    old = previous
            changes = config_changes(old, config) if isinstance(old, dict) else []
            if changes:
                kept = f.with_name(f"config.before-resume-step_{step:07d}.yaml")
                if f.is_file():
                    os.replace(f, kept)
                log.warning("resuming with changed settings: %s; config.yaml now records them (later --resume runs "
                            "use them)%s", "; ".join(changes),
                            f", the previous one is kept as {kept.name}" if kept.is_file() else "")
        write_file_atomic(f, text)


def _has_progress(run: Path) -> bool:
    metrics = run / METRICS
    return bool(list_checkpoints(run)) or (metrics.is_file() and metrics.stat().st_size > 0) or (run / "final").exists()


def config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf that differs between two nested config dicts."""
    out = []
    for key in list(old) + [k for k in new if k not in old]:
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, name + ".")
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


# -------------------------------------------------------------------------------- SIGINT / SIGTERM


class StopRequest:
    """While active, SIGINT and SIGTERM only set ``signum``: the trainer checkpoints at the next step boundary and
    stops. A second signal of the same kind acts at once (the default handler is back after the first)."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
        log.info("%s received: writing a checkpoint at the end of this step, then stopping (send it again to "
                    "stop at once, without a checkpoint)", signal.Signals(signum).name)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
