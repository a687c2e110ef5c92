"""Data: the packed token format (tokens.py); preparation and loaders live beside it."""
from .tokens import load_tokens, read_index, token_dtype, write_index, write_split

__all__ = ["load_tokens", "read_index", "token_dtype", "write_index", "write_split"]
