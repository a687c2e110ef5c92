"""``versatileffn train``: pre-train or continue pre-training (single process, or under torchrun)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from ..config import apply_overrides
from ..errors import UserError
from ..paper import VARIANTS
from ..train import Trainer, load_run_config
from ..train.checkpoint import find_resume_checkpoint
from ..train.config import run_config_from_dict

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model (YAML preset + --set overrides; works under torchrun)",
                       description="Run folder rules: a folder that holds another run is refused without --resume "
                                   "or --overwrite; one process at a time (a lock beside the folder); Ctrl-C / "
                                   "SIGTERM write a checkpoint at the next step and stop (README 'Reliability').")
    p.add_argument("--config", help="a YAML file or a preset in versatileffn/presets/ (tiny-cpu, small-gpu, "
                                     "paper-354m, paper-720m); when not given: tiny-cpu, or with --resume the run "
                                     "folder's config.yaml (or, when that is gone, the config stored in its checkpoint)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=3e-4 --set model.ffn.kind=versatile")
    p.add_argument("--ffn", choices=sorted(VARIANTS),
                   help="FFN by the paper's short name (replaces model.ffn; --set model.ffn.* adjusts it); "
                        "when not given: the config's")
    p.add_argument("--data", help="prepared token folder (data.path); when not given: the config's")
    p.add_argument("--out", help="run folder (train.out_dir); when not given: the config's")
    p.add_argument("--init-from", help="continued pre-training from a dense model folder (train.init_from; default: "
                                        "the config's, none in the presets)")
    p.add_argument("--hf-model", help="continued pre-training of a converted Hugging Face folder (`versatileffn "
                                       "convert`; train.hf_model): it replaces the config's model section (default: "
                                       "none)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in the run folder that verifies")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a run folder that holds another run (refused otherwise)")
    p.set_defaults(func=run)


def _stored_config(out: Path) -> dict:
    """With --resume and no config.yaml: the config the newest verified checkpoint was written with."""
    try:
        path, (_, _, state), _ = find_resume_checkpoint(out)
    except UserError as exc:
        raise UserError(f"--resume: {out / 'config.yaml'} is missing and no checkpoint holds the config ({exc})") \
            from None
    if not isinstance(state.get("config"), dict):
        raise UserError(f"--resume: {out / 'config.yaml'} is missing and checkpoint {path} holds no config; pass "
                        "--config")
    log.warning("%s is missing: resuming with the config stored in %s", out / "config.yaml", path)
    return state["config"]


def build_config(args):
    overrides = list(args.overrides)
    if args.ffn and args.hf_model:
        raise UserError("--ffn cannot be combined with --hf-model: a converted model's FFN options come from its "
                        "folder (set them at `versatileffn convert`)")
    if args.ffn:  # the variant's whole FFN section first; --set model.ffn.* then adjusts it
        overrides.insert(0, f"model.ffn={json.dumps(VARIANTS[args.ffn].ffn)}")
    for flag, key in ((args.data, "data.path"), (args.out, "train.out_dir"), (args.init_from, "train.init_from"),
                      (args.hf_model, "train.hf_model")):
        if flag:
            overrides.append(f"{key}={flag}")
    config = args.config
    if config is None and args.resume:
        if not args.out:
            raise UserError("--resume needs --out RUN_FOLDER (or --config with train.out_dir)")
        saved = Path(args.out) / "config.yaml"
        if saved.is_file():
            config = saved
        elif Path(args.out).is_dir():
            return run_config_from_dict(apply_overrides(_stored_config(Path(args.out)), overrides))
    return load_run_config(config or "tiny-cpu", overrides)


def run(args) -> int:
    cfg = build_config(args)
    if args.quiet:
        cfg.train.progress = False
    trainer = Trainer(cfg, resume=args.resume, overwrite=getattr(args, "overwrite", False))
    try:
        result = trainer.train()
    finally:
        from ..train.distributed import destroy

        destroy(trainer.dist)
    if trainer.dist.is_main:
        print(json.dumps(result, indent=2))
    return 0
