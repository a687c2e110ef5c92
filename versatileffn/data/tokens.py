"""The packed token format every part of the project reads: one folder per prepared dataset.

    <dir>/index.json   {"format": "versatileffn-tokens", "tokenizer": name, "vocab_size": V, "eos_id": E,
                        "dtype": "uint16"|"uint32", "splits": {"train": {"file": "train.bin", "tokens": N,
                        "documents": D, "bytes": B}, "val": {...}}}
    <dir>/<split>.bin  raw little-endian token ids, documents joined with one EOS after each

``bytes`` is the UTF-8 size of the split's text, so bits-per-byte can be computed from a token-level loss.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..config import read_json
from ..errors import MissingInputError, UserError

FORMAT = "versatileffn-tokens"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2 ** 16 else np.dtype(np.uint32)


def read_index(data_dir: str | Path) -> dict:
    f = Path(data_dir) / "index.json"
    index = read_json(f, f"{data_dir} is not a prepared token folder (no index.json); make one with "
                         "`versatileffn prepare-data`")
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise UserError(f"{f} is not a {FORMAT} index (format={index.get('format')!r})")
    return index


def load_tokens(data_dir: str | Path, split: str) -> np.ndarray:
    """Memory-map one split as a 1-D array of token ids; clear errors for missing, empty or truncated files."""
    index = read_index(data_dir)
    splits = index.get("splits", {})
    if split not in splits:
        raise UserError(f"{data_dir} has no split {split!r}; it has {sorted(splits)}")
    meta = splits[split]
    f = Path(data_dir) / meta["file"]
    if not f.is_file():
        raise MissingInputError(f"token file missing: {f}")
    dtype = np.dtype(index["dtype"])
    size = f.stat().st_size
    if size == 0 or meta.get("tokens", 0) == 0:
        raise UserError(f"token file {f} is empty")
    if size != meta["tokens"] * dtype.itemsize:
        raise UserError(f"token file {f} holds {size} bytes; index.json says {meta['tokens']} tokens of "
                        f"{dtype.name} ({meta['tokens'] * dtype.itemsize} bytes): truncated or corrupt")
    return np.memmap(f, dtype=dtype, mode="r")


def write_split(data_dir: str | Path, split: str, tokens: np.ndarray, documents: int, n_bytes: int,
                index: dict) -> dict:
    """Write one split atomically (temp file + rename) and record it in ``index`` (not yet saved)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    dtype = np.dtype(index["dtype"])
    f = data_dir / f"{split}.bin"
    tmp = f.with_suffix(".bin.tmp")
    np.asarray(tokens, dtype=dtype).tofile(tmp)
    os.replace(tmp, f)
    index.setdefault("splits", {})[split] = {"file": f.name, "tokens": int(len(tokens)), "documents": int(documents),
                                             "bytes": int(n_bytes)}
    return index


def write_index(data_dir: str | Path, index: dict) -> None:
    f = Path(data_dir) / "index.json"
    tmp = f.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"format": FORMAT, **index}, indent=2))
    os.replace(tmp, f)


class SplitWriter:
    """Stream one split to ``<split>.bin`` in chunks (for corpora that do not fit in memory).

    Writes go to ``<split>.bin.tmp``; ``close()`` renames it into place and records the split in ``index``
    exactly as ``write_split`` does, so a crash mid-preparation never leaves a truncated ``.bin`` behind.
    """

    def __init__(self, data_dir: str | Path, split: str, dtype: np.dtype):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.split, self.dtype = split, np.dtype(dtype)
        self.path = self.data_dir / f"{split}.bin"
        self.tmp = self.path.with_suffix(".bin.tmp")
        self.fh = open(self.tmp, "wb")
        self.tokens = self.documents = self.n_bytes = 0

    def write(self, ids, n_bytes: int = 0) -> None:
        """Append one document's ids (the caller adds the trailing EOS)."""
        arr = np.asarray(ids, dtype=self.dtype)
        arr.tofile(self.fh)
        self.tokens += len(arr)
        self.documents += 1
        self.n_bytes += int(n_bytes)

    def close(self, index: dict) -> dict:
        self.fh.close()
        os.replace(self.tmp, self.path)
        index.setdefault("splits", {})[self.split] = {"file": self.path.name, "tokens": int(self.tokens),
                                                      "documents": int(self.documents), "bytes": int(self.n_bytes)}
        return index

    def abort(self) -> None:
        self.fh.close()
        self.tmp.unlink(missing_ok=True)
