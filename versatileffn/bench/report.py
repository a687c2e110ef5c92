"""The run's JSON file and its short summary for the terminal (and the README)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .decode import DECODE_VARIANTS


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=lambda o: None if isinstance(o, float) and math.isnan(o) else str(o)))
    os.replace(tmp, path)


def summary_lines(out: dict) -> list[str]:
    """A short table for the terminal (and the README)."""
    lines = [f"device: {out['env']['device']}  torch {out['env']['torch']}  dtype {out['env']['dtype']}"]
    for mode in ("eager", "compiled"):
        sec = out.get(f"train_{mode}")
        if isinstance(sec, dict):
            for n, row in sec.items():
                r = " ".join(f"{k} {v:.2f}" for k, v in row["x_dense"].items())
                lines.append(f"train {mode} {n} tok (x dense, dense {row['ms']['dense']:.2f} ms): {r}")
        sec = out.get(f"infer_{mode}")
        if isinstance(sec, dict):
            for n, row in sec.items():
                r = " ".join(f"{m} {v['ours_x_dense']:.2f}/{v['ideal_flop_x_dense']:.2f}"
                             + (f" (authors {v['authors_x_dense']:.2f})" if "authors_x_dense" in v else "")
                             for m, v in row["mixes"].items() if isinstance(v, dict))
                lines.append(f"infer {mode} {n} tok (ours/ideal x dense): {r}")
        sec = out.get(f"e2e_{mode}")
        if isinstance(sec, dict):
            for k, v in sec.items():
                if isinstance(v, dict):
                    lines.append(f"e2e {mode} {k}: {v['tokens_per_s']:.0f} tok/s, MFU {v['mfu']:.3f}, "
                                 f"peak {v.get('peak_mem_gib', float('nan')):.1f} GiB (mb {v['micro_batch']})")
                elif isinstance(v, str):
                    lines.append(f"e2e {mode} {k}: {v}")
    dec = out.get("decode")
    if isinstance(dec, dict):
        for name in DECODE_VARIANTS:
            rows = dec.get(name)
            if isinstance(rows, dict):
                r = " ".join(f"b{k} {v['step_ms']:.2f}ms/{v['tokens_per_s']:.0f}tok/s" for k, v in rows.items()
                             if isinstance(v, dict))
                lines.append(f"decode {name}: {r}")
        for k, v in dec.get("versatile_x_dense", {}).items():
            lines.append(f"decode batch {k}: best eager versatile x dense {v:.2f}")
    for k, v in (out.get("targets") or {}).items():
        m = v["measured"]
        lines.append(f"target {k}: {'MET' if v['met'] else 'not met'} (measured {m if m is None else round(m, 3)}, "
                     f"target {v['target']})")
    return lines
