"""What goes to the terminal or to a log file: logging set-up and progress bars.

Library modules only log (``logging.getLogger(__name__)``, under the ``versatileffn`` logger); the command line
(and ``make demo``) calls ``configure_logging`` once. ``progress(...)`` is the one progress bar: tqdm's bar on a
terminal, and on anything else (``make demo > log``, a batch job) a plain log line every ``interval`` seconds
(``VERSATILEFFN_PROGRESS_SECONDS``, default 30) and one when it finishes, so a log file never fills with
carriage-return frames. Bars are off when ``enabled`` is false or the ``versatileffn`` logger's level is set above
INFO (``--quiet``).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import Any, Iterable, Iterator

ROOT = "versatileffn"
_HANDLER_FLAG = "_versatileffn_handler"
log = logging.getLogger(f"{ROOT}.progress")


class _Format(logging.Formatter):
    """A bare message for INFO; ``warning:`` / ``error:`` in front of the louder levels."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.ERROR:
            return f"error: {text}"
        if record.levelno >= logging.WARNING:
            return f"warning: {text}"
        return text


def configure_logging(quiet: bool = False, debug: bool = False, stream=None) -> logging.Logger:
    """Send the ``versatileffn`` logger's messages to ``stream`` (default: the current stderr), once: INFO and up,
    WARNING and up with ``quiet``, DEBUG and up with ``debug``. Calling it again replaces the handler."""
    logger = logging.getLogger(ROOT)
    for h in list(logger.handlers):
        if getattr(h, _HANDLER_FLAG, False):
            logger.removeHandler(h)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(_Format("%(message)s"))
    setattr(handler, _HANDLER_FLAG, True)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)
    logger.propagate = False  # one copy of each line, also where the application configured the root logger
    return logger


@contextlib.contextmanager
def logging_configured(quiet: bool = False, debug: bool = False) -> Iterator[logging.Logger]:
    """``configure_logging`` for the duration of a block, then the logger as it was (``main()`` called in-process,
    e.g. by tests, leaves no handler on a stream that is gone)."""
    logger = logging.getLogger(ROOT)
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        yield configure_logging(quiet=quiet, debug=debug)
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]


def progress_interval() -> float:
    try:
        return max(0.0, float(os.environ.get("VERSATILEFFN_PROGRESS_SECONDS", "30")))
    except ValueError:
        return 30.0


def _fmt_count(n: float, scale: bool) -> str:
    if not scale:
        return f"{int(n):,}"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{int(n)}"


def _fmt_time(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:d}:{s:02d}"


class LineProgress:
    """tqdm's small interface (``update``, ``set_postfix``, ``close``, iteration) as periodic log lines."""

    def __init__(self, iterable: Iterable | None = None, total: float | None = None, initial: float = 0,
                 desc: str = "", unit: str = "it", unit_scale: bool = False, leave: bool = True,
                 interval: float | None = None):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.n, self.start_n = total, initial, initial
        self.desc, self.unit, self.unit_scale, self.leave = desc, unit, unit_scale, leave
        self.interval = progress_interval() if interval is None else interval
        self.t0 = self.last = time.monotonic()
        self.shown = initial  # the count of the last line written
        self.postfix: dict[str, Any] = {}
        self.closed = False

    def line(self) -> str:
        elapsed = time.monotonic() - self.t0
        done = _fmt_count(self.n, self.unit_scale)
        if self.total:
            done += f"/{_fmt_count(self.total, self.unit_scale)} {self.unit} ({100 * self.n / self.total:.0f}%)"
        else:
            done += f" {self.unit}"
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        speed = f"{rate:.2f}" if rate < 10 and not self.unit_scale else _fmt_count(rate, self.unit_scale)
        parts = [f"{self.desc}: {done}" if self.desc else done, f"{speed} {self.unit}/s",
                 f"{_fmt_time(elapsed)} elapsed"]
        parts += [f"{k}={v}" for k, v in self.postfix.items()]
        return ", ".join(parts)

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last, self.shown = now, self.n
            log.info(self.line())

    def set_postfix(self, **kwargs) -> None:
        self.postfix = {k: v for k, v in kwargs.items()}

    def close(self) -> None:
        if not self.closed and self.leave and self.n != self.shown:
            log.info(self.line())
        self.closed = True

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _NoProgress(LineProgress):
    def update(self, n: float = 1) -> None:
        self.n += n

    def close(self) -> None:
        self.closed = True


def progress(iterable: Iterable | None = None, *, total: float | None = None, initial: float = 0, desc: str = "",
             unit: str = "it", unit_scale: bool = False, leave: bool = True, enabled: bool = True):
    """The project's progress bar (see the module docstring); use it like ``tqdm``."""
    kwargs = dict(total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit_scale, leave=leave)
    if not enabled or logging.getLogger(ROOT).level > logging.INFO:  # --quiet (unconfigured: NOTSET, bars on)
        return _NoProgress(iterable, **kwargs)
    if sys.stderr is not None and sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(iterable, dynamic_ncols=True, **kwargs)
    return LineProgress(iterable, **kwargs)
