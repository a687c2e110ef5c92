"""Section ``anchor_ffn``: the issue's yardstick ``../shared/bench/anchor_ffn.py`` (path in ``Inputs``) run in the
same command at each of the suite's token counts (its ``TOKENS``), its JSON recorded beside our numbers. It needs
CUDA (Triton's ``do_bench``). (``anchor_decode.py`` runs inside the decode section.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .common import Bench, dig


def last_json(text: str) -> dict:
    """The last JSON object a script printed (one line, or indented over several starting with '{')."""
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("{"):
            try:
                return json.loads("\n".join(lines[i:]))
            except json.JSONDecodeError:
                continue
    raise ValueError(f"no JSON object in the output: {text[-300:]!r}")


def run_script(path: Path, timeout_s: float, **env) -> dict:
    """One yardstick in a fresh interpreter (as its README runs it): its JSON plus the wall seconds."""
    t = time.time()
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, **{k: str(v) for k, v in env.items()}})
    if done.returncode != 0:
        raise RuntimeError(f"{path.name} exited {done.returncode}: {done.stderr[-600:]}")
    return {**last_json(done.stdout), "wall_s": time.time() - t}


def section_anchor_ffn(b: Bench) -> dict | str:
    path = b.inputs.anchor_ffn
    if path is None:
        return "skipped: no --anchor-ffn given"
    if b.device.type != "cuda":
        return "skipped: the yardstick runs on CUDA only"
    res: dict = {"script": str(path)}
    for n in b.shape.tokens:
        res[str(n)] = run_script(path, min(180.0, b.left()), TOKENS=n) if b.left() >= 40 else \
            "skipped: time budget"
    res["beside_ours"] = beside_ours(b.out, res)
    return res


def beside_ours(out: dict, anchor: dict) -> dict:
    """The yardstick's ratios next to ours from this run: training x dense (4-Loop and its fastest VersatileFFN,
    ``vffn_gmm``, against our 4-Loop and ``auto``) and prefill x dense per mix (its compacted early exit against
    ours, with both FLOP ideals: the yardstick counts K/N of a whole FFN per width-path token)."""
    rows: dict = {}
    for n, a in anchor.items():
        if not isinstance(a, dict) or "train_ratio_to_dense" not in a:
            continue
        train = {"anchor_kloop4": a["train_ratio_to_dense"].get("kloop4"),
                 "anchor_vffn_gmm": a["train_ratio_to_dense"].get("vffn_gmm"),
                 "ours_loop4": dig(out, "train", n, "x_dense", "loop4"),
                 "ours_vffn_auto": dig(out, "train", n, "x_dense", "vffn_auto")}
        prefill = {}
        for mix, v in a.get("infer", {}).items():
            prefill[mix] = {"anchor_compact_x_dense": v.get("compact_x_dense"),
                            "anchor_ideal_x_dense": v.get("ideal_flops_x_dense"),
                            "ours_eager_x_dense": dig(out, "prefill", n, "eager", mix, "x_dense"),
                            "ours_graph_x_dense": dig(out, "prefill", n, "graph", mix, "x_dense"),
                            "ours_ideal_x_dense": dig(out, "prefill", n, "eager", mix, "ideal_x_dense")}
        rows[n] = {"train_x_dense": train, "prefill_x_dense": prefill}
    return rows


def summary_ffn(sec: dict) -> list[str]:
    lines = []
    for n, row in sec.get("beside_ours", {}).items():
        t = row["train_x_dense"]
        lines.append(f"anchor_ffn {n} tok train x dense: anchor 4-Loop {t['anchor_kloop4']:.2f} / vffn_gmm "
                     f"{t['anchor_vffn_gmm']:.2f}; ours 4-Loop {_f(t['ours_loop4'])} / auto {_f(t['ours_vffn_auto'])}")
    return lines


def _f(v) -> str:
    return "-" if v is None else f"{v:.2f}"
