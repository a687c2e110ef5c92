"""What `versatileffn analyze` reads besides the model (``loading.load_any_model``): its tokenizer and text to run it
on (prepared token folders, raw .txt / .jsonl files tokenized with the model's tokenizer, benchmark questions)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.sources import iter_documents
from ..data.tokens import load_tokens, read_index
from ..tokenizer import Tokenizer, load_tokenizer

TEXT_SUFFIXES = (".txt", ".jsonl", ".txt.gz", ".jsonl.gz")
TASK_PREFIX = "task:"  # --data task:arc_challenge = the benchmark's questions with their gold answers


def load_analysis_tokenizer(model_dir: str | Path, spec: str | None = None) -> Tokenizer:
    """``spec`` if given (see ``load_tokenizer``), else the model folder's tokenizer.json."""
    if spec is not None:
        return load_tokenizer(spec)
    f = Path(model_dir) / "tokenizer.json"
    if not f.is_file():
        raise FileNotFoundError(f"{model_dir} holds no tokenizer.json; pass --tokenizer (e.g. 'olmo' or a "
                                "tokenizer.json path)")
    return load_tokenizer(f)


def _text_suffix(path: Path) -> str | None:
    return next((s for s in TEXT_SUFFIXES if path.name.endswith(s)), None)


def task_documents(name: str) -> list[str]:
    """A benchmark's questions with their gold answers as text (the paper's Sec. 4.3 figures use ARC-C):
    per question, the gold choice's context + continuation, from the offline OLMES requests."""
    from ..eval.tasks import load_task

    return [d.contexts[d.label] + d.continuations[d.label] for d in load_task(name).docs]


def _tokenize(docs: list[str], tokenizer: Tokenizer, budget: int | None) -> tuple[np.ndarray, list[str]]:
    """Token ids of ``docs`` with one EOS after each; stops once ``budget`` tokens are collected.
    Returns (ids, the documents actually used)."""
    ids: list[int] = []
    for i, doc in enumerate(docs):
        if budget is not None and len(ids) >= budget:
            docs = docs[:i]
            break
        ids += [*tokenizer.encode(doc), tokenizer.eos_id]
    return np.asarray(ids, dtype=np.int64), docs


def load_analysis_tokens(paths: list[str | Path], tokenizer: Tokenizer, split: str = "val", text_key: str = "text",
                         max_tokens: int | None = None) -> tuple[np.ndarray, int | None, list[dict]]:
    """Concatenate the token streams of ``paths``: prepared token folders (split ``split``), .txt (documents
    separated by blank lines) / .jsonl (one document per line, field ``text_key``) files, optionally gzipped, or
    ``task:NAME`` (a benchmark's questions + gold answers); text is tokenized with ``tokenizer`` with one EOS
    after each document (the prepared format's convention).

    Text stops being tokenized once ``max_tokens`` tokens are collected (the stream may be longer).
    Returns (token ids, UTF-8 bytes of the text or None when a folder does not record it, source list).
    """
    if not paths:
        raise ValueError("no --data given: pass a prepared token folder, .txt/.jsonl file(s) or task:NAME")
    streams, sources, n_bytes, total = [], [], 0, 0
    for spec in map(str, paths):
        p = Path(spec)
        if spec.startswith(TASK_PREFIX):
            name = spec[len(TASK_PREFIX):]
            docs = task_documents(name)
            toks, docs = _tokenize(docs, tokenizer, None if max_tokens is None else max_tokens - total)
            sources.append({"path": spec, "kind": "task", "documents": len(docs), "tokens": int(len(toks))})
        elif p.is_dir():
            index = read_index(p)
            if index.get("vocab_size") and tokenizer.vocab_size and index["vocab_size"] > tokenizer.vocab_size:
                raise ValueError(f"{p} was tokenized with a {index['vocab_size']}-entry vocabulary "
                                 f"({index.get('tokenizer')}); the model's tokenizer has {tokenizer.vocab_size}")
            toks = np.asarray(load_tokens(p, split), dtype=np.int64)
            meta = index["splits"][split]
            n_bytes = None if n_bytes is None or not meta.get("bytes") else n_bytes + int(meta["bytes"])
            sources.append({"path": spec, "kind": "tokens", "split": split, "tokens": int(len(toks))})
            docs = None
        elif p.is_file():
            if _text_suffix(p) is None:
                raise ValueError(f"{p}: --data takes a prepared token folder, a {'/'.join(TEXT_SUFFIXES)} file "
                                 f"or {TASK_PREFIX}NAME")
            docs = list(iter_documents([p], text_field=text_key))  # prepare-data's reader
            if not docs:
                raise ValueError(f"{p} holds no text")
            toks, docs = _tokenize(docs, tokenizer, None if max_tokens is None else max_tokens - total)
            sources.append({"path": spec, "kind": _text_suffix(p)[1:], "documents": len(docs),
                            "tokens": int(len(toks))})
        else:
            raise FileNotFoundError(f"--data path not found: {p}")
        if docs is not None and n_bytes is not None:
            n_bytes += sum(len(d.encode("utf-8")) for d in docs)
        streams.append(toks)
        total += len(toks)
    return np.concatenate(streams), n_bytes, sources


def check_vocab(tokens: np.ndarray, vocab_size: int | None) -> None:
    if vocab_size is not None and len(tokens) and int(tokens.max()) >= vocab_size:
        raise ValueError(f"the data holds token id {int(tokens.max())}, but the model's vocabulary has "
                         f"{vocab_size} entries: data and model use different tokenizers")
