"""Save / load a model as a folder: ``model.safetensors`` + ``config.json`` (+ ``tokenizer.json``).

Weights are read with safetensors only (no pickle). Writes go to a temporary sibling folder that is swapped into
place (``folders.atomic_folder``), so an interrupted save never leaves a half-written model where a good one was,
and a folder versatileffn did not write is never replaced. Weights holding NaN/Inf are never saved.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import from_dict, read_json, to_dict
from .errors import MissingInputError, UserError
from .ffn.temperature import without_saved_tau
from .folders import atomic_folder
from .model import ModelConfig, VersatileLM

FORMAT = "versatileffn"


def state_dict_for_save(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}


def nonfinite_keys(state: dict) -> list[str]:
    """Names of the floating-point tensors in a (nested) state dict that hold NaN or Inf."""
    bad = []

    def visit(prefix: str, value) -> None:
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad.append(prefix)
        elif isinstance(value, dict):
            for k, v in value.items():
                visit(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                visit(f"{prefix}.{i}", v)

    visit("", state)
    return bad


def require_finite(state: dict, what: str) -> None:
    """UserError naming the first offending tensors when ``state`` holds NaN/Inf (nothing is written from it)."""
    bad = nonfinite_keys(state)
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise UserError(f"{what} holds NaN/Inf values ({shown}); refusing to write it")


def check_weights(folder: str | Path, finite: bool = False) -> list[Path]:
    """A model folder's ``*.safetensors`` files, checked: each one opens (safetensors checks that the file covers its
    header, so a truncated file fails here) and, with ``finite``, holds no NaN/Inf (read tensor by tensor).
    MissingInputError when the folder holds no weights at all (a ``*.bin`` pickle is left to transformers)."""
    from safetensors import safe_open

    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        if any(folder.glob("*.bin")):
            return []
        raise MissingInputError(f"{folder} holds no model weights (*.safetensors)")
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                keys = list(fh.keys()) if finite else []
                for key in keys:
                    t = fh.get_tensor(key)
                    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                        raise UserError(f"{f} holds NaN/Inf values ({key})")
        except UserError:
            raise
        except Exception as exc:  # safetensors' own error type for truncated / corrupt files
            raise UserError(f"could not read weights {f} (truncated or corrupt): {' '.join(str(exc).split())}"
                            ) from None
    return files


def save_model(model: VersatileLM, path: str | Path, tokenizer=None, extra: dict | None = None) -> Path:
    """Write ``path`` atomically (an existing folder is replaced only when it is a versatileffn model folder)."""
    path = Path(path)
    state = state_dict_for_save(model)
    require_finite(state, f"the model for {path}")
    with atomic_folder(path, "model") as tmp:
        save_file(state, str(tmp / "model.safetensors"))
        meta = {"format": FORMAT, "model": to_dict(model.config), **(extra or {})}
        (tmp / "config.json").write_text(json.dumps(meta, indent=2))
        if tokenizer is not None:
            tokenizer.save(tmp / "tokenizer.json")
    return path


def read_model_config(path: str | Path) -> tuple[ModelConfig, dict]:
    path = Path(path)
    cfg_file = path / "config.json"
    meta = read_json(cfg_file, f"{path} is not a versatileffn model folder (no config.json)")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise UserError(f"{cfg_file} is not a versatileffn config (format={found!r})")
    if not isinstance(meta.get("model"), dict):
        raise UserError(f"{cfg_file} has no 'model' section")
    return from_dict(ModelConfig, meta["model"], "model"), meta


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    f = Path(path)
    if not f.is_file():
        raise MissingInputError(f"weights file not found: {f}")
    try:
        return without_saved_tau(load_file(str(f)))  # older weights hold VersatileFFN's tau: a schedule now
    except Exception as exc:  # safetensors raises its own error types on truncated/corrupt files
        raise UserError(f"could not read weights {f} (truncated, corrupt or not safetensors): "
                        f"{' '.join(str(exc).split())}") from exc


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[VersatileLM, dict]:
    """Load a folder written by ``save_model``; returns (model in eval mode, config.json metadata)."""
    config, meta = read_model_config(path)
    model = VersatileLM(config)
    state = load_state(Path(path) / "model.safetensors")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that do not fit the config
        raise UserError(f"weights in {path} do not match its config: {' '.join(str(exc).split())[:500]}") from None
    if missing or unexpected:
        raise UserError(f"weights in {path} do not match its config: missing {sorted(missing)}, "
                        f"unexpected {sorted(unexpected)}")
    return model.to(device).eval(), meta
