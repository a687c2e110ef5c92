"""The benchmark's sections, in the order a full run takes them: name -> what runs it and what it prints.

A section is one module of this package plus one line here: a function of the run's ``Bench`` returning the
section's JSON object (or a string saying why it was skipped), and optionally one turning that object into
lines of the run's short table."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import check, decode, e2e, full_eval, prefill, profile, train, yardstick
from .common import Bench, dig
from .targets import DECODE_KEYS


@dataclass(frozen=True)
class Section:
    run: Callable[[Bench], dict | str]
    summary: Callable[[dict], list[str]] | None = None


def decode_summary(sec: dict) -> list[str]:
    """Every timed row of the decode section ({batch: {step_ms, ...}}) and its figures for the targets."""
    lines = []
    for key, rows in sec.items():
        timed = {b: r["step_ms"] for b, r in rows.items() if isinstance(r, dict) and "step_ms" in r} \
            if isinstance(rows, dict) else {}
        if timed:
            lines.append(f"decode {key} ms/step: " + " ".join(f"b{b} {ms:.2f}" for b, ms in timed.items()))
    for key in DECODE_KEYS:
        per_mode = dig(sec, "targets", key)
        if isinstance(per_mode, dict) and per_mode:
            lines.append(f"decode {key}: " + " ".join(f"{m} {v:.3f}" for m, v in per_mode.items()))
    return lines


REGISTRY: dict[str, Section] = {  # the targets' sections first: under a tight budget the last ones are skipped
    "check": Section(check.section_check, check.summary),
    "prefill": Section(prefill.section_prefill, prefill.summary),
    "train": Section(train.section_train, train.summary),
    "full_eval": Section(full_eval.section_full_eval, full_eval.summary),
    "decode": Section(decode.section_decode, decode_summary),
    "profile": Section(profile.section_profile, profile.summary),
    "anchor_ffn": Section(yardstick.section_anchor_ffn, yardstick.summary_ffn),
    "e2e": Section(e2e.section_e2e, e2e.summary),
}
SECTIONS = tuple(REGISTRY)
