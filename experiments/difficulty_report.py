"""The difficulty experiment's report: REPORT.md (tables) and difficulty.png from results/difficulty/<run>.json.

    python experiments/difficulty_report.py results/difficulty
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ORDER = ("dense", "loop2", "loop4", "moe", "versatile")
FIGURE = "difficulty.png"
SWEEPS = ("versatile", "loop4")  # the cap sweeps shown (every looped run's record has one)


def load(folder: Path) -> dict[str, dict]:
    recs = {}
    for f in sorted(folder.glob("*.json")):
        rec = json.loads(f.read_text())
        if isinstance(rec, dict) and "metrics" in rec and "run" in rec:
            recs[rec["run"]] = rec
    return dict(sorted(recs.items(), key=lambda kv: ORDER.index(kv[0]) if kv[0] in ORDER else len(ORDER)))


def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def num(v, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def seen_accuracy(entry: dict) -> float:
    """Accuracy on the pairs seen in training (k >= 2 with held-out pairs; otherwise every pair was seen)."""
    return entry["accuracy"] if entry.get("accuracy_seen") is None else entry["accuracy_seen"]


def difficulties(rec: dict) -> list[str]:
    return [k for k in rec["metrics"]["by_difficulty"] if k != "filler"]


def accuracy_table(recs: dict[str, dict]) -> list[str]:
    ks = difficulties(next(iter(recs.values())))
    hard = [k for k in ks if k not in ("0", "1")]
    head = (["run", "params", "FFN params", "FFN kFLOPs/token (paper / impl.)", "val loss"]
            + [("copy (k=0)" if k == "0" else f"k={k}") for k in ks] + ["filler"] + [f"held-out k={k}" for k in hard])
    rows = []
    for rec in recs.values():
        by = rec["metrics"]["by_difficulty"]
        fl = rec["metrics"]["ffn_flops_per_token"]
        rows.append([rec["label"], f"{rec['params']:,}", f"{rec['ffn_params']:,}",
                     f"{fl['paper'] / 1e3:.1f} / {fl['implementation'] / 1e3:.1f}", f"{rec['val_loss']:.4f}"]
                    + [pct(seen_accuracy(by[k]) if k in by else None) for k in ks]
                    + [pct(by.get("filler", {}).get("accuracy"))]
                    + [pct(by.get(k, {}).get("accuracy_heldout")) for k in hard])
    return md_table(head, rows)


def loops_table(recs: dict[str, dict]) -> list[str]:
    ks = difficulties(next(iter(recs.values())))
    head = (["run"] + [("copy" if k == "0" else f"k={k}") for k in ks] + ["filler", "all tokens",
            "Spearman ρ(loops, k), k = 0..4", "ρ, k = 1..4"]
            + [f"FFN kFLOPs/token, {'copy' if k == '0' else 'k=' + k}" for k in ks])
    rows = []
    for rec in recs.values():
        m = rec["metrics"]
        by = m["by_difficulty"]
        rows.append([rec["label"]] + [num(by.get(k, {}).get("mean_loops"), ".2f") for k in ks]
                    + [num(by.get("filler", {}).get("mean_loops"), ".2f"), num(m["mean_loops"], ".2f"),
                       num(m["spearman_loops_k"], "+.3f"), num(m["spearman_loops_k_without_copies"], "+.3f")]
                    + [num(by.get(k, {}).get("ffn_flops_per_token", {}).get("paper", 0) / 1e3, ".1f") for k in ks])
    return md_table(head, rows)


def sweep_table(rec: dict) -> list[str]:
    ks = [k for k in rec["cap_sweep"][0]["by_difficulty"] if k != "filler"]
    hard = [k for k in ks if k not in ("0", "1")]
    head = (["cap", "mean loops", "FFN kFLOPs/token (paper)"] + [("copy" if k == "0" else f"k={k}") for k in ks]
            + [f"held-out k={k}" for k in hard] + [f"loops k={k}" for k in ks])
    rows = []
    for s in rec["cap_sweep"]:
        by = s["by_difficulty"]
        rows.append([str(s["cap"]), f"{s['mean_loops']:.2f}", f"{s['ffn_flops_per_token']['paper'] / 1e3:.1f}"]
                    + [pct(by[k]["accuracy"]) for k in ks] + [pct(by[k].get("accuracy_heldout")) for k in hard]
                    + [num(by[k].get("mean_loops"), ".2f") for k in ks])
    return md_table(head, rows)


def figure(recs: dict[str, dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for i, rec in enumerate(recs.values()):
        by = rec["metrics"]["by_difficulty"]
        ks = [k for k in by if k != "filler"]
        color = f"C{i}"
        seen = [100 * seen_accuracy(by[k]) for k in ks]
        axes[0].plot([int(k) for k in ks], seen, "o-", color=color, label=rec["label"])
        held = [k for k in ks if by[k].get("accuracy_heldout") is not None]
        if held:
            axes[0].plot([int(k) for k in held], [100 * by[k]["accuracy_heldout"] for k in held], "x--", color=color)
        axes[1].plot([int(k) for k in ks], [by[k]["mean_loops"] for k in ks], "o-", color=color, label=rec["label"])
        if rec.get("cap_sweep") and rec["run"] in SWEEPS:
            for j, k in enumerate(ks):
                axes[2].plot([s["cap"] for s in rec["cap_sweep"]],
                             [100 * s["by_difficulty"][k]["accuracy"] for s in rec["cap_sweep"]],
                             "o-" if rec["run"] == "versatile" else "s:", color=f"C{j}", alpha=1 if rec["run"] ==
                             "versatile" else 0.5, label=f"{rec['label']}, {'copy' if k == '0' else 'k=' + k}")
    axes[0].set(xlabel="k (applications of f; 0 = copy)", ylabel="accuracy (%)",
                title="Accuracy per difficulty (solid: seen pairs, dashed: held-out)")
    axes[1].set(xlabel="k", ylabel="mean executed loops per layer", title="Executed loops at the answer position")
    axes[2].set(xlabel="inference loop cap", ylabel="accuracy (%)", title="Loop-cap sweep")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.tight_layout()
    path = out / FIGURE
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(folder: str | Path) -> Path | None:
    folder = Path(folder)
    recs = load(folder)
    if not recs:
        print(f"no difficulty records in {folder}", flush=True)
        return None
    first = next(iter(recs.values()))
    cfg, task = first["config"], first["task"]
    m, t = cfg["model"], cfg["train"]
    devices = sorted({f"{r['device']} (torch {r['torch']})" for r in recs.values()})
    commits = sorted({str(r.get("commit")) for r in recs.values()})
    lines = [
        "# Difficulty-aware depth: a controlled test (issue 17, part 3)", "",
        f"Generated by `python experiments/difficulty_report.py` from {len(recs)} records in this folder; device: "
        f"{', '.join(devices)}; commit {', '.join(commits)}. Task and design: `experiments/difficulty.py`.", "",
        f"Task: N = {first['n_symbols']} symbols ({task['digits']}² digit pairs), answers f^k(a) for k = 0 (copy) "
        f"to {task['max_k']}, {100 * task['heldout']:.1f}% of the symbols held out as arguments of k ≥ 2 in training. "
        f"Model: {m['n_layers']} layer(s), d_model {m['d_model']}, {m['n_heads']} heads, SwiGLU hidden {m['d_hidden']}; "
        f"{first['steps']} steps of {t['global_batch_tokens']:,} tokens ({first['tokens_seen']:,} tokens), peak LR "
        f"{t['lr']}, seed {t['seed']}. Evaluation: fresh records, eval mode (each token runs its predicted loops); "
        f"{first['metrics']['tokens']:,} positions.", "",
        "## Accuracy per difficulty (%)", "",
        "k = 2..4 columns: pairs seen in training; held-out: pairs never seen (a model that iterates f answers them, "
        f"chance is {100 / first['n_symbols']:.2f}%).", ""]
    lines += accuracy_table(recs)
    lines += ["", "## Executed loops per difficulty (mean over layers and answer tokens) and FFN FLOPs", "",
              "Loops per token from the loop head's inference decision (VersatileFFN) or the fixed count; Spearman "
              "over the answer positions. FFN FLOPs per token in the paper's convention (`versatileffn.flops`).", ""]
    lines += loops_table(recs)
    for rec in recs.values():
        if rec.get("cap_sweep") and rec["run"] in SWEEPS:
            lines += ["", f"## Inference loop-cap sweep: {rec['label']}", "",
                      "Every token runs min(its loops, cap); accuracy (%) and executed loops per difficulty.", ""]
            lines += sweep_table(rec)
    try:
        path = figure(recs, folder)
        lines += ["", f"![accuracy, loops and cap sweep]({path.name})"]
    except ImportError:
        lines += ["", "(figure skipped: matplotlib is not installed)"]
    lines += ["", "Per run: " + ", ".join(f"{r['label']} {r['seconds_train']:.0f} s" for r in recs.values())
              + " of training."]
    report = folder / "REPORT.md"
    report.write_text("\n".join(lines) + "\n")
    return report


if __name__ == "__main__":
    write_report(sys.argv[1] if len(sys.argv) > 1 else "results/difficulty")
