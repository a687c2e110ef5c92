"""GPU benchmark suite for the FFN family (``versatileffn bench``, ``benchmarks/bench_ffn.py``), beside the library.

Sections (each writes into one JSON; a section that runs out of its time budget is skipped and says so):
  check   correctness against the plain references on fresh random inputs (bf16 on the GPU)
  train   one FFN sublayer, fwd+bwd, dense / 4-Loop / VersatileFFN ("full", "exact") / the authors'
          approach (versatileffn.ffn.reference) / MoE (dense einsum, grouped GEMM); eager and compiled
  infer   eval forward per loop mix vs dense and vs the FLOP ideal; ours (compacted) vs authors' batch-max
  decode  one new token per sequence with a KV cache, whole LM, dense vs VersatileFFN
  e2e     LM training step (bf16 autocast, fused AdamW), tokens/s, MFU, peak memory; checkpointing
Every ratio is against the dense sublayer/model timed in the same run and the same execution mode.

Modules: ``timing`` (clocks), ``common`` (shapes, layers), one module per section, ``targets``, ``report`` (JSON and
summary) and ``run`` (the section registry ``SECTION_RUNNERS`` and ``run``). A new section is one module and one
registry line; FLOPs of whole models come from ``versatileffn.flops``.
"""
from .common import QUICK, Shape
from .report import summary_lines
from .run import SECTION_RUNNERS, SECTIONS, run
from .targets import TARGETS, targets
from .train import train_flop_ratios

__all__ = ["QUICK", "Shape", "SECTIONS", "SECTION_RUNNERS", "TARGETS", "run", "summary_lines", "targets",
           "train_flop_ratios"]
