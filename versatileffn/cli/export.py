"""``versatileffn export``: a model trained with ``versatileffn train`` -> a Hugging Face folder.

  versatileffn export --from runs/demo --out runs/demo-hf     # the run's final/ model
  python -c "from transformers import AutoModelForCausalLM as A; A.from_pretrained('runs/demo-hf', trust_remote_code=True)"
"""
from __future__ import annotations

import json
import logging

from ..folders import check_replaceable, check_writable

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("export", help="native model folder (a training run's final/) -> Hugging Face folder")
    p.add_argument("--from", dest="source", required=True,
                   help="a versatileffn model folder (io.save_model), or a training run folder (its final/ is used)")
    p.add_argument("--out", required=True, help="output folder: a new one, or a model folder versatileffn wrote "
                   "(replaced atomically; any other folder is refused)")
    p.add_argument("--no-check", action="store_true",
                   help="skip the check that the export's logits equal the native model's on a random batch")
    p.set_defaults(func=run)


def run(args) -> int:
    check_writable(args.out)
    check_replaceable(args.out, "model")  # fail before loading anything; checked again when writing
    from ..hf.export import export_native

    path, report = export_native(args.source, args.out, check=not args.no_check)
    log.info("wrote %s", path)
    print(json.dumps(report))
    return 0
