"""Tokenize documents into the packed token format (``tokens.py``), with a train/validation split.

* one EOS after every document, so packed windows never run two documents together without a boundary;
* the split is decided by a hash of the document text, so it is stable across runs, source orders and
  worker counts, and a duplicated document always lands in the same split;
* tokenization runs in ``workers`` processes over chunks of documents (order preserved), with a progress bar;
* the dataset is written into a temporary sibling folder and swapped in when complete (``folders.atomic_folder``);
* a small byte-level BPE can be trained on the training documents for tiny CPU models
  (``train_bpe``): a 50k vocabulary would otherwise hold most of a tiny model's parameters.
"""
from __future__ import annotations

import hashlib
import itertools
import multiprocessing as mp
from pathlib import Path
from typing import Iterable, Iterator

from ..console import progress as show_progress
from ..errors import UserError
from ..folders import atomic_folder
from ..tokenizer import Tokenizer, load_tokenizer
from .sources import iter_documents
from .tokens import SplitWriter, token_dtype, write_index

EOS_TOKEN = "<|endoftext|>"


def is_val_document(text: str, val_fraction: float) -> bool:
    """Deterministic split: the first 8 bytes of blake2b(text) as a number in [0, 1)."""
    h = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
    return h / 2 ** 64 < val_fraction


def train_bpe(documents: Iterable[str], vocab_size: int, path: str | Path | None = None) -> Tokenizer:
    """Train a byte-level BPE with ``<|endoftext|>`` as id 0 (the tokenizers library); optionally save it."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if vocab_size < 300:
        raise UserError(f"BPE vocab_size must be >= 300 (256 bytes + merges + EOS); got {vocab_size}")
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(documents, trainer=trainer)
    wrapped = Tokenizer(tok, f"bpe-{vocab_size}")
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        wrapped.save(path)
    return wrapped


# ----------------------------------------------------------------------------- worker-side tokenization

_WORKER_TOK: Tokenizer | None = None


def _init_worker(tokenizer_file: str) -> None:
    global _WORKER_TOK
    _WORKER_TOK = load_tokenizer(tokenizer_file)


def _encode_chunk(docs: list[str]) -> list[list[int]]:
    return _WORKER_TOK.encode_batch(docs)


def _chunks(docs: Iterator[str], size: int) -> Iterator[list[str]]:
    while True:
        chunk = list(itertools.islice(docs, size))
        if not chunk:
            return
        yield chunk


def prepare(sources, out_dir: str | Path, tokenizer: Tokenizer, val_fraction: float = 0.01, workers: int = 1,
            text_field: str = "text", max_docs: int | None = None, max_tokens: int | None = None,
            chunk_docs: int = 256, progress: bool = True, hf_split: str = "train") -> dict:
    """Tokenize ``sources`` into ``out_dir`` (train.bin, val.bin, index.json, tokenizer.json); returns the index.

    The dataset is written into a temporary sibling and swapped in only when complete (``folders.atomic_folder``):
    a failure leaves an existing dataset as it was, and a folder that is not a versatileffn dataset is never
    replaced. Raises UserError when the sources hold no text or a split ends up empty (e.g. too few documents
    for ``val_fraction``), so an unusable dataset is never written.
    """
    if not 0 < val_fraction < 1:
        raise UserError(f"val_fraction must be in (0, 1); got {val_fraction}")
    with atomic_folder(out_dir, "dataset") as tmp:
        return write_dataset(sources, tmp, tokenizer, val_fraction, workers, text_field, max_docs, max_tokens,
                             chunk_docs, progress, hf_split)


def write_dataset(sources, out: Path, tokenizer: Tokenizer, val_fraction: float = 0.01, workers: int = 1,
                  text_field: str = "text", max_docs: int | None = None, max_tokens: int | None = None,
                  chunk_docs: int = 256, progress: bool = True, hf_split: str = "train") -> dict:
    """``prepare``'s work, into ``out`` (an empty folder the caller made and swaps in: ``atomic_folder``)."""
    if not 0 < val_fraction < 1:
        raise UserError(f"val_fraction must be in (0, 1); got {val_fraction}")
    out = Path(out)
    tokenizer.save(out / "tokenizer.json")
    dtype = token_dtype(tokenizer.vocab_size)
    index = {"tokenizer": tokenizer.name, "vocab_size": tokenizer.vocab_size, "eos_id": tokenizer.eos_id,
             "dtype": dtype.name, "val_fraction": val_fraction}
    writers = {s: SplitWriter(out, s, dtype) for s in ("train", "val")}
    docs = iter_documents(sources, text_field=text_field, hf_split=hf_split)
    if max_docs is not None:
        docs = itertools.islice(docs, max_docs)
    pool = None
    try:
        chunks = _chunks(iter(docs), chunk_docs)
        if workers > 1:
            # spawn, not fork: the tokenizers library's thread pool does not survive a fork
            pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker,
                                                initargs=(str(out / "tokenizer.json"),))
            encoded = zip_chunks(chunks, pool)
        else:
            encoded = ((c, tokenizer.encode_batch(c)) for c in chunks)
        bar = show_progress(total=max_tokens, unit="tok", unit_scale=True, enabled=progress, desc="tokenizing")
        total = 0
        for docs_chunk, ids_chunk in encoded:
            for text, ids in zip(docs_chunk, ids_chunk):
                w = writers["val" if is_val_document(text, val_fraction) else "train"]
                w.write(ids + [tokenizer.eos_id], n_bytes=len(text.encode("utf-8")))
                total += len(ids) + 1
            bar.update(sum(len(i) + 1 for i in ids_chunk))
            if max_tokens is not None and total >= max_tokens:
                break
        bar.close()
        for split, w in writers.items():
            if w.tokens == 0:
                raise UserError(f"the {split} split is empty ({writers['train'].documents + writers['val'].documents} "
                                f"documents read): give more text or change val_fraction={val_fraction}")
        for w in writers.values():
            w.close(index)
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    finally:
        if pool is not None:
            pool.terminate()
    write_index(out, index)
    return index


def zip_chunks(chunks: Iterator[list[str]], pool) -> Iterator[tuple[list[str], list[list[int]]]]:
    """Keep each chunk beside its ids while the pool encodes them in order (imap keeps a bounded queue)."""
    window: list[list[str]] = []

    def feed():
        for c in chunks:
            window.append(c)
            yield c

    for ids in pool.imap(_encode_chunk, feed()):
        yield window.pop(0), ids
