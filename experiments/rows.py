"""The reproduction's rows, in one table that the driver (reproduce.py) and the report (report.py) share.

A row names a run: its FFN (a short name of the library's FFN table), its own ``--set`` overrides, how it
starts (continued from the seed's dense start, or from scratch), how many optimizer steps it takes over the same
tokens, the row its paired difference is taken against, and the paper's numbers for it. Adding a row is one
line here; the driver runs it (``reproduce.py --runs NAME``) and the report shows it, with its paired Δ and its
step-0 gap, in the table its section names or under "Other rows" (e.g. issue 17's dense-preserving rows).

No torch import: the report runs without it.
"""
from __future__ import annotations

from dataclasses import dataclass

# The paper (FACTS.md; 354M, training loss): Table 1's "Base" 2.779 is Table 5's model "without continued
# pre-training", i.e. the dense start. Its own continued dense run is Section 4.1's depth-only run with one loop
# (the dense FFN applied once, trained for the same extra epoch): 2.654 / 50.09.
PAPER_DENSE_START = 2.779
PAPER_BASE_CONTINUED = 2.654


@dataclass(frozen=True)
class Row:
    ffn: str                              # a short name of the library's FFN table (dense, loop4, versatile, ...)
    label: str
    overrides: tuple[str, ...] = ()       # this row's own `--set` overrides, applied after the FFN's
    init: str = "dense"                   # "dense": continued from the seed's dense start; "scratch": random init
    steps_factor: int = 1                 # optimizer steps over the same tokens (the global batch divided by it)
    base: str = "base"                    # the row its paired Δ is taken against (same seed)
    paper: tuple = (None, None, None)     # the paper's 354M (loss, Avg accuracy, FFN MFLOPs per token)

    @property
    def epochs(self) -> int:
        """Table 5 trains from scratch on as many tokens as pre-training + continued pre-training."""
        return 2 if self.init == "scratch" else 1


ROWS: dict[str, Row] = {
    # Table 1/2
    "base": Row("dense", "Base continued", paper=(PAPER_BASE_CONTINUED, 50.09, 377.49)),
    "moe": Row("moe", "MoE", paper=(2.585, 51.48, 471.86)),
    "loop2": Row("loop2", "2-Loop", paper=(2.631, 51.47, 754.98)),
    "loop4": Row("loop4", "4-Loop", paper=(2.625, 51.98, 1509.96)),
    "loop6": Row("loop6", "6-Loop", paper=(2.623, 51.94, 2264.96)),
    "versatile": Row("versatile", "VersatileFFN", paper=(2.617, 52.33, 1236.08)),
    # Table 3
    "width": Row("versatile-width", "width only", paper=(2.633, None, None)),
    "depth": Row("versatile-depth", "depth only", paper=(2.625, None, None)),
    "ungated": Row("versatile-ungated", "width + depth, no gate", paper=(2.618, 52.10, None)),
    # Table 4
    "versatile-L2": Row("versatile", "L_max 2", ("model.ffn.max_loops=2",), paper=(2.625, 51.54, None)),
    "versatile-L6": Row("versatile", "L_max 6", ("model.ffn.max_loops=6",), paper=(2.615, 51.61, None)),
    "versatile-8c4": Row("versatile", "experts 8-choose-4", ("model.ffn.top_k=4",), paper=(2.617, 52.22, None)),
    "versatile-16c4": Row("versatile", "experts 16-choose-4", ("model.ffn.n_experts=16", "model.ffn.top_k=4"),
                          paper=(2.617, 51.72, None)),
    # Table 5: from scratch, the same total tokens (no continued pre-training in the paper)
    "scratch-dense": Row("dense", "Base (scratch)", init="scratch", base="scratch-dense",
                         paper=(PAPER_DENSE_START, 47.98, None)),
    "scratch-loop4": Row("loop4", "4-Loop (scratch)", init="scratch", base="scratch-dense", paper=(2.641, 50.81, None)),
    "scratch-versatile": Row("versatile", "VersatileFFN (scratch)", init="scratch", base="scratch-dense",
                             paper=(2.654, 51.14, None)),
    # issue 17, part 4: 4x more optimizer steps over the same tokens (a 4x smaller global batch)
    "base-4x": Row("dense", "Base continued, 4x steps", steps_factor=4, base="base-4x"),
    "loop4-4x": Row("loop4", "4-Loop, 4x steps", steps_factor=4, base="base-4x"),
    "versatile-4x": Row("versatile", "VersatileFFN, 4x steps", steps_factor=4, base="base-4x"),
    # issue 17, part 2: the dense-preserving start (versatileffn/ffn/dense_preserving.py; not the paper's), paired
    # with a Base continued from the same dense start, run in the same call (bf16 attention is not bitwise
    # deterministic, so a re-trained dense start differs from the committed one in the last digits)
    "dp-base": Row("dense", "Base continued (dense-preserving batch)", base="dp-base"),
    "versatile-dp": Row("versatile", "VersatileFFN, dense-preserving start", ("model.ffn.dense_preserving=true",),
                        base="dp-base"),
    "loop4-dp": Row("loop4", "4-Loop, dense-preserving start", ("model.ffn.dense_preserving=true",), base="dp-base"),
}

# `reproduce.py --table T` runs these rows, in this order (the most informative first)
TABLES: dict[str, list[str]] = {
    "1": ["base", "versatile", "moe", "loop4", "loop2", "loop6"],
    "3": ["width", "depth", "ungated", "versatile"],
    "4": ["versatile-L2", "versatile", "versatile-L6", "versatile-8c4", "versatile-16c4"],
    "5": ["scratch-dense", "scratch-loop4", "scratch-versatile"],
    "4x": ["base-4x", "versatile-4x", "loop4-4x"],
    "dp": ["dp-base", "versatile-dp", "loop4-dp"],
}

DENSE_START = "pretrain-dense"  # the record of the seed's dense start (one epoch from scratch)
DENSE_START_LABEL = "dense start (pre-trained, 1 epoch)"
DENSE_START_PAPER = (PAPER_DENSE_START, 47.98, 377.49)


def label(run: str) -> str:
    if run == DENSE_START:
        return DENSE_START_LABEL
    return ROWS[run].label if run in ROWS else run


def table_of(run: str) -> str | None:
    """The first table whose run list holds the row (None for a row of no table)."""
    return next((t for t, rows in TABLES.items() if run in rows), None)
