"""The speed targets of issue 13 (H200; ratios against dense measured in the same run and mode), each measured
from the bench JSON, and ``targets_summary.json`` (``summary_file``): one entry per target with ``measured``,
``target``, ``met``, ``device``, ``command`` and a ``reason`` for a human to fill where a target is not met.

The decode entries read what the ``decode`` section writes under ``out["decode"]["targets"]`` (``DECODE_KEYS``, each
{decode mode: figure}) and take the best mode; the decode section runs the yardstick ``anchor_decode.py`` itself
(the path in the environment variable ``VERSATILEFFN_ANCHOR_DECODE``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .common import Shape, dig

DECODE_KEYS = {
    "b1_uniform_ms": "ms per step at batch 1, VersatileFFN with the uniform loop mix forced",
    "uniform_x_dense_worst": "the worst batch of that over our dense step in the same mode",
    "dense_x_anchor_worst": "the worst batch of our dense step over the yardstick's graph step",
}
PREFILL_MIXES = ("all1", "uniform", "easy", "all4", "trained")


@dataclass(frozen=True)
class Target:
    text: str                                  # the wording
    limit: float                               # measured <= limit is met
    measure: Callable[[dict, Shape], tuple]    # (measured or None, detail dict, why not measured)


def decode(key: str):
    """The best decode mode's figure of ``out["decode"]["targets"][key]`` ({mode: figure})."""
    def measure(out: dict, s: Shape):
        per_mode = dig(out, "decode", "targets", key)
        per_mode = {m: v for m, v in per_mode.items() if isinstance(v, (int, float))} if isinstance(per_mode, dict) \
            else {}
        if not per_mode:
            return None, {}, f"the decode section wrote no targets.{key}"
        mode = min(per_mode, key=per_mode.get)
        return per_mode[mode], {"mode": mode, "per_mode": per_mode}, None
    return measure


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
                                   decode("b1_uniform_ms")),
    "decode_x_dense": Target("Decode vs this project's dense step, same mode: <= 1.8x at every batch 1-64 "
                             "(measured: the worst batch)", 1.8, decode("uniform_x_dense_worst")),
    "dense_decode_x_yardstick": Target("Dense decode vs the yardstick's graph step (anchor_decode.py): within "
                                       "1.15x (measured: the worst batch)", 1.15, decode("dense_x_anchor_worst")),
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
