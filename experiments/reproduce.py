"""The paper's Tables 1-5 in miniature (issue 6): pre-train a dense base, continue pre-training every variant from
it with the same recipe and token budget (one epoch each), evaluate, and write one JSON record per run.

    python experiments/reproduce.py --table 1 --seed 0 --data data/corpus --out results/runs
    python experiments/reproduce.py --runs base-4x,versatile-4x,loop4-4x --eval-limit 0 --data ... --out ...

Rows are defined in rows.py; ``--runs`` takes rows of any table (and rows of no table) and pre-trains the seed's
dense start once, first, if any of them continues from it. Resumable: a run whose record exists is skipped; an
interrupted run resumes from its newest checkpoint. Records go to OUT/seed<S>/<run>.json (config, seed, device,
tokens, validation loss, the 8 benchmarks unless ``--eval-limit 0``, FFN FLOPs per token — exact executed and
paper formula —, loop statistics, training curve, and for continued runs the step-0 validation loss right after the
conversion from the dense start next to the dense start's own on the same tokens). `--mirror DIR` copies each
record there as soon as it is written (e.g. $OUT on the device machine, so a cut-off call still returns them).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

# the library, in one place
from versatileffn.paper import VARIANTS as PAPER_VARIANTS  # noqa: E402
from versatileffn.analysis import collect, token_lambda_ranking  # noqa: E402
from versatileffn.data import load_tokens, read_index  # noqa: E402
from versatileffn.ffn.temperature import compressed_tau_decay  # noqa: E402
from versatileffn.eval import evaluate_tasks, validation_metrics  # noqa: E402
from versatileffn.eval.efficiency import flop_accounting, parameter_counts  # noqa: E402
from versatileffn.io import load_model  # noqa: E402
from versatileffn.tokenizer import load_tokenizer  # noqa: E402
from versatileffn.train import Trainer, load_run_config  # noqa: E402

from provenance import provenance  # noqa: E402
from rows import DENSE_START, ROWS, TABLES, table_of  # noqa: E402

CONFIG = ROOT / "experiments" / "repro-small.yaml"
STEP0_TOKENS = 65_536  # validation tokens for the step-0 loss (64 sequences: a few batches)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--table", choices=sorted(TABLES), help="run this table's rows (or name rows with --runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", required=True, help="prepared token folder (the paper's tokenizer)")
    p.add_argument("--out", default="results/runs")
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override the run config of every row (after the row's own overrides)")
    p.add_argument("--runs", help="comma list of rows (of any table; with --table: only these of it)")
    p.add_argument("--eval-limit", type=int, default=1000, help="questions per benchmark (0: skip the benchmarks)")
    p.add_argument("--mirror", help="also copy each record here when written")
    p.add_argument("--step0-only", action="store_true",
                   help="only the step-0 gap of each row (converted from the dense start, no training): "
                        "seed<S>/step0/<run>.json")
    args = p.parse_args(argv)
    if not args.table and not args.runs:
        p.error("name a --table or --runs")
    rows = [r.strip() for r in args.runs.split(",") if r.strip()] if args.runs else TABLES[args.table]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        p.error(f"unknown row(s) {unknown}; rows: {sorted(ROWS)}")
    args.rows = rows
    return args


def run_config(args, name: str | None, out_dir: Path, tokens: int, init_from: Path | None):
    """The run config of a row (None: the dense start's pre-training, at the config's own LR)."""
    row = ROWS[name] if name else ROWS["base"]
    overrides = [f"data.path={args.data}", f"train.out_dir={out_dir}", f"train.seed={args.seed}",
                 f"train.max_tokens={tokens}", "train.max_steps=1"]
    overrides += [f"model.ffn.{k}={v}" for k, v in PAPER_VARIANTS[row.ffn].ffn.items()] + list(row.overrides)
    overrides += list(args.overrides)
    if init_from is not None:
        overrides += [f"train.init_from={init_from}", "train.lr=5e-4"]  # the paper's continued-pre-training LR
    cfg = load_run_config(args.config, overrides)
    if row.steps_factor > 1:  # the same tokens in steps_factor x more optimizer steps
        t = cfg.train
        seqs = t.global_batch_tokens // cfg.data.seq_len // row.steps_factor
        if seqs < 1 or t.global_batch_tokens % (row.steps_factor * cfg.data.seq_len):
            raise ValueError(f"row {name}: global_batch_tokens={t.global_batch_tokens} is not {row.steps_factor} x a "
                             f"multiple of seq_len={cfg.data.seq_len}")
        t.global_batch_tokens = seqs * cfg.data.seq_len
        while seqs % t.micro_batch_size:  # the largest micro-batch that still divides the smaller global batch
            t.micro_batch_size -= 1
    if cfg.model.ffn.kind == "versatile":  # the paper's tau schedule, reaching its floor at the same fraction
        steps = tokens // cfg.train.global_batch_tokens
        cfg.model.ffn.tau_decay = compressed_tau_decay(steps)
    return cfg


def train(trainer: Trainer) -> tuple[dict, float]:
    t0 = time.perf_counter()
    result = trainer.train()
    return result, time.perf_counter() - t0


def step0_loss(args, model, seq_len: int) -> dict:
    """Validation loss on the first STEP0_TOKENS tokens, in eval mode (each token runs its predicted loops)."""
    model.reset_ffn_stats()
    val = validation_metrics(model, load_tokens(args.data, "val"), seq_len, batch_size=16, max_tokens=STEP0_TOKENS)
    loops = [s["mean_loops"] for s in model.ffn_stats() if "mean_loops" in s]
    model.reset_ffn_stats()
    return {"loss": val["loss"], "tokens": val["tokens"], "mean_loops": sum(loops) / len(loops) if loops else None}


def step0(args, trainer: Trainer, name: str, base_dir: Path) -> dict | None:
    """The step-0 gap (issue 17): the converted model's loss before any training minus the dense start's, on the
    same tokens. Cached in the run folder, so a resumed run still reports the value from its start."""
    cache = Path(trainer.cfg.train.out_dir) / "step0.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    if trainer.step > 0:  # resumed from a checkpoint written before this field existed
        return None
    ref_cache = base_dir.parent / "step0.json"
    seq_len = trainer.cfg.data.seq_len
    if ref_cache.is_file():
        ref = json.loads(ref_cache.read_text())
    else:
        dense, _ = load_model(base_dir, trainer.device)
        ref = step0_loss(args, dense, seq_len)
        ref_cache.write_text(json.dumps(ref))
        del dense
    out = step0_loss(args, trainer.model, seq_len)
    out.update(dense_start_loss=ref["loss"], gap=out["loss"] - ref["loss"])
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out))
    print(f"[{name}] step-0 loss {out['loss']:.4f}, dense start {ref['loss']:.4f}, gap {out['gap']:+.4f}", flush=True)
    return out


def evaluate(args, trainer: Trainer) -> dict:
    model = trainer.model.eval()
    index = read_index(args.data)
    model.reset_ffn_stats()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=trainer.device.type == "cuda"):
        val = validation_metrics(model, load_tokens(args.data, "val"), trainer.cfg.data.seq_len, batch_size=16,
                                 n_bytes=index["splits"]["val"]["bytes"])
        val_stats = model.ffn_stats() if hasattr(model, "ffn_stats") else None
        tasks = (evaluate_tasks(model, load_tokenizer(Path(args.data) / "tokenizer.json"), limit=args.eval_limit,
                                batch_size=32, progress=False) if args.eval_limit else None)
        loops = token_loops(model, load_tokens(args.data, "val"), trainer.cfg.data.seq_len,
                            load_tokenizer(Path(args.data) / "tokenizer.json"))
    flops = flop_accounting(model, {"val": val_stats, **((tasks or {}).get("ffn_stats") or {})})
    return {"val": val, "val_ffn_stats": val_stats, "tasks": tasks, "flops": flops, "params": parameter_counts(model),
            **({"token_loops": loops} if loops else {})}


def token_loops(model, tokens, seq_len: int, tokenizer, max_tokens: int = 65_536, top: int = 12) -> list | None:
    """Which tokens get loops: per VersatileFFN layer, the token texts with the most and the fewest executed loops
    on the first ``max_tokens`` validation tokens (the library's Fig. 6 ranking, lambda = (L_max - loops) / L_max)."""
    if not any(layer.uses_depth for layer in model.versatile_layers()):
        return None
    traces, rows = collect(model, tokens, seq_len, batch_size=16, max_tokens=max_tokens)
    out = []
    for trace in traces:
        if trace.loops is None:
            continue
        ranking = token_lambda_ranking(trace, rows, tokenizer, top=top, min_count=20,
                                       skip_ids={getattr(tokenizer, "eos_id", -1)})
        out.append({"layer": trace.index, "mean_loops": float(trace.loops.mean()),
                    "most_loops": ranking["low"], "fewest_loops": ranking["high"]})
    return out or None


def curve(out_dir: Path) -> list[dict]:
    keep = ("step", "tokens", "loss", "aux_loss", "lr", "tau", "loops", "lambda", "expert_imbalance", "tokens_per_s",
            "loop_step", "width_gamma")  # the last two: a dense-preserving start's scales
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: r[k] for k in keep if k in r} for r in map(json.loads, lines) if r.get("kind") == "train"]


def main(argv=None) -> int:
    args = parse_args(argv)
    root = Path(args.out) / f"seed{args.seed}"
    root.mkdir(parents=True, exist_ok=True)
    epoch = read_index(args.data)["splits"]["train"]["tokens"]
    base_dir = root / "work" / DENSE_START / "final"
    todo = [r for r in args.rows if not (root / f"{r}.json").is_file()]
    if any(ROWS[r].init == "dense" for r in todo) and not base_dir.is_dir():  # the shared dense start: one epoch
        cfg = run_config(args, None, root / "work" / DENSE_START, epoch, None)
        cfg.train.lr = load_run_config(args.config, []).train.lr
        trainer = Trainer(cfg, overwrite=True)  # an unfinished dense start begins again
        result, secs = train(trainer)
        record = {"run": DENSE_START, "seed": args.seed, "seconds": secs, **evaluate(args, trainer),
                  "curve": curve(root / "work" / DENSE_START)}
        write(root, DENSE_START, record, trainer, args.mirror)
    start_record = root / f"{DENSE_START}.json"
    if args.step0_only:
        for name in args.rows:
            cfg = run_config(args, name, root / "work" / f"{name}-step0", epoch, base_dir)
            trainer = Trainer(cfg)
            record = {"run": name, "seed": args.seed, "init": DENSE_START,
                      "step0": step0(args, trainer, name, base_dir), **provenance(trainer.device)}
            (root / "step0").mkdir(exist_ok=True)
            (root / "step0" / f"{name}.json").write_text(json.dumps(record, indent=1))
            if args.mirror:
                Path(args.mirror).mkdir(parents=True, exist_ok=True)
                shutil.copy(root / "step0" / f"{name}.json", Path(args.mirror) / f"step0-seed{args.seed}-{name}.json")
        return 0
    for name in args.rows:
        if (root / f"{name}.json").is_file():
            print(f"[{name}] done already", flush=True)
            continue
        row = ROWS[name]
        continued = row.init == "dense"
        out_dir = root / "work" / name
        cfg = run_config(args, name, out_dir, row.epochs * epoch, base_dir if continued else None)
        resume = (out_dir / "checkpoints").is_dir()
        trainer = Trainer(cfg, resume=resume, overwrite=not resume)  # a row without checkpoints begins again
        first = step0(args, trainer, name, base_dir) if continued else None
        result, secs = train(trainer)
        record = {"run": name, "table": args.table or table_of(name), "seed": args.seed, "seconds": secs,
                  "init": DENSE_START if continued else "scratch", "steps": trainer.step, "step0": first}
        if continued and start_record.is_file():  # the start this run continued from, for the Δ vs the dense start
            record["dense_start"] = {"val_loss": json.loads(start_record.read_text())["val"]["loss"]}
        record.update(**evaluate(args, trainer), curve=curve(out_dir))
        write(root, name, record, trainer, args.mirror)
    return 0


def write(root: Path, name: str, record: dict, trainer: Trainer, mirror: str | None) -> None:
    record.update(**provenance(trainer.device), tokens_seen=trainer.tokens_seen,
                  config=json.loads(json.dumps(trainer.cfg, default=lambda o: o.__dict__)))
    (root / f"{name}.json").write_text(json.dumps(record, indent=1))
    if mirror:
        Path(mirror).mkdir(parents=True, exist_ok=True)
        shutil.copy(root / f"{name}.json", Path(mirror) / f"{name}.json")
    avg = (record.get("tasks") or {}).get("average")
    print(f"[{name}] val loss {record['val']['loss']:.4f}, avg acc {avg if avg is None else round(100 * avg, 2)}, "
          f"{record['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
