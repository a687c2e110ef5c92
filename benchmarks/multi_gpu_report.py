"""Collect the runs of benchmarks/multi_gpu.sh into one JSON record and a Markdown summary.

    python benchmarks/multi_gpu_report.py OUT_DIR benchmarks/results/multi_gpu_h200x2.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def load(out: Path, name: str) -> dict | None:
    f = out / name / "summary.json"
    return json.loads(f.read_text()) if f.is_file() else None


def max_abs_diff(a: list[float], b: list[float]) -> float | None:
    if not a or not b:
        return None
    n = min(len(a), len(b))
    return max(abs(x - y) for x, y in zip(a[:n], b[:n]))


def main(out_dir: str, dest: str) -> int:
    out = Path(out_dir)
    runs = {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/summary.json"))}
    status = {p.name[: -len(".rc.json")]: json.loads(p.read_text()) for p in sorted(out.glob("*.rc.json"))}
    rec: dict = {"runs": runs, "status": status, "scaling": {}, "loss_agreement": {}, "memory_gib_per_rank": {}}
    for ffn in ("dense", "versatile"):
        one = runs.get(f"1gpu-{ffn}")
        for par in ("ddp", "fsdp"):
            two = runs.get(f"2gpu-{par}-{ffn}")
            if not (one and two and one["tokens_per_s"] and two["tokens_per_s"]):
                continue
            rec["scaling"][f"{ffn}-{par}"] = {
                "tokens_per_s_1gpu": one["tokens_per_s"], "tokens_per_s_2gpu": two["tokens_per_s"],
                "speedup": two["tokens_per_s"] / one["tokens_per_s"],
                "efficiency": two["tokens_per_s"] / (2 * one["tokens_per_s"])}
            rec["loss_agreement"][f"{ffn}-{par}"] = {
                "max_abs_loss_diff_vs_1gpu": max_abs_diff(one["losses"], two["losses"]),
                "losses_1gpu": one["losses"], "losses_2gpu": two["losses"]}
            rec["memory_gib_per_rank"][f"{ffn}-{par}"] = two["peak_memory_gib_per_rank"]
        if one:
            rec["memory_gib_per_rank"][f"{ffn}-1gpu"] = one["peak_memory_gib_per_rank"]
    base, resumed = runs.get("2gpu-fsdp-versatile"), runs.get("2gpu-fsdp-resume")
    if base and resumed:
        rec["resume"] = {"checkpoint": "gathered full state dict (rank 0 writes; every rank loads)",
                         "resume_at": resumed["resume_at"], "max_abs_loss_diff_vs_uninterrupted":
                         max_abs_diff(base["losses"], resumed["losses"]),
                         "losses_uninterrupted": base["losses"], "losses_resumed": resumed["losses"]}
    for name in ("2gpu-ddp-stress", "2gpu-fsdp-stress"):
        st = status.get(name, {})
        rec.setdefault("stress", {})[name] = {"finished": st.get("rc") == 0, "rc": st.get("rc"),
                                              "seconds": st.get("seconds"), "losses": (runs.get(name) or {}).get("losses")}
    some = next(iter(runs.values()), {})
    rec["device"], rec["torch"] = some.get("device"), some.get("torch")
    Path(dest).write_text(json.dumps(rec, indent=2))
    lines = ["| FFN | parallel | tokens/s 1 GPU | tokens/s 2 GPUs | efficiency | max |Δloss| vs 1 GPU | peak GiB/rank |",
             "|---|---|---|---|---|---|---|"]
    for key, s in rec["scaling"].items():
        ffn, par = key.split("-")
        lines.append(f"| {ffn} | {par} | {s['tokens_per_s_1gpu']:,.0f} | {s['tokens_per_s_2gpu']:,.0f} | "
                     f"{s['efficiency']:.2f} | {rec['loss_agreement'][key]['max_abs_loss_diff_vs_1gpu']:.4f} | "
                     f"{max(rec['memory_gib_per_rank'][key]):.1f} |")
    print("\n".join(lines))
    print(json.dumps({k: rec.get(k) for k in ("resume", "stress")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
