"""Fixtures of the reliability tests (README "Reliability"); helpers in reliability_helpers.py."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # reliability_helpers (pytest runs with --import-mode=importlib)
sys.path.insert(0, str(Path(__file__).parents[1] / "train"))  # train_helpers.micro_config


@pytest.fixture
def cli(capsys):
    """``cli(*args) -> (exit code, stdout, stderr)`` of ``versatileffn ARGS`` run in this process."""
    from versatileffn.cli import main

    def run(*args):
        capsys.readouterr()
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return rc, out, err

    return run
