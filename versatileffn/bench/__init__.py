"""GPU benchmark suite (``versatileffn bench``; ``benchmarks/h200.sh`` runs all of it with the yardsticks), beside
the library.

Sections (``registry.REGISTRY``; each writes into one JSON; one that would overrun the time budget is skipped
and says so):
  check          every fast path against the plain references on fresh random inputs (bf16 on the GPU)
  prefill        eval forward of one FFN sublayer per forced loop mix (and a trained model's), eager and
                 CUDA-graphed, x dense and x the FLOP ideal
  train          exact-gradient fwd+bwd of one FFN sublayer, eager: x dense, x 4-Loop, what depth_grad auto picks
  full_eval      ``versatileffn eval`` on all 8 tasks, random paper-354m, dense and VersatileFFN: wall seconds
  decode         one new token per sequence, the whole LM through the decoder (generation.py), eager and one
                 CUDA graph per step, dense and VersatileFFN per forced loop mix, beside the yardstick
                 anchor_decode.py (a plain dense LM, one CUDA graph per step) run in the same section
  profile        where HellaSwag's evaluation time goes: host steps, one packed forward under torch.profiler
  anchor_ffn     the yardstick anchor_ffn.py at the same token counts, beside our ratios
  e2e            LM training step (bf16 autocast, fused AdamW): tokens/s, MFU, peak memory; checkpointing
Every ratio is against dense timed in the same run and the same mode; ``targets`` measures issue 13's targets
from the run's JSON (``targets.summary_file`` writes ``targets_summary.json``). FLOPs come from
``versatileffn.flops``.

Modules: ``timing`` (clocks), ``common`` (shapes, inputs, layers), one module per section, ``registry``,
``targets``, ``report`` (JSON and the short table) and ``run``.
"""
from .common import QUICK, Inputs, Shape
from .registry import REGISTRY, SECTIONS
from .report import summary_lines
from .run import run
from .targets import TARGETS, summary_file, targets

__all__ = ["QUICK", "Inputs", "Shape", "SECTIONS", "REGISTRY", "TARGETS", "run", "summary_file", "summary_lines",
           "targets"]
