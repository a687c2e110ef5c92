"""The paper's Tables 1-5 in miniature (issue 6): pre-train a dense base, continue pre-training every variant from
it with the same recipe and token budget (one epoch each), evaluate, and write one JSON record per run.

    python experiments/reproduce.py --table 1 --seed 0 --data data/corpus --out results/runs

Resumable: a run whose record exists is skipped; an interrupted run resumes from its newest checkpoint.
Records go to OUT/seed<S>/<run>.json (config, seed, device, tokens, validation loss, the 8 benchmarks, FFN FLOPs
per token — exact executed and paper formula —, loop statistics, training curve). `--mirror DIR` copies each
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

from versatileffn.paper import VARIANTS as PAPER_VARIANTS  # noqa: E402
from versatileffn.ffn.temperature import compressed_tau_decay  # noqa: E402
from versatileffn.train import Trainer, load_run_config  # noqa: E402

CONFIG = ROOT / "experiments" / "repro-small.yaml"
# run name -> (FFN short name, extra overrides); "scratch-*" runs start from random weights
VARIANTS: dict[str, tuple[str, list[str]]] = {
    **{v.run: (v.name, []) for v in PAPER_VARIANTS.values()},
    "scratch-dense": ("dense", []), "scratch-loop4": ("loop4", []), "scratch-versatile": ("versatile", []),
}
TABLES = {  # in the order they run: the most informative rows first
    "1": ["base", "versatile", "moe", "loop4", "loop2", "loop6"],
    "3": ["width", "depth", "ungated", "versatile"],
    "4": ["versatile-L2", "versatile", "versatile-L6", "versatile-8c4", "versatile-16c4"],
    "5": ["scratch-dense", "scratch-loop4", "scratch-versatile"],
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--table", required=True, choices=sorted(TABLES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", required=True, help="prepared token folder (the paper's tokenizer)")
    p.add_argument("--out", default="results/runs")
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--runs", help="comma list: only these rows of the table")
    p.add_argument("--eval-limit", type=int, default=1000, help="questions per benchmark (0: skip benchmarks)")
    p.add_argument("--mirror", help="also copy each record here when written")
    return p.parse_args(argv)


def run_config(args, name: str, out_dir: Path, tokens: int, init_from: Path | None):
    ffn, extra = VARIANTS[name]
    overrides = [f"data.path={args.data}", f"train.out_dir={out_dir}", f"train.seed={args.seed}",
                 f"train.max_tokens={tokens}", "train.max_steps=1"]
    overrides += [f"model.ffn.{k}={v}" for k, v in PAPER_VARIANTS[ffn].ffn.items()] + extra + list(args.overrides)
    if init_from is not None:
        overrides += [f"train.init_from={init_from}", "train.lr=5e-4"]  # the paper's continued-pre-training LR
    cfg = load_run_config(args.config, overrides)
    if cfg.model.ffn.kind == "versatile":  # the paper's tau schedule, reaching its floor at the same fraction
        steps = tokens // cfg.train.global_batch_tokens
        cfg.model.ffn.tau_decay = compressed_tau_decay(steps)
    return cfg


def train(cfg) -> tuple[Trainer, dict, float]:
    t0 = time.perf_counter()
    trainer = Trainer(cfg, resume=(Path(cfg.train.out_dir) / "checkpoints").is_dir())
    result = trainer.train()
    return trainer, result, time.perf_counter() - t0


def evaluate(args, trainer: Trainer, result: dict) -> dict:
    from versatileffn.eval import evaluate_tasks, validation_metrics
    from versatileffn.eval.efficiency import flop_accounting, parameter_counts
    from versatileffn.data import load_tokens, read_index
    from versatileffn.tokenizer import load_tokenizer

    model = trainer.model.eval()
    index = read_index(args.data)
    model.reset_ffn_stats()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=trainer.device.type == "cuda"):
        val = validation_metrics(model, load_tokens(args.data, "val"), trainer.cfg.data.seq_len, batch_size=16,
                                 n_bytes=index["splits"]["val"]["bytes"])
        val_stats = model.ffn_stats() if hasattr(model, "ffn_stats") else None
        tasks = (evaluate_tasks(model, load_tokenizer(Path(args.data) / "tokenizer.json"), limit=args.eval_limit,
                                batch_size=32, progress=False) if args.eval_limit else None)
    flops = flop_accounting(model, {"val": val_stats, **((tasks or {}).get("ffn_stats") or {})})
    return {"val": val, "val_ffn_stats": val_stats, "tasks": tasks, "flops": flops, "params": parameter_counts(model)}


def curve(out_dir: Path) -> list[dict]:
    keep = ("step", "tokens", "loss", "aux_loss", "lr", "tau", "loops", "lambda", "expert_imbalance", "tokens_per_s")
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: r[k] for k in keep if k in r} for r in map(json.loads, lines) if r.get("kind") == "train"]


def main(argv=None) -> int:
    args = parse_args(argv)
    root = Path(args.out) / f"seed{args.seed}"
    root.mkdir(parents=True, exist_ok=True)
    from versatileffn.data import read_index

    epoch = read_index(args.data)["splits"]["train"]["tokens"]
    rows = TABLES[args.table] if not args.runs else [r.strip() for r in args.runs.split(",")]
    base_dir = root / "work" / "pretrain-dense" / "final"
    if args.table != "5" and not base_dir.is_dir():  # the shared dense base: one epoch from scratch
        cfg = run_config(args, "base", root / "work" / "pretrain-dense", epoch, None)
        cfg.train.lr = load_run_config(args.config, []).train.lr
        trainer, result, secs = train(cfg)
        record = {"run": "pretrain-dense", "seed": args.seed, "seconds": secs, **evaluate(args, trainer, result),
                  "curve": curve(root / "work" / "pretrain-dense")}
        write(root, "pretrain-dense", record, trainer, args.mirror)
    for name in rows:
        if (root / f"{name}.json").is_file():
            print(f"[{name}] done already", flush=True)
            continue
        scratch = name.startswith("scratch-")
        # Table 5: the same total tokens as pre-training + continued pre-training (two epochs)
        cfg = run_config(args, name, root / "work" / name, 2 * epoch if scratch else epoch, None if scratch else base_dir)
        trainer, result, secs = train(cfg)
        record = {"run": name, "table": args.table, "seed": args.seed, "seconds": secs,
                  "init": "scratch" if scratch else "pretrain-dense", **evaluate(args, trainer, result),
                  "curve": curve(root / "work" / name)}
        write(root, name, record, trainer, args.mirror)
    return 0


def write(root: Path, name: str, record: dict, trainer: Trainer, mirror: str | None) -> None:
    dev = trainer.device
    record.update({"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                   "torch": torch.__version__, "tokens_seen": trainer.tokens_seen,
                   "config": json.loads(json.dumps(trainer.cfg, default=lambda o: o.__dict__))})
    (root / f"{name}.json").write_text(json.dumps(record, indent=1))
    if mirror:
        Path(mirror).mkdir(parents=True, exist_ok=True)
        shutil.copy(root / f"{name}.json", Path(mirror) / f"{name}.json")
    avg = (record.get("tasks") or {}).get("average")
    print(f"[{name}] val loss {record['val']['loss']:.4f}, avg acc {avg if avg is None else round(100 * avg, 2)}, "
          f"{record['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
