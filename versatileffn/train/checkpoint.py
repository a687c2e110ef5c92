"""Training checkpoints (exact resume) and continued pre-training from a dense model.

A checkpoint is a folder ``<out_dir>/checkpoints/step_<N>/``:
    model.safetensors   full (unsharded) weights                         - loadable by ``io.load_model``
    config.json         the model config (``io.save_model``'s format; a converted HF model: its own config)
    optimizer.pt        AdamW state (tensors and plain values only: read with ``weights_only=True``)
    trainer_state.json  step, tokens seen, per-rank RNG states (hex), the run's resolved config
It is written into a temporary folder and renamed into place (``io.atomic_replace_dir``), so a crash while
saving leaves the previous checkpoint intact; only the newest ``keep_last`` are kept.
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..ffn.common import FRESH_AFTER_CONVERSION
from ..hf.folders import is_converted_hf_dir
from ..io import atomic_replace_dir, load_state, read_model_config

CKPT_DIR = "checkpoints"
_STEP_RE = re.compile(r"^step_(\d+)$")

# Keys a dense checkpoint cannot have and that continued pre-training initialises fresh (by pattern).
NEW_KEY_PATTERNS = (rf"^blocks\.\d+\.ffn\.{FRESH_AFTER_CONVERSION}$",)


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    root = Path(out_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_RE.match(p.name))]
    return sorted(found)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(out_dir)
    return ckpts[-1][1] if ckpts else None


def rng_to_hex(state: torch.Tensor) -> str:
    return bytes(state.tolist()).hex()


def rng_from_hex(text: str) -> torch.Tensor:
    return torch.tensor(list(bytes.fromhex(text)), dtype=torch.uint8)


def save_checkpoint(out_dir: str | Path, step: int, model_state: dict, optim_state: dict, config_json: str,
                    trainer_state: dict, keep_last: int, tokenizer_file: Path | None = None) -> Path:
    """Write step_<step> atomically (call on rank 0 with full state dicts), then prune to keep_last.
    config_json: the model's config.json (``models.NativeModel`` / ``ConvertedHFModel.config_json``)."""
    root = Path(out_dir) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(config_json)
        torch.save(optim_state, tmp / "optimizer.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2))
        if tokenizer_file is not None and Path(tokenizer_file).is_file():
            shutil.copyfile(tokenizer_file, tmp / "tokenizer.json")
        atomic_replace_dir(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    for _, old in list_checkpoints(out_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: str | Path) -> tuple[dict, dict, dict]:
    """(model_state, optim_state, trainer_state) of a checkpoint folder; clear errors when files are missing."""
    path = Path(path)
    for name in ("model.safetensors", "optimizer.pt", "trainer_state.json"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"checkpoint {path} is incomplete: {name} missing")
    model_state = load_state(path / "model.safetensors")
    optim_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    trainer_state = json.loads((path / "trainer_state.json").read_text())
    return model_state, optim_state, trainer_state


def check_state_matches(model: torch.nn.Module, state: dict, source: str,
                        allowed_missing: tuple[str, ...] = ()) -> list[str]:
    """Compare a state dict with the model: returns the allowed-missing keys; otherwise ValueError listing
    missing / unexpected / wrongly shaped keys (a checkpoint from another architecture)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    allowed = [k for k in missing if any(re.match(p, k) for p in allowed_missing)]
    bad_missing = [k for k in missing if k not in allowed]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in sorted(set(state) & set(expected)) if tuple(state[k].shape) != tuple(expected[k].shape)]
    if bad_missing or unexpected or shapes:
        parts = []
        if bad_missing:
            parts.append(f"missing keys {bad_missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        if shapes:
            parts.append(f"shape mismatches {shapes}")
        raise ValueError(f"{source} does not fit this model ({'; '.join(parts)}): a checkpoint from another "
                         "architecture?")
    return allowed


def init_from_dense(model: torch.nn.Module, path: str | Path) -> list[str]:
    """Continued pre-training: copy a dense model folder's weights into ``model`` (any FFN kind).

    The dense FFN's gate_proj / up_proj / down_proj / norm land on the same names in every FFN kind (k-Loop
    reuses them, MoE keeps them as its shared dense part, VersatileFFN slices them into virtual experts).
    Only the new router / loop head / MoE experts may be missing; returns those (freshly initialised).
    """
    path = Path(path)
    if is_converted_hf_dir(path):
        raise ValueError(f"train.init_from={path} is a converted Hugging Face model: continue pre-training it with "
                         f"train.hf_model={path} (--hf-model) instead")
    read_model_config(path)  # a clear error if this is not a model folder
    state = load_state(path / "model.safetensors")
    fresh = check_state_matches(model, state, f"dense checkpoint {path}", NEW_KEY_PATTERNS)
    model.load_state_dict(state, strict=False)
    return fresh
