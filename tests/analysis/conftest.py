"""Fixtures for the analysis tests (the helpers live in analysis_fixtures.py so test files can import them)."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from analysis_fixtures import cat_id, token_stream, tokenizer  # noqa: E402,F401


@pytest.fixture(autouse=True)
def _one_thread():
    """The tiny matmuls here are ~100x slower with 2 OpenMP threads on a busy 2-core machine (thread spin-waits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
