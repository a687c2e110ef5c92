"""Build results/REPORT.md (tables next to the paper's numbers) and training-curve PNGs from the run records.

    python experiments/report.py --runs results/runs --out results
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from versatileffn.paper import TASK_LABELS, TASKS, VARIANTS  # noqa: E402

ABBREV = tuple(TASK_LABELS[t] for t in TASKS)
# FACTS.md, 354M: (loss, avg acc) and FFN FLOPs (M)
PAPER = {"base": (2.779, 47.98, 377.49), "moe": (2.585, 51.48, 471.86), "loop2": (2.631, 51.47, 754.98),
         "loop4": (2.625, 51.98, 1509.96), "loop6": (2.623, 51.94, 2264.96), "versatile": (2.617, 52.33, 1236.08),
         "width": (2.633, None, None), "depth": (2.625, None, None), "ungated": (2.618, 52.10, None),
         "versatile-L2": (2.625, 51.54, None), "versatile-L6": (2.615, 51.61, None),
         "versatile-8c4": (2.617, 52.22, None), "versatile-16c4": (2.617, 51.72, None),
         "scratch-dense": (2.779, 47.98, None), "scratch-loop4": (2.641, 50.81, None),
         "scratch-versatile": (2.654, 51.14, None)}
LABEL = {"pretrain-dense": "dense start (pre-trained, 1 epoch)", **{v.run: v.label for v in VARIANTS.values()},
         "scratch-dense": "Base (scratch)", "scratch-loop4": "4-Loop (scratch)",
         "scratch-versatile": "VersatileFFN (scratch)"}
TABLES = {"Table 1/2 — continued pre-training": ["pretrain-dense", "base", "moe", "loop2", "loop4", "loop6", "versatile"],
          "Table 3 — ablation (gating = VersatileFFN)": ["base", "width", "depth", "ungated", "versatile"],
          "Table 4 — L_max and experts": ["versatile-L2", "versatile", "versatile-L6", "versatile-8c4", "versatile-16c4"],
          "Table 5 — from scratch, same total tokens": ["scratch-dense", "scratch-loop4", "scratch-versatile"]}


def load(runs: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in sorted(runs.glob("seed*/*.json")):
        rec = json.loads(f.read_text())
        out.setdefault(rec["run"], []).append(rec)
    return out


def cell(values: list[float], fmt: str) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt.lstrip('+'))}"


def table(name: str, rows: list[str], recs: dict[str, list[dict]]) -> str:
    head = ["Method", "seeds", "val loss", "Δ vs Base (same seed)", "paper loss (train, 354M)"] + list(ABBREV) + ["Avg", "paper Avg (354M)", "params (M)",
                                                                        "FFN MFLOPs/token (exact)", "(paper formula)",
                                                                        "paper FFN MFLOPs (354M)", "mean loops"]
    lines = [f"### {name}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in rows:
        rs = recs.get(run, [])
        paper = PAPER.get(run, (None, None, None))
        if not rs:
            lines.append("| " + " | ".join([LABEL[run], "0", "not run yet"] + ["–"] * (len(head) - 3)) + " |")
            continue
        # seeds differ in the pre-trained start as well: the paired difference to the same seed's Base is what
        # a seed spread cannot blur (Table 5 compares with the scratch Base)
        ref = "scratch-dense" if run.startswith("scratch-") else "base"
        base_loss = {r["seed"]: r["val"]["loss"] for r in recs.get(ref, [])}
        delta = [r["val"]["loss"] - base_loss[r["seed"]] for r in rs if r["seed"] in base_loss]
        acc = [[100 * r["tasks"]["tasks"][t]["primary"] for r in rs if r.get("tasks")] for t in TASKS]
        fl = [r["flops"]["all_tasks"] for r in rs if r["flops"].get("all_tasks")]
        loops = [r["flops"]["all_tasks"].get("mean_loops") for r in rs if (r["flops"].get("all_tasks") or {}).get("mean_loops")]
        cells = [LABEL[run], str(len(rs)), cell([r["val"]["loss"] for r in rs], ".4f"),
                 "–" if run == ref else cell(delta, "+.4f"), "–" if paper[0] is None else f"{paper[0]:.3f}"]
        cells += [cell(a, ".1f") for a in acc]
        cells += [cell([100 * r["tasks"]["average"] for r in rs if r.get("tasks")], ".2f"),
                  "–" if paper[1] is None else f"{paper[1]:.2f}", f"{rs[0]['params']['total'] / 1e6:.2f}",
                  cell([f["paper"] / 1e6 for f in fl if f.get("paper")], ".2f"),
                  cell([f["formula"] / 1e6 for f in fl if f.get("formula")], ".2f"),
                  "–" if paper[2] is None else f"{paper[2]:.2f}", cell(loops, ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


CURVES = {  # file -> (runs, x label, title)
    "curves_table1.png": (["base", "moe", "loop2", "loop4", "loop6", "versatile"], "continued pre-training tokens (M)",
                          "Table 1: continued pre-training from the same dense base, one epoch of 14.6M tokens"),
    "curves_table34.png": (["base", "versatile", "width", "depth", "ungated", "versatile-L2", "versatile-L6",
                            "versatile-8c4", "versatile-16c4"], "continued pre-training tokens (M)",
                           "Tables 3 and 4: VersatileFFN ablations, same start and recipe"),
    "curves_table5.png": (["pretrain-dense", "scratch-dense", "scratch-loop4", "scratch-versatile"],
                          "training tokens from random init (M)",
                          "From scratch: two epochs (= pre-training + continued pre-training tokens)"),
}


def curves(recs: dict[str, list[dict]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, (wanted, xlabel, title) in CURVES.items():
        runs = [r for r in wanted if any(x["seed"] == 0 for x in recs.get(r, []))]
        if not runs:
            continue
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for i, run in enumerate(runs):
            c = next(x for x in recs[run] if x["seed"] == 0)["curve"]
            ax.plot([p["tokens"] / 1e6 for p in c], [p["loss"] for p in c], label=LABEL[run], lw=1.2,
                    ls="-" if i < 5 else "--")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("training loss (seed 0)")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(top=min(8.0, ax.get_ylim()[1]))
        ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        paths.append(out / name)
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default="results/runs")
    p.add_argument("--out", default="results")
    args = p.parse_args(argv)
    recs = load(Path(args.runs))
    out = Path(args.out)
    pngs = curves(recs, out)
    every = [r for rs in recs.values() for r in rs]
    devices = sorted({f"{r['device']} (torch {r['torch']})" for r in every})
    epoch = min(r["tokens_seen"] for r in every)
    parts = [f"Generated by `python experiments/report.py` from `{args.runs}/seed*/<run>.json` ({len(every)} records); "
             f"device: {', '.join(devices)}. Training tokens per run: {epoch:,} (one epoch) for the pre-training and every "
             f"continued run, {2 * epoch:,} (two epochs) for Table 5. Mean ± standard deviation over seeds where "
             "there are several. Accuracies: first 1,000 questions per task (all of ARC-C, OBQA, ARC-E; HellaSwag, "
             "PIQA, CSQA, WG, SciQ truncated), OLMES primary metric, %."]
    parts += [table(name, rows, recs) for name, rows in TABLES.items()]
    parts += [f"![training curves]({p.name})" for p in pngs]
    (out / "TABLES.md").write_text("\n\n".join(parts) + "\n")
    print((out / "TABLES.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
