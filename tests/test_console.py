"""Logging set-up and the one progress bar: tqdm on a terminal, periodic lines (never carriage returns) in a log."""
import io
import logging

import pytest

from versatileffn import console


class FakeStream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_prints_periodic_lines_when_stderr_is_not_a_terminal(monkeypatch):
    stream = FakeStream(tty=False)
    monkeypatch.setattr(console.sys, "stderr", stream)
    console.configure_logging(stream=stream)
    monkeypatch.setenv("VERSATILEFFN_PROGRESS_SECONDS", "0")  # a line per update (default: every 30 s)
    bar = console.progress(total=4, desc="training", unit="step")
    for _ in range(4):
        bar.update(1)
        bar.set_postfix(loss="1.000")
    bar.close()
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 4 and lines[-1].startswith("training: 4/4 step (100%)")  # close() adds no repeat
    assert "step/s" in lines[0] and "loss=1.000" in lines[1]
    monkeypatch.setenv("VERSATILEFFN_PROGRESS_SECONDS", "3600")
    stream.truncate(0)
    stream.seek(0)
    assert list(console.progress(range(100), desc="scoring")) == list(range(100))
    assert stream.getvalue().splitlines() == [stream.getvalue().splitlines()[0]]  # one line at the end only
    assert stream.getvalue().startswith("scoring: 100/100 it (100%)")


@pytest.fixture(autouse=True)
def _restore_logging():
    with console.logging_configured():
        yield


def test_quiet_or_disabled_progress_prints_nothing_and_a_terminal_gets_tqdm(monkeypatch):
    stream = FakeStream(tty=False)
    monkeypatch.setattr(console.sys, "stderr", stream)
    console.configure_logging(quiet=True, stream=stream)
    console.progress(range(3), desc="x").close()
    logging.getLogger("versatileffn.train").info("hidden")
    logging.getLogger("versatileffn.train").warning("shown")
    assert stream.getvalue() == "warning: shown\n"
    console.configure_logging(stream=stream)
    assert isinstance(console.progress(total=3, enabled=False), console.LineProgress)  # the silent kind
    monkeypatch.setattr(console.sys, "stderr", FakeStream(tty=True))
    from tqdm import tqdm

    bar = console.progress(total=3)
    assert isinstance(bar, tqdm)
    bar.close()


def test_configure_logging_twice_keeps_one_handler_and_the_block_restores_it():
    logger = logging.getLogger(console.ROOT)
    before = (list(logger.handlers), logger.level, logger.propagate)
    with console.logging_configured():
        console.configure_logging(debug=True)
        ours = [h for h in logger.handlers if getattr(h, console._HANDLER_FLAG, False)]
        assert len(ours) == 1 and logger.level == logging.DEBUG and logger.propagate is False
    assert (list(logger.handlers), logger.level, logger.propagate) == before
