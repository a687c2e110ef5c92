"""Issue 13's targets from a bench JSON -> targets_summary.json, and a short table on the terminal.

    python benchmarks/targets_summary.py OUT/bench.json benchmarks/results/targets_summary.json

Each entry: measured, target, met, device, command, detail, and ``reason``: null where met, "not measured: ..."
where the run has no figure, "" where a human must say why a measured target is missed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from versatileffn.bench import Shape, summary_file


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench_json", help="the JSON `versatileffn bench` wrote")
    p.add_argument("out", help="where targets_summary.json goes")
    args = p.parse_args(argv)
    out = json.loads(Path(args.bench_json).read_text())
    shape = Shape(**{k: tuple(v) if isinstance(v, list) else v for k, v in out["env"]["shape"].items()})
    summary = summary_file(out, shape, source=Path(args.bench_json).name)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    print(f"targets ({summary['device']}, commit {summary['commit']}):")
    for key, t in summary["targets"].items():
        m = t["measured"]
        state = "MET" if t["met"] else ("not met" if m is not None else "not measured")
        print(f"  {key:30s} {'-' if m is None else f'{m:.3f}':>9s} <= {t['target']:<6}  {state}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
