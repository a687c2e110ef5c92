"""Folder checks that do not import transformers (the trainer / evaluator call them on every --model path)."""
from __future__ import annotations

import json
from pathlib import Path

from ..config import read_json


def is_converted_hf_dir(path) -> bool:
    """True for a folder written by ``save_converted`` / ``versatileffn convert`` (model_type ``versatileffn_*``)."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        model_type = json.loads(cfg.read_text()).get("model_type", "")
    except (json.JSONDecodeError, AttributeError):
        return False
    return isinstance(model_type, str) and model_type.startswith("versatileffn_")


def read_converted_hf_config(path) -> dict:
    """The config.json of a converted folder, for ``train.hf_model``; a clear error for any other folder
    (a dense Hugging Face model needs ``versatileffn convert`` first)."""
    path = Path(path)
    cfg = read_json(path / "config.json", f"train.hf_model={path}: no config.json there (expected a folder "
                                          "written by `versatileffn convert`)")
    model_type = cfg.get("model_type") if isinstance(cfg, dict) else None
    if not isinstance(model_type, str):
        raise ValueError(f"train.hf_model={path} is not a Hugging Face model folder (no model_type in config.json); "
                         "a versatileffn model folder (save_model) continues with train.init_from / --init-from")
    if not model_type.startswith("versatileffn_"):
        raise ValueError(f"train.hf_model={path} is a dense Hugging Face model (model_type {model_type!r}); convert "
                         f"it first: `versatileffn convert --from {path} --out {path}-versatile`, then train "
                         f"with --hf-model {path}-versatile")
    for key in ("vocab_size", "max_position_embeddings"):
        if not isinstance(cfg.get(key), int):
            raise ValueError(f"{path / 'config.json'} has no integer {key}")
    return cfg
