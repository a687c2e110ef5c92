"""The benchmark's sections, in the order a full run takes them: name -> what runs it and what it prints.

A section is one module of this package plus one line here: a function of the run's ``Bench`` returning the
section's JSON object (or a string saying why it was skipped), and optionally one turning that object into
lines of the run's short table."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import check, decode, e2e, full_eval, prefill, profile, train, yardstick
from .common import Bench


@dataclass(frozen=True)
class Section:
    run: Callable[[Bench], dict | str]
    summary: Callable[[dict], list[str]] | None = None


def decode_summary(sec: dict) -> list[str]:
    """The decode section's figures the targets read (``targets.DECODE_KEYS``)."""
    s = sec.get("summary")
    if not isinstance(s, dict):
        return []
    return [f"decode {s.get('mode')} {name} ms/step: " + " ".join(f"b{k} {v:.2f}" for k, v in s[name].items())
            for name in ("dense_ms", "versatile_uniform_ms") if isinstance(s.get(name), dict)]


REGISTRY: dict[str, Section] = {  # the targets' sections first: under a tight budget the last ones are skipped
    "check": Section(check.section_check, check.summary),
    "prefill": Section(prefill.section_prefill, prefill.summary),
    "train": Section(train.section_train, train.summary),
    "full_eval": Section(full_eval.section_full_eval, full_eval.summary),
    "decode": Section(decode.section_decode, decode_summary),
    "anchor_decode": Section(yardstick.section_anchor_decode, yardstick.summary_decode),
    "profile": Section(profile.section_profile, profile.summary),
    "anchor_ffn": Section(yardstick.section_anchor_ffn, yardstick.summary_ffn),
    "e2e": Section(e2e.section_e2e, e2e.summary),
}
SECTIONS = tuple(REGISTRY)
