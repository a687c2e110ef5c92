"""The one model loader: a versatileffn model folder or a Hugging Face causal-LM folder, by its config.json."""
from __future__ import annotations

from pathlib import Path

import torch

from .config import read_json
from .errors import UserError
from .io import FORMAT, check_weights, load_model

NATIVE, HF = "versatileffn", "hf"


def load_any_model(path: str | Path, device: str | torch.device = "cpu",
                   dtype: torch.dtype | None = None) -> tuple[torch.nn.Module, str]:
    """(model in eval mode on ``device``, kind): ``NATIVE`` for a folder written by ``io.save_model``, ``HF`` for
    any Hugging Face causal-LM folder, converted VersatileFFN ones included (``versatileffn.hf`` registers them).

    dtype: the weights' dtype (None: ours are fp32, a Hugging Face folder loads as transformers chooses).
    """
    path = Path(path)
    cfg_file = path / "config.json"
    meta = read_json(cfg_file, f"{path} is not a model folder (no config.json)")
    if not isinstance(meta, dict):
        raise UserError(f"{cfg_file} does not hold a JSON object")
    if meta.get("format") == FORMAT:
        model, _ = load_model(path, device)
        return (model if dtype is None else model.to(dtype)), NATIVE
    if "model_type" not in meta:
        raise UserError(f"{cfg_file} is neither a versatileffn config (format={FORMAT!r}) nor a Hugging Face config "
                        "(model_type)")
    try:
        from transformers import AutoModelForCausalLM

        from .hf import modeling  # noqa: F401  (registers the converted VersatileFFN model types)
    except ImportError as exc:  # pragma: no cover - transformers is an extra
        raise UserError("loading a Hugging Face model needs transformers: pip install 'versatileffn[hf]'") from exc
    check_weights(path)  # no weights / a truncated safetensors file: one message, before transformers reads it
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path))
    except (OSError, ValueError) as exc:  # transformers' own words for a folder it cannot load
        raise UserError(f"could not load the Hugging Face model {path}: {' '.join(str(exc).split())[:400]}") from None
    return (model if dtype is None else model.to(dtype)).to(device).eval(), HF
