"""Data: the packed token format (tokens.py), text sources (sources.py), preparation (prepare.py),
the offline demo corpus (demo_corpus.py) and the training/validation batch samplers (loader.py)."""
from .tokens import SplitWriter, load_tokens, read_index, token_dtype, write_index, write_split

__all__ = ["SplitWriter", "load_tokens", "read_index", "token_dtype", "write_index", "write_split"]
