"""The run's JSON file and its short table for the terminal (each section's lines, then the targets)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .registry import REGISTRY


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=lambda o: None if isinstance(o, float) and math.isnan(o) else str(o)))
    os.replace(tmp, path)


def summary_lines(out: dict) -> list[str]:
    env = out["env"]
    lines = [f"device: {env['device']}  torch {env['torch']}  dtype {env['dtype']}  commit {env.get('commit')}"]
    for name, section in REGISTRY.items():
        sec = out.get(name)
        if isinstance(sec, str):
            lines.append(f"{name}: {sec[:200]}")
        elif isinstance(sec, dict) and section.summary is not None:
            try:
                lines += section.summary(sec)
            except (KeyError, TypeError, ValueError) as exc:  # a partial section still leaves the others' lines
                lines.append(f"{name}: (no summary: {type(exc).__name__}: {exc})")
    for k, v in (out.get("targets") or {}).items():
        m = v["measured"]
        state = "MET" if v["met"] else ("not met" if m is not None else "not measured")
        lines.append(f"target {k}: {state} (measured {m if m is None else round(m, 3)}, target {v['target']})")
    return lines
