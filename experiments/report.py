"""Build results/TABLES.md (tables next to the paper's numbers) and training-curve PNGs from the run records.

    python experiments/report.py --runs results/runs --out results

Two baselines (issue 17): the paper's Table 1 "Base" (2.779) is the checkpoint before continued training, so its
gains are measured against the dense START; its own continued dense run (Section 4.1, depth-only with one loop,
2.654) is the fair baseline, as Base continued is here. Every table says which one a Δ is taken against.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from versatileffn.paper import TASK_LABELS, TASKS  # noqa: E402

from rows import (DENSE_START, DENSE_START_PAPER, PAPER_BASE_CONTINUED, PAPER_DENSE_START, ROWS,  # noqa: E402
                  label)

ABBREV = tuple(TASK_LABELS[t] for t in TASKS)
SECTIONS = {"Table 1/2 — continued pre-training": [DENSE_START, "base", "moe", "loop2", "loop4", "loop6", "versatile"],
            "Table 3 — ablation (gating = VersatileFFN)": ["base", "width", "depth", "ungated", "versatile"],
            "Table 4 — L_max and experts": ["versatile-L2", "versatile", "versatile-L6", "versatile-8c4", "versatile-16c4"],
            "Table 5 — from scratch, same total tokens": ["scratch-dense", "scratch-loop4", "scratch-versatile"]}
BASELINE_ROWS = ["moe", "loop2", "loop4", "loop6", "versatile", "width", "depth", "ungated", "versatile-L2",
                 "versatile-L6", "versatile-8c4", "versatile-16c4"]
STEPS_PAIRS = [("base", "base-4x"), ("loop4", "loop4-4x"), ("versatile", "versatile-4x")]  # (222 steps, 4x steps)
DP_PAIRS = [("versatile", "versatile-dp"), ("loop4", "loop4-dp")]  # (the paper's start, the dense-preserving one)


def load(runs: Path, pattern: str = "seed*/*.json") -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in sorted(runs.glob(pattern)):
        rec = json.loads(f.read_text())
        out.setdefault(rec["run"], []).append(rec)
    return out


def cell(values: list[float], fmt: str) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values), fmt.lstrip('+'))}"


def paper_of(run: str) -> tuple:
    return DENSE_START_PAPER if run == DENSE_START else ROWS[run].paper if run in ROWS else (None, None, None)


def paired(run: str, recs: dict[str, list[dict]]) -> list[float]:
    """Loss minus the same seed's reference row (the row's `base`): seeds also change the pre-trained start, so
    only a paired difference is free of that spread."""
    ref = ROWS[run].base if run in ROWS else "base"
    base_loss = {r["seed"]: r["val"]["loss"] for r in recs.get(ref, [])}
    return [r["val"]["loss"] - base_loss[r["seed"]] for r in recs.get(run, []) if r["seed"] in base_loss]


def vs_start(run: str, recs: dict[str, list[dict]]) -> list[float]:
    """Loss minus the dense start it continued from (the record's own, else the seed's pre-training record)."""
    start = {r["seed"]: r["val"]["loss"] for r in recs.get(DENSE_START, [])}
    out = []
    for r in recs.get(run, []):
        ref = (r.get("dense_start") or {}).get("val_loss", start.get(r["seed"]))
        if ref is not None:
            out.append(r["val"]["loss"] - ref)
    return out


def mean_loops(rs: list[dict]) -> list[float]:
    return [r["flops"]["all_tasks"]["mean_loops"] for r in rs if (r["flops"].get("all_tasks") or {}).get("mean_loops")]


def step0_gaps(rs: list[dict]) -> list[float]:
    return [r["step0"]["gap"] for r in rs if r.get("step0")]


def fmt_paper(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def table(name: str, rows: list[str], recs: dict[str, list[dict]]) -> str:
    scratch = all(ROWS[r].init == "scratch" for r in rows if r in ROWS)
    head = ["Method", "seeds", "val loss", "Δ vs Base (scratch), same seed" if scratch else "Δ vs Base continued (same seed)",
            "paper loss (train, 354M)"] + list(ABBREV)
    head += ["Avg", "paper Avg (354M)", "params (M)", "FFN MFLOPs/token (exact)", "(paper formula)",
             "paper FFN MFLOPs (354M)", "mean loops"]
    lines = []
    for run in rows:
        rs = recs.get(run, [])
        paper = paper_of(run)
        if not rs:
            lines.append([label(run), "0", "not run yet"] + ["–"] * (len(head) - 3))
            continue
        ref = ROWS[run].base if run in ROWS else None
        acc = [[100 * r["tasks"]["tasks"][t]["primary"] for r in rs if r.get("tasks")] for t in TASKS]
        fl = [r["flops"]["all_tasks"] for r in rs if r["flops"].get("all_tasks")]
        cells = [label(run), str(len(rs)), cell([r["val"]["loss"] for r in rs], ".4f"),
                 "–" if run == ref else cell(paired(run, recs) if ref else
                                             [-d for d in vs_start("base", recs)], "+.4f"),
                 fmt_paper(paper[0], ".3f")]
        cells += [cell(a, ".1f") for a in acc]
        cells += [cell([100 * r["tasks"]["average"] for r in rs if r.get("tasks")], ".2f"), fmt_paper(paper[1], ".2f"),
                  f"{rs[0]['params']['total'] / 1e6:.2f}", cell([f["paper"] / 1e6 for f in fl if f.get("paper")], ".2f"),
                  cell([f["formula"] / 1e6 for f in fl if f.get("formula")], ".2f"), fmt_paper(paper[2], ".2f"),
                  cell(mean_loops(rs), ".2f")]
        lines.append(cells)
    return "\n".join([f"### {name}", ""] + md_table(head, lines))


def baselines_table(recs: dict[str, list[dict]]) -> str:
    """Issue 17, part 1: every continued row against both baselines, each next to the paper's matching number."""
    head = ["Method", "seeds", "Δ vs dense start (the paper's way)", f"paper: loss − {PAPER_DENSE_START} (its Base)",
            "Δ vs Base continued (fair; same seed)", f"paper: loss − {PAPER_BASE_CONTINUED} (its continued dense run)",
            "step-0 gap to dense start", "mean loops"]
    lines = []
    for run in ["base"] + BASELINE_ROWS:
        rs = recs.get(run, [])
        if not rs:
            continue
        loss = ROWS[run].paper[0]
        lines.append([label(run), str(len(rs)), cell(vs_start(run, recs), "+.4f"),
                      fmt_paper(None if loss is None else loss - PAPER_DENSE_START, "+.3f"),
                      "–" if run == "base" else cell(paired(run, recs), "+.4f"),
                      "reference" if run == "base" else fmt_paper(None if loss is None else loss - PAPER_BASE_CONTINUED,
                                                                  "+.3f"),
                      cell(step0_gaps(rs), "+.4f"), cell(mean_loops(rs), ".2f")])
    text = [
        "### Two baselines (issue 17)", "",
        f"The paper's Table 1 *Base* ({PAPER_DENSE_START}) is the dense checkpoint **before** continued pre-training "
        "(the same numbers as its Table 5 model without continued pre-training), so its gains are measured against "
        "the dense **start**. Its own dense model trained for the same extra epoch is Section 4.1's depth-only run "
        f"with one loop ({PAPER_BASE_CONTINUED}); against it the paper's gains shrink to the fourth column. Here, "
        "*Δ vs dense start* = loss − the pre-trained dense model every row continued from (the paper's way); "
        "*Δ vs Base continued* = loss − the dense model continued with the same tokens and recipe, same seed (the "
        "fair way). Our losses are validation losses, the paper's are training losses; compare differences, not "
        "levels. Step-0 gap: validation loss right after the conversion, before any training, minus the dense "
        "start's on the same tokens (records from issue 17 on).", ""]
    return "\n".join(text + md_table(head, lines))


def steps_table(recs: dict[str, list[dict]]) -> str | None:
    """Issue 17, part 4: the paired Δ after 4x more optimizer steps over the same tokens, next to the 1x one."""
    if not any(recs.get(many) for _, many in STEPS_PAIRS):
        return None
    head = ["Method", "seeds (1x / 4x)", "optimizer steps (1x / 4x)", "val loss, 1x steps", "val loss, 4x steps",
            "Δ vs Base continued, 1x steps", "Δ vs Base continued, 4x steps", "mean loops (1x / 4x)"]
    lines = []
    for one, many in STEPS_PAIRS:
        a, b = recs.get(one, []), recs.get(many, [])
        lines.append([label(one), f"{len(a)} / {len(b)}", f"{steps(a)} / {steps(b)}",
                      cell([r["val"]["loss"] for r in a], ".4f"), cell([r["val"]["loss"] for r in b], ".4f"),
                      "–" if one == "base" else cell(paired(one, recs), "+.4f"),
                      "–" if one == "base" else cell(paired(many, recs), "+.4f"),
                      f"{cell(mean_loops(a), '.2f')} / {cell(mean_loops(b), '.2f')}"])
    text = ["### More optimizer steps over the same tokens (issue 17, part 4)", "",
            "The same one epoch of continued pre-training with a 4x smaller global batch (4x the optimizer steps), "
            "same peak LR and schedule shape; each 4x row is paired with Base continued at 4x steps from the same "
            "dense start.", ""]
    return "\n".join(text + md_table(head, lines))


def steps(rs: list[dict]) -> str:
    """Optimizer steps of the records (older records: the last logged step of the curve)."""
    return cell([float(r.get("steps") or r["curve"][-1]["step"]) for r in rs if r.get("steps") or r["curve"]], ".0f")


def layer_mean(rs: list[dict], key: str) -> list[float]:
    """A per-layer value of the final model's validation statistics (e.g. the dense-preserving scales), averaged."""
    out = []
    for r in rs:
        vals = [layer[key] for layer in (r.get("val_ffn_stats") or []) if key in layer]
        if vals:
            out.append(sum(vals) / len(vals))
    return out


def exact_mflops(rs: list[dict]) -> list[float]:
    return [r["flops"]["all_tasks"]["paper"] / 1e6 for r in rs if (r["flops"].get("all_tasks") or {}).get("paper")]


def dp_table(recs: dict[str, list[dict]], step0_recs: dict[str, list[dict]]) -> str | None:
    """Issue 17, part 2: the dense-preserving start against the paper's, each paired with its own Base continued."""
    if not any(recs.get(dp) for _, dp in DP_PAIRS):
        return None
    head = ["Method", "seeds", "val loss", "Δ vs its Base continued, per seed", "Δ mean ± sd",
            "step-0 gap to dense start", "mean executed loops", "FFN MFLOPs/token (exact)", "final width γ",
            "final loop step s·α (mean)"]
    lines = []
    for run in [r for pair in DP_PAIRS for r in pair]:
        rs = recs.get(run, [])
        if not rs:
            continue
        gaps = step0_gaps(rs) or step0_gaps(step0_recs.get(run, []))
        per_seed = ", ".join(f"s{r['seed']} {d:+.4f}" for r, d in zip(
            [r for r in rs if r["seed"] in {b["seed"] for b in recs.get(ROWS[run].base, [])}], paired(run, recs)))
        lines.append([label(run), str(len(rs)), cell([r["val"]["loss"] for r in rs], ".4f"), per_seed or "–",
                      cell(paired(run, recs), "+.4f"), cell(gaps, "+.4f"), cell(mean_loops(rs), ".2f"),
                      cell(exact_mflops(rs), ".1f"), cell(layer_mean(rs, "width_gamma"), ".3f"),
                      cell(layer_mean(rs, "loop_step_mean"), "+.3f")])
    text = ["### Dense-preserving start (issue 17, part 2; not the paper's method)", "",
            "`model.ffn.dense_preserving=true` (versatileffn/ffn/dense_preserving.py): loops >= 2 add s·α ⊙ ΔF with "
            "α = 0 at the start, and the width path is γ·(full FFN) + (1 − γ)·(the paper's top-K slices) with γ = 1 "
            "at the start, so the converted model computes the dense model exactly at step 0. The dense-preserving "
            "rows are paired with a Base continued from the same dense start, trained in the same call; the paper's "
            "rows with theirs. γ and s·α: layer means of the final model (γ = 0 and s·α = 1 are the paper's layer). "
            "Step-0 gaps of the paper's rows come from `seed<S>/step0/` where their records predate the field.", ""]
    return "\n".join(text + md_table(head, lines))


def other_table(recs: dict[str, list[dict]]) -> str | None:
    """Rows no section above shows (e.g. issue 17's dense-preserving starts), with their paired Δ and step-0 gap."""
    shown = ({r for rows in SECTIONS.values() for r in rows} | {r for pair in STEPS_PAIRS + DP_PAIRS for r in pair}
             | {ROWS[dp].base for _, dp in DP_PAIRS})
    others = sorted(r for r in recs if r not in shown)
    if not others:
        return None
    head = ["Method", "run", "seeds", "val loss", "Δ vs its paired row (same seed)", "Δ vs dense start",
            "step-0 gap to dense start", "mean loops"]
    lines = [[label(run), f"`{run}`", str(len(recs[run])), cell([r["val"]["loss"] for r in recs[run]], ".4f"),
              f"{cell(paired(run, recs), '+.4f')} (vs {label(ROWS[run].base if run in ROWS else 'base')})",
              cell(vs_start(run, recs), "+.4f"), cell(step0_gaps(recs[run]), "+.4f"), cell(mean_loops(recs[run]), ".2f")]
             for run in others]
    return "\n".join(["### Other rows", ""] + md_table(head, lines))


CURVES = {  # file -> (runs, x label, title)
    "curves_table1.png": (["base", "moe", "loop2", "loop4", "loop6", "versatile"], "continued pre-training tokens (M)",
                          "Table 1: continued pre-training from the same dense base, one epoch of 14.6M tokens"),
    "curves_table34.png": (["base", "versatile", "width", "depth", "ungated", "versatile-L2", "versatile-L6",
                            "versatile-8c4", "versatile-16c4"], "continued pre-training tokens (M)",
                           "Tables 3 and 4: VersatileFFN ablations, same start and recipe"),
    "curves_table5.png": ([DENSE_START, "scratch-dense", "scratch-loop4", "scratch-versatile"],
                          "training tokens from random init (M)",
                          "From scratch: two epochs (= pre-training + continued pre-training tokens)"),
    "curves_steps4x.png": (["base", "loop4", "versatile", "base-4x", "loop4-4x", "versatile-4x"],
                           "continued pre-training tokens (M)", "The same tokens in 222 vs 4x as many optimizer steps"),
}


def curves(recs: dict[str, list[dict]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, (wanted, xlabel, title) in CURVES.items():
        runs = [r for r in wanted if any(x["seed"] == 0 for x in recs.get(r, []))]
        if not runs or (name == "curves_steps4x.png" and not any(r.endswith("-4x") for r in runs)):
            continue
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for i, run in enumerate(runs):
            c = next(x for x in recs[run] if x["seed"] == 0)["curve"]
            ax.plot([p["tokens"] / 1e6 for p in c], [p["loss"] for p in c], label=label(run), lw=1.2,
                    ls="-" if i < 5 and not run.endswith("-4x") else "--")
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


def paired_curve(run: str, seed: int, recs: dict[str, list[dict]]) -> tuple[list[float], list[float]] | None:
    """(tokens in M, training loss minus the same seed's paired row at the same step), smoothed over 5 logged steps:
    both runs see the same batches in the same order, so the difference is free of the batches' own difficulty."""
    rec = next((r for r in recs.get(run, []) if r["seed"] == seed), None)
    ref = next((r for r in recs.get(ROWS[run].base, []) if r["seed"] == seed), None)
    if rec is None or ref is None:
        return None
    base = {p["step"]: p["loss"] for p in ref["curve"]}
    pts = [(p["tokens"] / 1e6, p["loss"] - base[p["step"]]) for p in rec["curve"] if p["step"] in base]
    if len(pts) < 5:
        return None
    xs = [x for x, _ in pts][2:-2]
    ys = [statistics.mean(d for _, d in pts[i - 2:i + 3]) for i in range(2, len(pts) - 2)]
    return xs, ys


def dp_curves(recs: dict[str, list[dict]], out: Path) -> Path | None:
    """The whole continued pre-training against Base continued: the paper's start vs the dense-preserving one."""
    runs = [r for pair in DP_PAIRS for r in pair]
    if not any(recs.get(dp) for _, dp in DP_PAIRS):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, run in enumerate(runs):
        for seed, ls in ((0, "-"), (1, "--")):
            curve = paired_curve(run, seed, recs)
            if curve:
                ax.plot(*curve, color=f"C{i}", ls=ls, lw=1.2, label=f"{label(run)}, seed {seed}")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xlabel("continued pre-training tokens (M)")
    ax.set_ylabel("training loss − Base continued (same seed, same step)")
    ax.set_title("The paper's start vs the dense-preserving start (smoothed over 5 logged steps)", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "curves_dp.png", dpi=110)
    plt.close(fig)
    return out / "curves_dp.png"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default="results/runs")
    p.add_argument("--out", default="results")
    args = p.parse_args(argv)
    recs = load(Path(args.runs))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pngs = curves(recs, out) + [p for p in (dp_curves(recs, out),) if p]
    every = [r for rs in recs.values() for r in rs]
    devices = sorted({f"{r['device']} (torch {r['torch']})" for r in every})
    epoch = min(r["tokens_seen"] for r in every)
    parts = [f"Generated by `python experiments/report.py` from `{args.runs}/seed*/<run>.json` ({len(every)} records); "
             f"device: {', '.join(devices)}. Training tokens per run: {epoch:,} (one epoch) for the pre-training and every "
             f"continued run, {2 * epoch:,} (two epochs) for Table 5. Mean ± standard deviation over seeds where "
             "there are several. Accuracies: first 1,000 questions per task (all of ARC-C, OBQA, ARC-E; HellaSwag, "
             "PIQA, CSQA, WG, SciQ truncated), OLMES primary metric, %."]
    parts.append(baselines_table(recs))
    parts += [table(name, rows, recs) for name, rows in SECTIONS.items()]
    parts += [t for t in (dp_table(recs, load(Path(args.runs), "seed*/step0/*.json")), steps_table(recs),
                          other_table(recs)) if t]
    parts += [f"![training curves]({p.name})" for p in pngs]
    (out / "TABLES.md").write_text("\n\n".join(parts) + "\n")
    print((out / "TABLES.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
