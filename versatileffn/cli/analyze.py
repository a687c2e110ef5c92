"""``versatileffn analyze``: the paper's Sec. 4.3 pictures and the loop-cap sweep for a trained model."""
from __future__ import annotations

import argparse

import torch

from ..analysis import load_analysis_tokenizer, load_analysis_tokens, run_analysis
from ..analysis.inputs import check_vocab
from ..errors import UserError
from ..folders import check_replaceable, check_writable
from ..loading import load_any_model


def _caps(text: str) -> list[int | None]:
    caps = []
    for part in text.split(","):
        part = part.strip().lower()
        if part in ("none", "off", ""):
            caps.append(None)
        elif part.isdigit() and int(part) >= 1:
            caps.append(int(part))
        else:
            raise argparse.ArgumentTypeError(f"--caps takes comma-separated integers >= 1 or 'none'; got {part!r}")
    return caps


def register(sub) -> None:
    p = sub.add_parser("analyze", help="loops, gate, experts, width-vs-depth, word clouds, loop-cap sweep (Sec. 4.3)",
                       description="Writes OUT/report.html (self-contained), OUT/analysis.json and OUT/*.png.")
    p.add_argument("--model", required=True, help="model folder (ours, or a converted Hugging Face one)")
    p.add_argument("--data", required=True, nargs="+",
                   help="prepared token folder(s) (split --split), .txt / .jsonl (.gz) text file(s), and/or "
                        "task:NAME (a benchmark's questions with their gold answers, e.g. task:arc_challenge)")
    p.add_argument("--out", required=True, help="output folder (a new one, or an earlier analysis folder it replaces; "
                   "any other folder is refused)")
    p.add_argument("--split", default="val", help="split of prepared token folders")
    p.add_argument("--text-key", default="text", help="field holding the text in .jsonl files")
    p.add_argument("--tokenizer", default=None, help="tokenizer spec (default: the model folder's tokenizer.json)")
    p.add_argument("--layer", type=int, default=0,
                   help="VersatileFFN layer (0-based) for the word clouds and the sample heatmap (paper: 0)")
    p.add_argument("--max-tokens", type=int, default=16384, help="analyse at most this many tokens")
    p.add_argument("--seq-len", type=int, default=None, help="sequence length (default: min(max_seq_len, 512))")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward")
    p.add_argument("--sample", type=int, default=0, help="sequence index for the cosine heatmap")
    p.add_argument("--heatmap-positions", type=int, default=64, help="positions shown in the sample heatmap")
    p.add_argument("--top-words", type=int, default=50, help="tokens per word cloud / ranked list")
    p.add_argument("--min-count", type=int, default=3, help="rank only token texts seen at least this often")
    p.add_argument("--no-sweep", action="store_true", help="skip the inference loop-cap sweep")
    p.add_argument("--caps", type=_caps, default=None,
                   help="loop caps to sweep, e.g. 1,2,none (default: 1..L_max,none)")
    p.add_argument("--tasks", default=None, help="comma-separated benchmark tasks for the sweep (default: none)")
    p.add_argument("--task-limit", type=int, default=None, help="examples per task in the sweep (default: all)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.max_tokens is not None and args.max_tokens < 2:
        raise UserError(f"--max-tokens must be >= 2; got {args.max_tokens}")
    check_writable(args.out)
    check_replaceable(args.out, "analysis")  # refused now, not after the analysis ran
    model, _ = load_any_model(args.model, args.device)
    tokenizer = load_analysis_tokenizer(args.model, args.tokenizer)
    tokens, n_bytes, sources = load_analysis_tokens(args.data, tokenizer, args.split, args.text_key, args.max_tokens)
    check_vocab(tokens, getattr(getattr(model, "config", None), "vocab_size", None))
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    run_analysis(model, tokenizer, tokens, args.out, layer=args.layer, seq_len=args.seq_len,
                 batch_size=args.batch_size, max_tokens=args.max_tokens, sample_index=args.sample,
                 heatmap_positions=args.heatmap_positions, top_words=args.top_words, min_count=args.min_count,
                 sweep=not args.no_sweep, caps=args.caps, tasks=tasks, task_limit=args.task_limit, n_bytes=n_bytes,
                 sources=sources, model_path=args.model, progress=not args.quiet)
    return 0
