"""Fixtures for the analysis tests (the helpers live in analysis_fixtures.py so test files can import them)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from analysis_fixtures import cat_id, token_stream, tokenizer  # noqa: E402,F401
