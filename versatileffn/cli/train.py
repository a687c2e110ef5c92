"""``versatileffn train``: pre-train or continue pre-training (single process, or under torchrun)."""
from __future__ import annotations

import json
from pathlib import Path

from ..paper import VARIANTS
from ..train import Trainer, load_run_config


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model (YAML preset + --set overrides; works under torchrun)")
    p.add_argument("--config", help="a YAML file or a preset in versatileffn/presets/ (tiny-cpu, small-gpu, paper-354m, "
                                     "paper-720m); default tiny-cpu, or with --resume the run folder's config.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=3e-4 --set model.ffn.kind=versatile")
    p.add_argument("--ffn", choices=sorted(VARIANTS),
                   help="FFN by the paper's short name (replaces model.ffn; --set model.ffn.* adjusts it)")
    p.add_argument("--data", help="prepared token folder (data.path)")
    p.add_argument("--out", help="run folder (train.out_dir)")
    p.add_argument("--init-from", help="continued pre-training from a dense model folder (train.init_from)")
    p.add_argument("--hf-model", help="continued pre-training of a converted Hugging Face folder (`versatileffn "
                                       "convert`; train.hf_model): it replaces the config's model section")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the run folder")
    p.set_defaults(func=run)


def build_config(args):
    overrides = list(args.overrides)
    if args.ffn and args.hf_model:
        raise ValueError("--ffn cannot be combined with --hf-model: a converted model's FFN options come from its "
                         "folder (set them at `versatileffn convert`)")
    if args.ffn:  # the variant's whole FFN section first; --set model.ffn.* then adjusts it
        overrides.insert(0, f"model.ffn={json.dumps(VARIANTS[args.ffn].ffn)}")
    for flag, key in ((args.data, "data.path"), (args.out, "train.out_dir"), (args.init_from, "train.init_from"),
                      (args.hf_model, "train.hf_model")):
        if flag:
            overrides.append(f"{key}={flag}")
    config = args.config
    if config is None:
        saved = Path(args.out) / "config.yaml" if args.out else None
        config = saved if (args.resume and saved is not None and saved.is_file()) else "tiny-cpu"
    return load_run_config(config, overrides)


def run(args) -> int:
    cfg = build_config(args)
    trainer = Trainer(cfg, resume=args.resume)
    try:
        result = trainer.train()
    finally:
        from ..train.distributed import destroy

        destroy(trainer.dist)
    if trainer.dist.is_main:
        print(json.dumps({k: v for k, v in result.items()}, indent=2))
    return 0
