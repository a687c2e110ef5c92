"""Folder safety for every command that writes a folder (README "Reliability").

* **Atomic writes.** ``atomic_folder(path, kind)`` yields a temporary sibling ``.NAME.tmp-PID-XXXX``; when the
  block succeeds the sibling is swapped in for ``path`` (the old folder survives until the new one is complete),
  when it fails the sibling is removed and ``path`` is untouched.
* **Never delete what we did not create.** A marker file (``.versatileffn``: kind, version, host, pid) identifies
  our folders. An existing ``path`` is replaced only when it is empty or ours of the same kind; folders written
  before markers existed are recognised by their content (``legacy_kind``).
* **Orphans.** A killed write leaves its temporary sibling behind; the next write of the same folder removes it
  (under the lock, so it cannot be in use) and puts back a folder that a killed swap had moved aside.
* **Umask.** Folders are made with ``os.mkdir`` (mode 0o777 less the umask), never ``tempfile.mkdtemp`` (0o700);
  the files in them get the umask's modes too (``apply_umask``).
* **Lock.** ``FolderLock(path)``: ``.NAME.lock`` beside the folder holds the owner's PID and host under an
  ``flock``; the kernel drops the flock when the owner dies, so a lock left by a dead process is taken over.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import secrets
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from .errors import MissingInputError, UserError

log = logging.getLogger(__name__)

MARKER = ".versatileffn"
MARKER_VERSION = 1
KINDS = ("run", "model", "checkpoint", "dataset", "analysis")


# ----------------------------------------------------------------------------- markers and kinds


def write_marker(folder: str | Path, kind: str, **extra) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown folder kind {kind!r}; kinds: {KINDS}")
    info = {"kind": kind, "version": MARKER_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": socket.gethostname(), "pid": os.getpid(), **extra}
    _write_atomic(Path(folder) / MARKER, json.dumps(info, indent=1).encode())


def read_marker(folder: str | Path) -> dict | None:
    try:
        info = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("kind") in KINDS else None


def _json_field(path: Path, key: str):
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get(key) if isinstance(data, dict) else None


def legacy_kind(folder: Path) -> str | None:
    """The kind of a folder versatileffn wrote before markers existed, from its content (None: not ours)."""
    if (folder / "config.yaml").is_file() and ((folder / "metrics.jsonl").is_file()
                                               or (folder / "checkpoints").is_dir()):
        return "run"
    if (folder / "trainer_state.json").is_file() and (folder / "model.safetensors").is_file():
        return "checkpoint"
    if _json_field(folder / "config.json", "format") == "versatileffn":
        return "model"
    model_type = _json_field(folder / "config.json", "model_type")
    if isinstance(model_type, str) and model_type.startswith("versatileffn_"):
        return "model"
    if _json_field(folder / "index.json", "format") == "versatileffn-tokens":
        return "dataset"
    if (folder / "analysis.json").is_file() and (folder / "report.html").is_file():
        return "analysis"
    return None


def folder_kind(folder: str | Path) -> str | None:
    """``run`` / ``model`` / ... for a folder versatileffn wrote (marker, else content); None otherwise."""
    folder = Path(folder)
    marker = read_marker(folder)
    return marker["kind"] if marker else legacy_kind(folder)


def check_replaceable(path: str | Path, kind: str) -> None:
    """UserError unless ``path`` is absent, an empty folder, or a folder of ``kind`` that versatileffn wrote."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise UserError(f"{path} exists and is not a folder; refusing to replace it (choose another output path)")
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return
    found = folder_kind(path)
    if found == kind:
        return
    if found is not None:
        raise UserError(f"{path} is a versatileffn {found} folder, not a {kind} folder; refusing to replace it "
                        "(choose another output path)")
    shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
    raise UserError(f"{path} exists and holds files that versatileffn did not write ({shown}); refusing to replace "
                    "it: choose another output path, or empty the folder yourself")


# ----------------------------------------------------------------------------- paths we can write


def check_writable(path: str | Path, what: str = "folder") -> None:
    """Fail now, with one message, when ``path`` (a folder or file to be written) cannot be written: a parent is
    a file, permission is denied, the file system is read-only. Nothing is created."""
    path = Path(path)
    if path.exists() and what == "folder" and not path.is_dir():
        raise UserError(f"cannot write to {path}: it is a file, not a folder")
    if path.is_dir() and what == "file":
        raise UserError(f"cannot write to {path}: it is a folder, not a file")
    anc = path.parent
    while not anc.exists():
        if anc.is_symlink():
            raise UserError(f"cannot write to {path}: {anc} is a broken link")
        anc = anc.parent
    if not anc.is_dir():
        raise UserError(f"cannot write to {path}: {anc} is a file, not a folder")
    if _read_only_fs(anc):
        raise UserError(f"cannot write to {path}: {anc} is on a read-only file system")
    kwargs = {"effective_ids": True} if os.access in os.supports_effective_ids else {}
    if not os.access(anc, os.W_OK | os.X_OK, **kwargs):
        raise UserError(f"cannot write to {path}: permission denied on {anc}")


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def make_dirs(path: str | Path) -> Path:
    """``mkdir -p`` with the user's umask and one clear message for the usual failures."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"cannot create folder {path}: a file of that name is in the way") from None
    except NotADirectoryError:
        raise UserError(f"cannot create folder {path}: one of its parents is a file") from None
    except PermissionError:
        raise UserError(f"cannot create folder {path}: permission denied") from None
    except OSError as exc:
        if exc.errno == errno.EROFS:
            raise UserError(f"cannot create folder {path}: read-only file system") from None
        raise
    return path


# ----------------------------------------------------------------------------- temporary siblings and orphans

_SIBLING = re.compile(r"^\.(?P<name>.+)\.(?P<role>tmp|old)-(?P<pid>\d+)-[0-9a-f]{8}$")


def _sibling(final: Path, role: str) -> Path:
    return final.with_name(f".{final.name}.{role}-{os.getpid()}-{secrets.token_hex(4)}")


def new_temp_folder(final: Path) -> Path:
    """An empty ``.NAME.tmp-PID-XXXX`` beside ``final`` (what ``clean_orphans`` removes when its writer died)."""
    tmp = _sibling(final, "tmp")
    os.mkdir(tmp)  # mode 0o777 minus the umask (tempfile.mkdtemp would make it 0o700)
    return tmp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_orphans(final: str | Path | None = None, parent: str | Path | None = None) -> list[Path]:
    """Remove temporary siblings of ``final`` (or, with ``parent``, of anything in that folder) left by killed
    writes, and put back a folder that a killed swap had moved aside. Call it holding the lock that covers them
    (then no other writer can be using them). Returns what it removed."""
    parent = Path(parent) if parent is not None else Path(final).parent
    removed = []
    if not parent.is_dir():
        return removed
    for p in sorted(parent.iterdir()):
        m = _SIBLING.match(p.name)
        if not m or (final is not None and m.group("name") != Path(final).name):
            continue
        if int(m.group("pid")) == os.getpid():
            continue  # this process's own write in progress (another thread)
        original = p.with_name(m.group("name"))
        if m.group("role") == "old" and p.is_dir() and not original.exists():
            os.rename(p, original)  # a swap was killed between its two renames: the old folder is the good one
            log.warning("restored %s from %s (a replacement of it was interrupted)", original, p.name)
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
        log.info("removed %s, left by an interrupted write (process %s)", p, m.group("pid"))
    return removed


def current_umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it (and put it back at once)
    os.umask(mask)
    return mask


def apply_umask(folder: Path) -> None:
    """Give the files written into ``folder`` the modes the user's umask asks for: some writers create theirs
    0o600 (safetensors writes through a private temporary file), which would hide a shared model from its group."""
    mask = current_umask()
    for p in folder.rglob("*"):
        if p.is_symlink():
            continue
        full = 0o777 if p.is_dir() or p.stat().st_mode & 0o111 else 0o666
        p.chmod(full & ~mask)


def swap_in(tmp: Path, final: Path) -> None:
    """Put the complete folder ``tmp`` in place of ``final``; the old one is deleted only after the swap."""
    if not final.exists():
        os.rename(tmp, final)
        return
    if not any(final.iterdir()):
        try:
            os.rename(tmp, final)  # rename(2) replaces an empty folder atomically
            return
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.EXDEV, errno.ENOTEMPTY, errno.EEXIST):
                raise
            for entry in tmp.iterdir():  # e.g. a mount point: move the entries into it instead
                os.rename(entry, final / entry.name)
            tmp.rmdir()
            return
    old = _sibling(final, "old")
    os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(path: str | Path, kind: str, *, lock: bool = True, replace: bool = True,
                  marker: dict | None = None) -> Iterator[Path]:
    """Write a folder atomically: yields an empty temporary sibling, swapped in for ``path`` on success.

    ``path`` may exist only as an empty folder or a ``kind`` folder versatileffn wrote (``replace=False``: may not
    exist at all). ``lock``: hold ``path``'s ``FolderLock`` meanwhile (False when the caller already holds a lock
    that covers it, e.g. a checkpoint inside a locked run folder). The marker is written into the new folder.
    """
    final = Path(path)
    check_writable(final)
    make_dirs(final.parent)
    with (FolderLock(final) if lock else contextlib.nullcontext()):
        clean_orphans(final)
        if not replace and final.exists():
            raise UserError(f"{final} already exists")
        check_replaceable(final, kind)
        tmp = new_temp_folder(final)
        try:
            yield tmp
            write_marker(tmp, kind, **(marker or {}))
            apply_umask(tmp)
            swap_in(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_file_atomic(path: str | Path, text: str | bytes) -> Path:
    """Write a file through a temporary sibling and ``os.replace`` (a reader never sees half a file)."""
    path = Path(path)
    check_writable(path, "file")
    make_dirs(path.parent)
    _write_atomic(path, text.encode("utf-8") if isinstance(text, str) else text)
    return path


# ----------------------------------------------------------------------------- the lock

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: PID/host check only
    fcntl = None


class FolderLock:
    """An exclusive lock on a folder for one process: ``.NAME.lock`` beside it holds the PID and host.

    Taken with ``flock`` (released by the kernel when the owner dies, so a lock file left by a dead process
    is stale and taken over). Where the file system has no ``flock``, a lock whose PID is not alive on this host
    is stale; a lock from another host is then refused (its process cannot be checked from here).
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder.with_name(f".{self.folder.name}.lock")
        self.fd: int | None = None

    def __enter__(self) -> "FolderLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()

    def _holder(self, fd: int) -> dict:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            info = json.loads(os.read(fd, 65536).decode("utf-8") or "{}")
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def _busy(self, info: dict) -> UserError:
        who = f"process {info.get('pid', '?')} on {info.get('host', '?')}"
        since = f" since {info['started']}" if info.get("started") else ""
        cmd = f" ({info['command']})" if info.get("command") else ""
        return UserError(f"{self.folder} is in use by {who}{since}{cmd}; wait for it to finish or stop it "
                         f"(if that process is gone, delete {self.path})")

    def acquire(self) -> None:
        if self.fd is not None:
            return
        make_dirs(self.path.parent)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300]}
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                previous = self._lock(fd)
                if os.fstat(fd).st_ino != os.stat(self.path).st_ino:  # unlinked by a releasing owner meanwhile
                    os.close(fd)
                    continue
            except FileNotFoundError:
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            if previous.get("pid") and (previous.get("pid"), previous.get("host")) != (me["pid"], me["host"]):
                log.warning("took over a stale lock of process %s on %s (it is no longer running)",
                            previous.get("pid"), previous.get("host"))
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(me).encode())
            self.fd = fd
            return
        raise UserError(f"could not take the lock {self.path} (it keeps changing)")

    def _lock(self, fd: int) -> dict:
        """Lock ``fd``; returns the previous holder's record (a stale one). UserError when a live process holds it."""
        info = self._holder(fd)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return info
            except BlockingIOError:
                raise self._busy(self._holder(fd)) from None
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
        # no flock here: trust the PID when it is on this host
        if info.get("pid") and info.get("pid") != os.getpid():
            if info.get("host") != socket.gethostname() or _alive(int(info["pid"])):
                raise self._busy(info)
        return info

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if self.path.exists() and os.fstat(self.fd).st_ino == os.stat(self.path).st_ino:
                self.path.unlink()
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


def require_folder(path: str | Path, what: str) -> Path:
    """An input folder that must exist: a clear message naming ``what`` it should be."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{what} not found: {path}")
    if not path.is_dir():
        raise UserError(f"{what} {path} is a file, not a folder")
    return path
