"""``versatileffn eval`` (benchmarks, validation loss, parameter/FLOP accounting -> JSON + Markdown) and
``versatileffn compare`` (several result files side by side)."""
from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path

import torch

from ..errors import UserError
from ..eval import TASKS, evaluate_tasks, validation_metrics
from ..eval.efficiency import flop_accounting, parameter_counts
from ..eval.report import (device_name, load_for_eval, markdown_tables, model_summary, now_utc, read_record,
                           versions)
from ..eval.scoring import as_tokenizer, model_max_len, model_vocab_size
from ..folders import check_writable, write_file_atomic

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("eval", help="zero-shot benchmarks (OLMES), validation loss, params and FFN FLOPs")
    p.add_argument("--model", required=True, help="versatileffn model folder or Hugging Face causal-LM folder")
    p.add_argument("--tasks", default=",".join(TASKS),
                   help="comma-separated benchmark tasks; 'none' skips the benchmarks")
    p.add_argument("--data", default=None, help="prepared token folder (versatileffn prepare-data) for the "
                   "validation loss / perplexity / bits per byte (default: none)")
    p.add_argument("--split", default="val", help="split of --data")
    p.add_argument("--val-tokens", type=int, default=None, help="cap on predicted validation tokens (default: all)")
    p.add_argument("--seq-len", type=int, default=None, help="validation window (default: model max length, "
                   "at most 4096)")
    p.add_argument("--limit", type=int, default=None, help="first N questions per task (quick runs; default: all)")
    p.add_argument("--batch-size", type=int, default=16, help="packed rows (ours) / requests (HF) per forward")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--tokenizer", default=None, help="override the model folder's tokenizer (e.g. olmo; default: "
                   "the folder's)")
    p.add_argument("--uncond", action="store_true", help="also score the unconditional requests (acc_uncond)")
    p.add_argument("--out", required=True, help="results JSON path (checked before the evaluation runs; an existing "
                   "file is replaced only when it is an earlier result)")
    p.set_defaults(func=run_eval)

    c = sub.add_parser("compare", help="print several `versatileffn eval` results side by side (Markdown)")
    c.add_argument("results", nargs="+", help="results JSON files")
    c.set_defaults(func=run_compare)


def _command(args) -> str:
    parts = ["versatileffn", "eval"]
    for key, value in vars(args).items():
        if key in ("func", "command", "debug") or value in (None, False):
            continue
        flag = "--" + key.replace("_", "-")
        parts += [flag] if value is True else [flag, str(value)]
    return shlex.join(parts)


def check_out(path: str | Path) -> None:
    """Before any work: --out must be writable, and an existing file there must be an earlier eval result."""
    path = Path(path)
    check_writable(path, "file")
    if path.exists():
        try:
            read_record(path)
        except (UserError, ValueError, UnicodeDecodeError):
            raise UserError(f"--out {path} exists and is not a `versatileffn eval` result; refusing to replace it "
                            "(choose another path)") from None


def run_eval(args) -> int:
    from ..data import load_tokens, read_index
    from ..data.loader import check_token_range

    check_out(args.out)
    if args.data:
        read_index(args.data)  # a wrong --data fails now, not after the benchmarks
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, tokenizer, kind = load_for_eval(args.model, device, args.tokenizer)
    tasks = [] if args.tasks.strip().lower() == "none" else [t.strip() for t in args.tasks.split(",") if t.strip()]
    record = {"model": model_summary(model, args.model, kind), "date": now_utc(), "command": _command(args),
              "device": device_name(device), "dtype": "bf16 autocast" if device.type == "cuda" else "fp32",
              "versions": versions(), "limit": args.limit,
              "tokenizer": getattr(as_tokenizer(tokenizer), "name", None), "params": parameter_counts(model)}
    if tasks:
        res = evaluate_tasks(model, tokenizer, tasks, limit=args.limit, batch_size=args.batch_size, device=device,
                             progress=not args.quiet, uncond=True if args.uncond else None)
        record.update(tasks=res["tasks"], average=res["average"], throughput=res["throughput"])
        record["ffn_stats"] = res["ffn_stats"]
        record["flops"] = flop_accounting(model, res["ffn_stats"])
    else:
        record.update(tasks={}, average=None, throughput=None, ffn_stats={}, flops=flop_accounting(model, None))
    if args.data:
        index = read_index(args.data)
        if index.get("vocab_size", 0) > model_vocab_size(model):
            raise UserError(f"{args.data} was tokenized with a {index['vocab_size']}-entry vocabulary; the model "
                            f"has {model_vocab_size(model)}")
        check_token_range(args.data, args.split, model_vocab_size(model), "the model's vocabulary size")
        tokens = load_tokens(args.data, args.split)
        seq_len = args.seq_len or min(model_max_len(model), 4096)
        val = validation_metrics(model, tokens, seq_len, batch_size=max(1, args.batch_size // 2), device=device,
                                 max_tokens=args.val_tokens, n_bytes=index["splits"][args.split].get("bytes"))
        record["validation"] = {"data": str(args.data), "split": args.split, "seq_len": seq_len, **val}
    write_file_atomic(args.out, json.dumps(record, indent=2))
    print(markdown_tables([record]))
    log.info("wrote %s", args.out)
    return 0


def run_compare(args) -> int:
    print(markdown_tables([read_record(p) for p in args.results]))
    return 0
