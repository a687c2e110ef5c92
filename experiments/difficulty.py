"""Issue 17, part 3: a controlled test of difficulty-aware depth on a synthetic task whose per-token difficulty is known.

    python experiments/difficulty.py                       # all five runs, then the report (one GPU command)
    python experiments/difficulty.py --runs versatile      # one run (records of the others are kept)
    python experiments/difficulty.py --report-only         # the report from the records in --out

The task. A fixed random permutation f of N = B² symbols; each record asks for f^k(a):

    [K_k] [hi(a)] [lo(a)] [f^k(a)] [SEP]        k in {0 (copy), 1, 2, 3, 4}, drawn 1 : 2 : 1 : 1 : 1

K_k is one of five marker tokens, hi/lo are a's two base-B digits (B digit tokens), the answer is one of N answer
tokens and SEP ends the record (it is the EOS of the prepared-token format, so records are its "documents").
The answer is predicted at the lo position: its difficulty is k, the number of applications of f. The SEP after
the answer is predictable filler (difficulty "filler"); the marker and the digits are uniformly random (nothing to
learn). A sequence of T tokens holds T/5 records, so every window starts at a record boundary.

Why this design.
* Iterating is the cheap solution. A table of f has N entries; the tables of f, f², f³, f⁴ have 4N unrelated ones.
  A looped FFN that stores f once and applies it k times needs a quarter of the parameters of one that stores
  every f^k, so with an FFN that can hold about N but not 4N entries (the default sizes), depth pays.
* The argument is two digit tokens, not one symbol token. With one token per symbol, the embedding row of a could
  hold a code for all four answers and the FFN would only select by k, so memorising would cost no more than
  iterating. With digits no input parameter belongs to a symbol: the table has to live in the FFN, whose size is
  the experiment's knob (d_hidden).
* Copies (k = 0) teach the read-out of a symbol's (hi, lo) representation, so an FFN step that maps a's
  representation to f(a)'s is read out by the same path, and applying it again gives f²: the natural solution is
  one token-local function, iterated, which is what a looped FFN does. VersatileFFN could go further: its loop head
  sees k (one attention hop back) and can run exactly k loops, with no counter in the residual stream.
* k = 1, the building block, is drawn twice as often as the other k: a model short of capacity then learns f
  reliably first, and the deeper k (whose tables it cannot all store) are where the variants can differ.
* Held-out pairs separate iterating from memorising: a fraction of the symbols never appears as the argument of a
  k >= 2 record in training (every symbol still appears with k = 0 and 1, and as an intermediate value). A model
  that iterates f answers them; one that memorised the seen f^k pairs is at chance (1/N).
* One layer by default, so the FFN's loops are the only depth there is (n_layers can be raised with --set).

Runs: Dense, 2-Loop, 4-Loop, MoE and VersatileFFN from scratch, the same model (parameters equal except MoE's
real experts and VersatileFFN's router + loop head) and the same tokens, trained with the library's Trainer on the
task written to a temporary prepared-token folder. Measured on fresh records in eval mode (each token runs its
predicted loops): accuracy per difficulty (seen and held-out pairs), mean executed loops per difficulty and their
Spearman correlation with k (per-token loop counts from forward pre-hooks), FFN FLOPs per token
(versatileffn.flops), and for VersatileFFN and 4-Loop an inference loop-cap sweep (caps 1..L_max). One JSON record
per run in --out (default results/difficulty/<run>.json), then the report (difficulty_report.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

# the library, in one place (issue 17: config tables and the tau schedule are moving; adapt these lines)
from versatileffn import LoopFFN, VersatileFFN  # noqa: E402
from versatileffn.data import write_index, write_split  # noqa: E402
from versatileffn.ffn.temperature import compressed_tau_decay  # noqa: E402
from versatileffn.paper import VARIANTS  # noqa: E402
from versatileffn.flops import base_ffn_flops_per_token, static_ffn_flops_per_token, versatile_layer_flops  # noqa: E402
from versatileffn.train import Trainer, load_run_config  # noqa: E402

from provenance import provenance  # noqa: E402

RUNS = {"dense": "Dense", "loop2": "2-Loop", "loop4": "4-Loop", "moe": "MoE", "versatile": "VersatileFFN"}
RECORD_LEN = 5
FILLER, RANDOM = -1, -2  # difficulty labels of positions that are not answers
# the model and recipe (any key can be overridden with --set): one small layer meant to hold about one table of f
# but not four (on CPU, at 1/27 of the default tokens, it learns k = 1 and little of k >= 2)
MODEL = {"model.d_model": 32, "model.n_layers": 1, "model.n_heads": 4, "model.d_hidden": 64,
         "train.lr": 3e-3, "train.warmup_frac": 0.05, "train.log_every": 50}


@dataclass
class Task:
    """f: a fixed random permutation of N = digits² symbols (from ``seed``); records as in the module docstring."""

    digits: int = 32
    max_k: int = 4
    heldout: float = 0.125     # share of symbols never asked with k >= 2 in training
    seed: int = 1234
    weights: tuple = (1, 2, 1, 1, 1)  # relative frequency of k = 0 (copy), 1, ..., max_k
    perm: np.ndarray = field(init=False, repr=False)
    heldout_mask: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.digits < 2 or self.max_k < 1 or not 0 <= self.heldout < 1:
            raise ValueError(f"task needs digits >= 2, max_k >= 1 and 0 <= heldout < 1; got {self}")
        if len(self.weights) != self.max_k + 1 or min(self.weights) < 0 or not sum(self.weights) > 0:
            raise ValueError(f"task weights must be {self.max_k + 1} non-negative numbers (k = 0..{self.max_k}) with a "
                             f"positive sum; got {self.weights}")
        rng = np.random.default_rng(self.seed)
        self.perm = rng.permutation(self.n_symbols)
        self.heldout_mask = np.zeros(self.n_symbols, dtype=bool)
        self.heldout_mask[rng.permutation(self.n_symbols)[:int(self.heldout * self.n_symbols)]] = True

    # token layout: SEP, markers K_0..K_max_k, digit tokens, answer tokens
    @property
    def n_symbols(self) -> int:
        return self.digits ** 2

    @property
    def sep(self) -> int:
        return 0

    @property
    def first_digit(self) -> int:
        return 2 + self.max_k

    @property
    def first_answer(self) -> int:
        return self.first_digit + self.digits

    @property
    def vocab_size(self) -> int:
        return self.first_answer + self.n_symbols

    def power(self, a: np.ndarray, k: np.ndarray) -> np.ndarray:
        """f^k(a), elementwise."""
        out = np.array(a, dtype=np.int64, copy=True)
        k = np.asarray(k)
        for step in range(1, self.max_k + 1):
            out = np.where(k >= step, self.perm[out], out)
        return out

    def records(self, n: int, rng: np.random.Generator, train: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """n records as a flat token stream, with each record's k and a."""
        k = rng.choice(self.max_k + 1, size=n, p=np.asarray(self.weights, dtype=float) / sum(self.weights))
        a = rng.integers(0, self.n_symbols, n)
        if train:  # redraw held-out arguments of k >= 2 records from the other symbols
            allowed = np.flatnonzero(~self.heldout_mask)
            bad = (k >= 2) & self.heldout_mask[a]
            a[bad] = allowed[rng.integers(0, len(allowed), int(bad.sum()))]
        cols = [1 + k, self.first_digit + a // self.digits, self.first_digit + a % self.digits,
                self.first_answer + self.power(a, k), np.full(n, self.sep)]
        return np.stack(cols, 1).reshape(-1), k, a

    def windows(self, n_seqs: int, seq_len: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, next-token targets), each [n_seqs, seq_len]: fresh records, held-out pairs included."""
        tokens, _, _ = self.records(n_seqs * seq_len // RECORD_LEN + 1, rng, train=False)
        flat = torch.from_numpy(tokens[:n_seqs * seq_len + 1])
        return flat[:-1].view(n_seqs, seq_len), flat[1:].reshape(n_seqs, seq_len)

    def labels(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Read from the inputs alone: each position's difficulty (k where the next token is an answer, FILLER
        where it is the SEP after an answer, RANDOM elsewhere) and whether it asks a held-out pair."""
        x = np.asarray(x)
        is_digit = (x >= self.first_digit) & (x < self.first_answer)
        prev1, prev2 = np.roll(x, 1, axis=-1), np.roll(x, 2, axis=-1)
        query = is_digit & (prev1 >= self.first_digit) & (prev1 < self.first_answer) & (prev2 >= 1) & \
            (prev2 < self.first_digit)
        query[..., :2] = False  # np.roll wraps around
        diff = np.where(query, prev2 - 1, np.where(x >= self.first_answer, FILLER, RANDOM))
        a = (prev1 - self.first_digit) * self.digits + (x - self.first_digit)
        held = query & (diff >= 2) & self.heldout_mask[np.clip(a, 0, self.n_symbols - 1)]
        return diff, held

    def write(self, folder: Path, train_tokens: int, val_tokens: int, seed: int) -> Path:
        """The task as a prepared-token folder (``versatileffn prepare-data``'s format) for the Trainer."""
        index = {"tokenizer": f"difficulty-B{self.digits}-k{self.max_k}", "vocab_size": self.vocab_size,
                 "eos_id": self.sep, "dtype": "uint16" if self.vocab_size <= 2 ** 16 else "uint32"}
        rng = np.random.default_rng([self.seed, seed])
        for split, n_tokens, train in (("train", train_tokens, True), ("val", val_tokens, False)):
            n = -(-n_tokens // RECORD_LEN) + 1
            tokens, _, _ = self.records(n, rng, train)
            index = write_split(folder, split, tokens, n, 0, index)
        write_index(folder, index)
        return folder


# ------------------------------------------------------------------------------------------------ training


def run_config(args, name: str, data: Path, work: Path):
    overrides = [f"{k}={v}" for k, v in MODEL.items()]
    overrides += [f"data.path={data}", f"data.seq_len={args.seq_len}", f"model.max_seq_len={args.seq_len}",
                  f"model.vocab_size={-(-args.task.vocab_size // 64) * 64}", f"train.out_dir={work / name}",
                  f"train.seed={args.seed}", f"train.max_steps={args.steps}",
                  f"train.global_batch_tokens={args.batch * args.seq_len}", f"train.micro_batch_size={args.batch}",
                  f"train.eval_tokens={args.seq_len * 64}", "train.tensorboard=false", "train.progress=false",
                  "train.ckpt_every=0", "train.keep_last=1", f"train.device={args.device}"]
    overrides += [f"model.ffn.{k}={v}" for k, v in VARIANTS[name].ffn.items()] + list(args.overrides)
    cfg = load_run_config(None, overrides)
    if cfg.model.ffn.kind == "versatile":  # tau reaches its floor at the paper's 91.5% of training
        cfg.model.ffn.tau_decay = compressed_tau_decay(cfg.train.max_steps)
    return cfg


# ------------------------------------------------------------------------------------------------ measurement


def loop_counts(model) -> tuple[list, callable]:
    """Per-token executed loops of every FFN layer in the next eval forwards. VersatileFFN: forward pre-hooks
    ask the layer for its inference decision (``predicted_loops``: the loop head's argmax, clipped by the cap); k-Loop: n_loops; dense / MoE: 1. Returns (per-layer lists of
    [tokens] tensors, remove)."""
    layers = model.ffn_layers()
    seen: list[list[torch.Tensor]] = [[] for _ in layers]
    handles = []
    for i, m in enumerate(layers):
        def hook(module, inputs, i=i):
            x = inputs[0].reshape(-1, inputs[0].shape[-1])
            if isinstance(module, VersatileFFN) and module.loop_predictor is not None:
                loops = module.predicted_loops(x)
            else:
                loops = torch.full((x.shape[0],), module.n_loops if isinstance(module, LoopFFN) else 1,
                                   device=x.device)
            seen[i].append(loops.cpu())
        handles.append(m.register_forward_pre_hook(hook))
    return seen, lambda: [h.remove() for h in handles]


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rho (average ranks for ties); None where either side is constant."""
    def ranks(v):
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):  # ties share their mean rank
            r[v == value] = r[v == value].mean()
        return r
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


@torch.no_grad()
def measure(model, cfg, task: Task, x: torch.Tensor, y: torch.Tensor, batch: int) -> dict:
    """Accuracy, executed loops and FFN FLOPs per difficulty on the windows (x, y), in eval mode."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    model.reset_ffn_stats()
    seen, remove = loop_counts(model)
    preds = []
    try:
        for i in range(0, len(x), batch):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                preds.append(model(x[i:i + batch].to(device)).logits.argmax(-1).cpu())
    finally:
        remove()
        model.train(was_training)
    pred = torch.cat(preds).numpy().reshape(-1)
    loops = np.stack([torch.cat(s).numpy() for s in seen])          # [layers, tokens]
    diff, held = (a.reshape(-1) for a in task.labels(x.numpy()))
    correct = pred == y.numpy().reshape(-1)
    stats = model.ffn_stats()
    out = {"tokens": int(len(pred)), "ffn_flops_per_token": ffn_flops(cfg, loops),
           "loop_histogram_matches_library": all(
               [int((lp == v).sum()) for v in range(1, len(s["loop_histogram"]) + 1)] == s["loop_histogram"]
               for lp, s in zip(loops, stats) if "loop_histogram" in s),
           "by_difficulty": {}}
    for name, sel in [(str(k), diff == k) for k in range(task.max_k + 1)] + [("filler", diff == FILLER)]:
        if not sel.any():
            continue
        lp = loops[:, sel]
        entry = {"n": int(sel.sum()), "accuracy": float(correct[sel].mean()),
                 "mean_loops": float(lp.mean()), "mean_loops_per_layer": [float(v) for v in lp.mean(1)],
                 "ffn_flops_per_token": ffn_flops(cfg, lp)}
        if name not in ("0", "1", "filler"):
            entry["accuracy_seen"] = float(correct[sel & ~held].mean()) if (sel & ~held).any() else None
            entry["accuracy_heldout"] = float(correct[sel & held].mean()) if (sel & held).any() else None
            entry["n_heldout"] = int((sel & held).sum())
        out["by_difficulty"][name] = entry
    answers = diff >= 0
    out["mean_loops"] = float(loops.mean())
    out["spearman_loops_k"] = spearman(diff[answers], loops[:, answers].mean(0))
    hard = diff >= 1
    out["spearman_loops_k_without_copies"] = spearman(diff[hard], loops[:, hard].mean(0))
    return out


def ffn_flops(cfg, loops: np.ndarray) -> dict:
    """FFN FLOPs per token of the tokens whose per-layer loops are ``loops`` [layers, tokens] (both conventions;
    a k-Loop model under a loop cap costs the dense FFN per executed loop)."""
    if cfg.model.ffn.kind == "loop":
        cost = base_ffn_flops_per_token(cfg.model) * float(loops.mean())
        return {"paper": cost, "implementation": cost}
    static = static_ffn_flops_per_token(cfg.model)
    if static is not None:
        return {"paper": float(static), "implementation": float(static)}
    n = loops.shape[1]
    per_layer = [versatile_layer_flops(cfg.model, [int((lp == v).sum()) for v in range(1, cfg.model.ffn.max_loops + 1)],
                                       n) for lp in loops]
    return {k: sum(p[k] for p in per_layer) / n for k in ("paper", "implementation")}


def cap_sweep(model, cfg, task: Task, x, y, batch: int) -> list[dict] | None:
    """Inference loop caps 1..L_max (VersatileFFN: ``set_inference_loop_cap``; k-Loop: fewer loops than trained)."""
    layers = model.ffn_layers()
    if any(isinstance(m, VersatileFFN) for m in layers):
        caps, set_cap = range(1, cfg.model.ffn.max_loops + 1), model.set_inference_loop_cap
    elif all(isinstance(m, LoopFFN) for m in layers):
        trained = [m.n_loops for m in layers]
        caps = range(1, max(trained) + 1)

        def set_cap(cap):
            for m, n in zip(layers, trained):
                m.n_loops = n if cap is None else min(cap, n)
    else:
        return None
    sweep = []
    try:
        for cap in caps:
            set_cap(cap)
            m = measure(model, cfg, task, x, y, batch)
            sweep.append({"cap": cap, "mean_loops": m["mean_loops"], "ffn_flops_per_token": m["ffn_flops_per_token"],
                          "by_difficulty": {k: {f: v[f] for f in ("accuracy", "accuracy_heldout", "mean_loops") if f in v}
                                            for k, v in m["by_difficulty"].items()}})
    finally:
        set_cap(None)
    return sweep


# ------------------------------------------------------------------------------------------------ driver


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma list of {list(RUNS)}")
    p.add_argument("--out", default=str(ROOT / "results" / "difficulty"), help="records and report")
    p.add_argument("--work", help="training folders (default: a temporary folder, deleted at the end)")
    p.add_argument("--steps", type=int, default=2000, help="optimizer steps per run")
    # long rows, few of them: the Trainer's loader reads one row at a time on the host, and on a GPU this model's
    # step is expected to be bound by the host (kernel launches, that loader) far more than by its FLOPs
    p.add_argument("--batch", type=int, default=256, help="sequences per step")
    p.add_argument("--seq-len", type=int, default=320, help="tokens per sequence (a multiple of 5)")
    p.add_argument("--digits", type=int, default=32, help="B: N = B^2 symbols")
    p.add_argument("--heldout", type=float, default=0.125, help="share of symbols held out for k >= 2")
    p.add_argument("--task-seed", type=int, default=1234, help="seeds f and the held-out symbols")
    p.add_argument("--k-weights", default="1,2,1,1,1", help="relative frequency of k = 0 (copy), 1, 2, 3, 4")
    p.add_argument("--seed", type=int, default=0, help="training seed (init, data order, Gumbel noise)")
    p.add_argument("--eval-seqs", type=int, default=256, help="evaluation sequences (fresh records)")
    p.add_argument("--device", default="auto")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="run-config override for every run, e.g. model.d_hidden=128")
    p.add_argument("--report-only", action="store_true")
    args = p.parse_args(argv)
    args.runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    if [r for r in args.runs if r not in RUNS]:
        p.error(f"unknown run(s) {[r for r in args.runs if r not in RUNS]}; choose from {list(RUNS)}")
    if args.seq_len % RECORD_LEN:
        p.error(f"--seq-len must be a multiple of {RECORD_LEN} (records never straddle a window)")
    try:
        weights = tuple(float(w) for w in args.k_weights.split(","))
        args.task = Task(digits=args.digits, heldout=args.heldout, seed=args.task_seed, weights=weights)
    except ValueError as exc:
        p.error(str(exc))
    return args


def run_one(args, name: str, data: Path, work: Path) -> dict:
    cfg = run_config(args, name, data, work)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, overwrite=True)  # a rerun into the same --work trains again
    result = trainer.train()
    seconds = time.perf_counter() - t0
    model = trainer.model
    x, y = args.task.windows(args.eval_seqs, args.seq_len, np.random.default_rng([args.task.seed, 99]))
    t1 = time.perf_counter()
    metrics = measure(model, cfg, args.task, x, y, args.batch)
    sweep = cap_sweep(model, cfg, args.task, x, y, args.batch)
    curve = [json.loads(line) for line in (work / name / "metrics.jsonl").read_text().splitlines()]
    return {"run": name, "label": RUNS[name], **provenance(trainer.device), "seconds_train": seconds,
            "seconds_eval": time.perf_counter() - t1, "task": {k: v for k, v in asdict(args.task).items()
                                                                if k not in ("perm", "heldout_mask")},
            "n_symbols": args.task.n_symbols, "steps": trainer.step, "tokens_seen": trainer.tokens_seen,
            "final_train_loss": result["loss"], "val_loss": result["val"]["val_loss"],
            "params": trainer.model.num_params(), "ffn_params": trainer.model.ffn_params(),
            "metrics": metrics, "cap_sweep": sweep,
            "curve": [{k: r[k] for k in ("step", "loss", "tau", "loops") if k in r} for r in curve
                      if r.get("kind") == "train"],
            "config": json.loads(json.dumps(cfg, default=lambda o: o.__dict__))}


def main(argv=None) -> int:
    from difficulty_report import write_report

    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        with tempfile.TemporaryDirectory(prefix="difficulty-") as tmp:
            work = Path(args.work) if args.work else Path(tmp)
            # at most 16M training tokens (32 MB): longer runs see them again, in a new order each epoch
            train_tokens = min(args.steps * args.batch * args.seq_len, 2 ** 24)
            data = args.task.write(work / "data", train_tokens, args.seq_len * 128, args.seed)
            for name in args.runs:
                rec = run_one(args, name, data, work)
                (out / f"{name}.json").write_text(json.dumps(rec, indent=1))
                acc = {k: round(v["accuracy"], 3) for k, v in rec["metrics"]["by_difficulty"].items()}
                print(f"[{name}] {rec['seconds_train']:.0f} s train, {rec['seconds_eval']:.1f} s eval; accuracy by k "
                      f"{acc}; loops/k rho {rec['metrics']['spearman_loops_k']}", flush=True)
    write_report(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
