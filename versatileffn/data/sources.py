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
from pathlib import Path
from typing import Any, Iterable, Iterator

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


def _txt_docs(path: Path) -> Iterator[str]:
    with _open_text(path) as fh:
        text = fh.read()
    for doc in _BLANK_LINES.split(text):
        doc = doc.strip()
        if doc:
            yield doc


def _jsonl_docs(path: Path, text_field: str) -> Iterator[str]:
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno} is not valid JSON: {exc}") from exc
            if not isinstance(row, dict) or text_field not in row:
                raise ValueError(f"{path}:{lineno} has no {text_field!r} field (use --text-field to choose one)")
            text = row[text_field]
            if isinstance(text, str) and text.strip():
                yield text


def _parquet_docs(path: Path, text_field: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    if text_field not in pf.schema_arrow.names:
        raise ValueError(f"{path} has no column {text_field!r}; columns: {pf.schema_arrow.names}")
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
    raise ValueError(f"unsupported file type {path.name!r}; supported: {', '.join(SUFFIXES)}")


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
            raise ValueError(f"dataset rows have no {text_field!r} field; fields: {sorted(row)}")
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
                raise ValueError(f"directory {p} holds no supported files ({', '.join(SUFFIXES)})")
            out.extend(str(f) for f in files)
        elif p.is_file():
            if _kind(p) is None:
                raise ValueError(f"unsupported file type {p.name!r}; supported: {', '.join(SUFFIXES)}")
            if p.stat().st_size == 0:
                raise ValueError(f"data file {p} is empty")
            out.append(str(p))
        else:
            raise FileNotFoundError(f"data source not found: {p}")
    if not out:
        raise ValueError("no data sources given")
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
