"""The speed targets of issue 13 (H200; ratios against dense measured in the same run and mode), each measured
from the bench JSON, and ``targets_summary.json`` (``summary_file``): one entry per target with ``measured``,
``target``, ``met``, ``device``, ``command`` and a ``reason`` for a human to fill where a target is not met.

The decode entries read what the ``decode`` section writes under ``out["decode"]["summary"]`` (``DECODE_KEYS``):
its fastest mode's per-batch step times of our dense model and of VersatileFFN at the uniform loop mix."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .common import Shape, dig

DECODE_KEYS = {
    "mode": "the decode mode the figures below come from (e.g. 'graph': one CUDA graph per step)",
    "dense_ms": "{batch: ms per step} of this project's dense LM",
    "versatile_uniform_ms": "{batch: ms per step} of VersatileFFN with the uniform loop mix forced",
}
PREFILL_MIXES = ("all1", "uniform", "easy", "all4", "trained")


@dataclass(frozen=True)
class Target:
    text: str                                  # the wording
    limit: float                               # measured <= limit is met
    measure: Callable[[dict, Shape], tuple]    # (measured or None, detail dict, why not measured)


def _decode(out: dict, key: str):
    summary = dig(out, "decode", "summary")
    if not isinstance(summary, dict) or not isinstance(summary.get(key), dict):
        return None, "the decode section wrote no summary." + key
    return {str(k): v for k, v in summary[key].items() if isinstance(v, (int, float))}, None


def decode_b1(out: dict, s: Shape):
    ms, why = _decode(out, "versatile_uniform_ms")
    return (None, {}, why) if ms is None else (ms.get("1"), {"mode": dig(out, "decode", "summary", "mode")},
                                               None if "1" in ms else "no batch-1 figure")


def decode_x_dense(out: dict, s: Shape):
    vffn, why = _decode(out, "versatile_uniform_ms")
    dense, why2 = _decode(out, "dense_ms")
    if vffn is None or dense is None:
        return None, {}, why or why2
    per = {b: vffn[b] / dense[b] for b in dense if b in vffn}
    return max(per.values(), default=None), {"per_batch": per, "mode": dig(out, "decode", "summary", "mode")}, \
        None if per else "no batch with both figures"


def dense_x_yardstick(out: dict, s: Shape):
    dense, why = _decode(out, "dense_ms")
    anchor = dig(out, "anchor_decode", "ms_per_step")
    if dense is None or not isinstance(anchor, dict):
        return None, {}, why or "the anchor_decode section did not run"
    per = {b: dense[b] / anchor[f"loops1_b{b}_graph"] for b in dense
           if isinstance(anchor.get(f"loops1_b{b}_graph"), (int, float))}
    return max(per.values(), default=None), {"per_batch": per}, None if per else "no common batch size"


def prefill(n_index: int, mode: str):
    def measure(out: dict, s: Shape):
        n = str(s.tokens[n_index])
        per = {m: dig(out, "prefill", n, mode, m, "over_ideal") for m in PREFILL_MIXES}
        per = {m: v for m, v in per.items() if isinstance(v, (int, float))}
        return max(per.values(), default=None), {"tokens": int(n), "over_ideal_per_mix": per}, \
            None if per else f"no prefill {mode} figures at {n} tokens"
    return measure


def train(n_index: int):
    def measure(out: dict, s: Shape):
        n = str(s.tokens[n_index])
        v = dig(out, "train", n, "x_dense", "vffn_auto")
        detail = {"tokens": int(n), "auto_picks": dig(out, "train", n, "auto_picks"),
                  "x_loop4": dig(out, "train", n, "x_loop4", "vffn_auto"),
                  "exact_x_dense": dig(out, "train", n, "x_dense", "vffn_exact"),
                  "full_x_dense": dig(out, "train", n, "x_dense", "vffn_full"),
                  "loop4_x_dense": dig(out, "train", n, "x_dense", "loop4")}
        return v, detail, None if v is not None else f"no train figures at {n} tokens"
    return measure


def full_eval_dense(out: dict, s: Shape):
    v = dig(out, "full_eval", "dense", "wall_s")
    return v, {"command": dig(out, "full_eval", "dense", "command")}, None if v is not None else "full_eval did not run"


def full_eval_versatile(out: dict, s: Shape):
    v = dig(out, "full_eval", "versatile_x_dense")
    return v, {"versatile_wall_s": dig(out, "full_eval", "versatile", "wall_s"),
               "mean_loops": dig(out, "full_eval", "versatile", "mean_loops")}, \
        None if v is not None else "full_eval did not time both models"


TARGETS: dict[str, Target] = {
    "decode_b1_uniform_ms": Target("Decode, batch 1, uniform loop mix: <= 2.5 ms per step (>= 400 tok/s)", 2.5,
                                   decode_b1),
    "decode_x_dense": Target("Decode vs this project's dense step, same mode: <= 1.8x at every batch 1-64 "
                             "(measured: the worst batch)", 1.8, decode_x_dense),
    "dense_decode_x_yardstick": Target("Dense decode vs the yardstick's graph step (anchor_decode.py): within "
                                       "1.15x (measured: the worst batch)", 1.15, dense_x_yardstick),
    **{f"prefill_{k}_{mode}": Target(f"Prefill, {k} tokens, every mix, {mode}: <= 1.15x the FLOP ideal (measured: "
                                     "the worst mix)", 1.15, prefill(i, mode))
       for i, k in ((1, "4k"), (0, "16k")) for mode in ("eager", "graph")},
    "train_exact_16k": Target("Exact training, eager, 16k tokens: <= 3.6x dense (below 4-Loop), depth_grad auto",
                              3.6, train(0)),
    "train_exact_4k": Target("Exact training, eager, 4k tokens: <= 4.5x dense, depth_grad auto", 4.5, train(1)),
    "full_eval_dense_s": Target("Full eval, all 8 tasks, paper-354m dense: <= 15 s wall", 15.0, full_eval_dense),
    "full_eval_versatile_x_dense": Target("Full eval, VersatileFFN: <= 1.3x the dense wall time", 1.3,
                                          full_eval_versatile),
}


def targets(out: dict, shape: Shape) -> dict:
    """Each target: measured (None if not measured), target, met, detail, and why it was not measured."""
    res = {}
    for key, t in TARGETS.items():
        measured, detail, why = t.measure(out, shape)
        res[key] = {"text": t.text, "measured": measured, "target": t.limit,
                    "met": measured is not None and measured <= t.limit, "detail": detail}
        if measured is None:
            res[key]["not_measured"] = why
    return res


def summary_file(out: dict, shape: Shape, source: str) -> dict:
    """``benchmarks/results/targets_summary.json``: the targets with the run's device and command; ``reason`` is
    left for a human where a target is not met (or says why it was not measured)."""
    env = out.get("env", {})
    entries = {}
    for key, t in targets(out, shape).items():
        entries[key] = {**{k: t[k] for k in ("text", "measured", "target", "met")},
                        "device": env.get("device"), "command": env.get("command"), "detail": t["detail"],
                        "reason": None if t["met"] else (f"not measured: {t['not_measured']}"
                                                         if "not_measured" in t else "")}
    return {"source": source, "issue": 13, "device": env.get("device"), "torch": env.get("torch"),
            "commit": env.get("commit"), "started_utc": env.get("started_utc"), "targets": entries}
