"""Text sources -> an iterator of documents (plain strings).

Supported: ``.txt`` (documents separated by one or more blank lines), ``.jsonl`` (one JSON object per line,
text in ``text_field``), the ``.gz`` of both, ``.parquet`` (column ``text_field``), a directory (every
supported file inside, sorted, recursively), and Hugging Face datasets by name with streaming:
``hf:NAME`` or ``hf:NAME:SUBSET`` (FineWeb-Edu, the paper's corpus: ``hf:HuggingFaceFW/fineweb-edu:sample-100BT``).
A ``datasets.Dataset`` / ``IterableDataset`` object can be passed directly from Python.
"""
from __future__ import annotations

import gzip
import json
import re
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import MissingInputError, UserError

SUFFIXES = (".txt", ".jsonl", ".txt.gz", ".jsonl.gz", ".parquet")
FINEWEB_EDU = "hf:HuggingFaceFW/fineweb-edu:sample-100BT"
_BLANK_LINES = re.compile(r"\n\s*\n")


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _lines(path: Path) -> Iterator[str]:
    """The file's lines; one clear message (naming the file and line) for text that is not UTF-8 or a broken .gz."""
    lineno = 0
    try:
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, 1):
                yield line
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}:{lineno + 1} is not UTF-8 text (byte {exc.object[exc.start]:#04x}); convert the "
                        "file to UTF-8") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise UserError(f"{path} is not a readable gzip file (truncated or corrupt: {exc})") from None


def _txt_docs(path: Path) -> Iterator[str]:
    for doc in _BLANK_LINES.split("".join(_lines(path))):
        doc = doc.strip()
        if doc:
            yield doc


def _jsonl_docs(path: Path, text_field: str) -> Iterator[str]:
    for lineno, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{lineno} is not valid JSON: {exc}") from None
        if not isinstance(row, dict) or text_field not in row:
            raise UserError(f"{path}:{lineno} has no {text_field!r} field (use --text-field to choose one)")
        text = row[text_field]
        if text is not None and not isinstance(text, str):
            raise UserError(f"{path}:{lineno}: field {text_field!r} holds {type(text).__name__} {str(text)[:40]!r}, "
                            "not text (use --text-field to choose another field)")
        if text and text.strip():
            yield text


def _parquet_docs(path: Path, text_field: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    if text_field not in pf.schema_arrow.names:
        raise UserError(f"{path} has no column {text_field!r}; columns: {pf.schema_arrow.names}")
    for batch in pf.iter_batches(columns=[text_field], batch_size=1024):
        for text in batch.column(0).to_pylist():
            if isinstance(text, str) and text.strip():
                yield text


def _file_docs(path: Path, text_field: str) -> Iterator[str]:
    kind = _kind(path)
    if kind in (".txt", ".txt.gz"):
        return _txt_docs(path)
    if kind in (".jsonl", ".jsonl.gz"):
        return _jsonl_docs(path, text_field)
    if kind == ".parquet":
        return _parquet_docs(path, text_field)
    raise UserError(f"unsupported file type {path.name!r}; supported: {', '.join(SUFFIXES)}")


def _hf_docs(spec: str, text_field: str, split: str) -> Iterator[str]:
    """``hf:NAME[:SUBSET]`` streamed from the hub (needs internet; nothing is downloaded up front)."""
    import datasets

    parts = spec[3:].split(":")
    name, subset = parts[0], (parts[1] if len(parts) > 1 else None)
    ds = datasets.load_dataset(name, subset, split=split, streaming=True)
    return dataset_docs(ds, text_field)


def dataset_docs(ds: Any, text_field: str = "text") -> Iterator[str]:
    """Documents of a ``datasets.Dataset`` or ``IterableDataset`` (rows are dicts)."""
    for row in ds:
        text = row.get(text_field) if isinstance(row, dict) else None
        if text is None:
            raise UserError(f"dataset rows have no {text_field!r} field; fields: {sorted(row)}")
        if not isinstance(text, str):
            raise UserError(f"dataset field {text_field!r} holds {type(text).__name__}, not text")
        if text.strip():
            yield text


def expand_paths(sources: Iterable[str | Path]) -> list[str]:
    """Resolve files/directories (recursively, sorted) and keep ``hf:`` specs; missing or empty -> ValueError."""
    out: list[str] = []
    for src in sources:
        s = str(src)
        if s.startswith("hf:"):
            out.append(s)
            continue
        p = Path(s)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and _kind(f))
            if not files:
                raise UserError(f"directory {p} holds no supported files ({', '.join(SUFFIXES)})")
            out.extend(str(f) for f in files)
        elif p.is_file():
            if _kind(p) is None:
                raise UserError(f"unsupported file type {p.name!r}; supported: {', '.join(SUFFIXES)}")
            if p.stat().st_size == 0:
                raise UserError(f"data file {p} is empty")
            out.append(str(p))
        else:
            raise MissingInputError(f"data source not found: {p}")
    if not out:
        raise UserError("no data sources given")
    return out


def iter_documents(sources: Iterable[str | Path] | Any, text_field: str = "text",
                   hf_split: str = "train") -> Iterator[str]:
    """All documents of all sources, in order. ``sources``: paths / ``hf:`` specs, or a datasets object."""
    if hasattr(sources, "features") or type(sources).__module__.startswith("datasets"):
        yield from dataset_docs(sources, text_field)
        return
    for src in expand_paths(sources):
        if src.startswith("hf:"):
            yield from _hf_docs(src, text_field, hf_split)
        else:
            yield from _file_docs(Path(src), text_field)
