"""Save / load a model as a folder: ``model.safetensors`` + ``config.json`` (+ ``tokenizer.json``).

Weights are read with safetensors only (no pickle). Writes go to a temporary folder that is renamed into
place, so an interrupted save never leaves a half-written model where a good one was.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import from_dict, read_json, to_dict
from .ffn.temperature import without_saved_tau
from .model import ModelConfig, VersatileLM

FORMAT = "versatileffn"


def atomic_replace_dir(tmp: Path, final: Path) -> None:
    """Swap a fully written folder into place; the old one survives until the new one is complete."""
    old = None
    if final.exists():
        old = final.with_name(final.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def state_dict_for_save(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}


def save_model(model: VersatileLM, path: str | Path, tokenizer=None, extra: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_file(state_dict_for_save(model), str(tmp / "model.safetensors"))
        meta = {"format": FORMAT, "model": to_dict(model.config), **(extra or {})}
        (tmp / "config.json").write_text(json.dumps(meta, indent=2))
        if tokenizer is not None:
            tokenizer.save(tmp / "tokenizer.json")
        atomic_replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_model_config(path: str | Path) -> tuple[ModelConfig, dict]:
    path = Path(path)
    cfg_file = path / "config.json"
    meta = read_json(cfg_file, f"{path} is not a versatileffn model folder (no config.json)")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{cfg_file} is not a versatileffn config (format={meta.get('format')!r})")
    return from_dict(ModelConfig, meta["model"]), meta


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    f = Path(path)
    if not f.is_file():
        raise FileNotFoundError(f"weights file not found: {f}")
    try:
        return without_saved_tau(load_file(str(f)))  # older weights hold VersatileFFN's tau: a schedule now
    except Exception as exc:  # safetensors raises its own error types on truncated/corrupt files
        raise ValueError(f"could not read weights {f} (corrupt or not safetensors): {exc}") from exc


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[VersatileLM, dict]:
    """Load a folder written by ``save_model``; returns (model in eval mode, config.json metadata)."""
    config, meta = read_model_config(path)
    model = VersatileLM(config)
    state = load_state(Path(path) / "model.safetensors")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights in {path} do not match its config: missing {sorted(missing)}, "
                         f"unexpected {sorted(unexpected)}")
    return model.to(device).eval(), meta
