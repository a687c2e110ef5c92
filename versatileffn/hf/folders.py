"""Folder checks that do not import transformers (the trainer / evaluator call them on every --model path)."""
from __future__ import annotations

import json
from pathlib import Path


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
