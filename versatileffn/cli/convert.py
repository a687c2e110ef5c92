"""``versatileffn convert``: a dense Hugging Face causal LM -> a VersatileFFN model folder (and back).

  versatileffn convert --from HuggingFaceTB/SmolLM2-135M --out runs/smollm-versatile --n-experts 8 --top-k 2
  versatileffn convert --export-dense --from runs/smollm-versatile --out runs/smollm-dense
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ..errors import UserError
from ..folders import check_replaceable, check_writable
from ..io import check_weights, require_finite

log = logging.getLogger(__name__)

DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# CLI flag -> VersatileFFNConfig field; unset flags keep the paper's defaults
FFN_FLAGS = {"n_experts": int, "top_k": int, "d_expert": int, "max_loops": int, "mode": str, "tau_start": float,
             "tau_end": float, "tau_decay": float, "balance_loss_coef": float}


def register(sub) -> None:
    p = sub.add_parser("convert", help="dense HF causal LM (Llama/Qwen2/Mistral/OLMo2) -> VersatileFFN model folder")
    p.add_argument("--from", dest="source", required=True,
                   help="hub id or local folder of the dense model (with --export-dense: a converted folder)")
    p.add_argument("--out", required=True, help="output folder: a new one, or a model folder versatileffn wrote "
                   "(replaced atomically; any other folder is refused)")
    p.add_argument("--export-dense", action="store_true",
                   help="write the converted model --from back as the dense model it came from")
    for field, typ in FFN_FLAGS.items():
        p.add_argument("--" + field.replace("_", "-"), type=typ, default=None,
                       choices=("gated", "width", "depth", "ungated") if field == "mode" else None,
                       help=f"VersatileFFN {field} (default: the paper's value)")
    p.add_argument("--dtype", default="auto", choices=sorted(DTYPES), help="load/save dtype (auto: the checkpoint's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the router / loop-head initialisation")
    p.add_argument("--no-check", action="store_true",
                   help="skip the check that identity mode reproduces the dense logits on a random batch")
    p.set_defaults(func=run)


@torch.no_grad()
def identity_check(dense, model, n_tokens: int = 16) -> float:
    """Max |logits difference| between the dense model and the converted one in identity mode (expected 0)."""
    vocab = dense.config.vocab_size
    ids = torch.randint(0, vocab, (1, n_tokens), generator=torch.Generator().manual_seed(0)).to(dense.device)
    ref = dense.eval()(ids).logits
    with model.identity_mode():
        out = model(ids).logits
    return float((out.float() - ref.float()).abs().max())


def run(args) -> int:
    check_writable(args.out)
    check_replaceable(args.out, "model")  # fail before loading anything; checked again when writing
    from ..hf import convert_dense_model, export_dense, load_dense_model, save_converted

    if args.export_dense:
        if Path(args.source).is_dir():
            check_weights(args.source, finite=True)  # never write a model from NaN/Inf weights
        path = export_dense(args.source, args.out)
        log.info("wrote %s", path)
        print(json.dumps({"exported_dense": str(path), "from": args.source}))
        return 0
    options = {f: getattr(args, f) for f in FFN_FLAGS if getattr(args, f) is not None}
    if Path(args.source).is_dir():
        check_weights(args.source)  # truncated / missing weights: one message, before transformers reads them
    dense = load_dense_model(args.source, dtype=DTYPES[args.dtype])
    model = convert_dense_model(dense, options, seed=args.seed)
    report = {"from": args.source, "out": args.out, "model_type": model.config.model_type,
              "versatile_ffn": options, "layers": len(model.versatile_layers()),
              "params": sum(p.numel() for p in model.parameters()),
              "dense_params": sum(p.numel() for p in dense.parameters())}
    if not args.no_check:
        report["identity_max_abs_diff"] = identity_check(dense, model)
        if report["identity_max_abs_diff"] != 0.0:
            raise UserError(f"identity mode does not reproduce the dense logits (max |diff| = "
                            f"{report['identity_max_abs_diff']}); not saving")
    del dense
    require_finite(model.state_dict(), f"the converted model for {args.out}")
    save_converted(model, args.out, tokenizer_source=args.source)
    log.info("wrote %s", args.out)
    print(json.dumps(report))
    return 0
