"""Training checkpoints (exact, verified resume) and continued pre-training from a dense model.

A checkpoint is a folder ``<out_dir>/checkpoints/step_<N>/``:
    model.safetensors   full (unsharded) weights                         - loadable by ``io.load_model``
    config.json         the model config (``io.save_model``'s format; a converted HF model: its own config)
    optimizer.pt        AdamW state (tensors and plain values only: read with ``weights_only=True``)
    trainer_state.json  step, tokens seen, per-rank RNG states (hex), the run's resolved config, the last loss,
                        the size of metrics.jsonl when it was written
    checksums.json      SHA-256 and size of every file above, written last
It is written into a temporary sibling and swapped into place (``folders.atomic_folder``), so a crash while saving
leaves the previous checkpoint intact; only the newest ``keep_last`` are kept. Weights or optimizer state holding
NaN/Inf are never written. Resume (``find_resume_checkpoint``) takes the newest checkpoint whose checksums match,
whose files load and whose weights are finite, and names every newer one it had to skip.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..config import read_json
from ..errors import MissingInputError, UserError
from ..ffn.common import FRESH_AFTER_CONVERSION
from ..folders import atomic_folder, make_dirs
from ..hf.folders import is_converted_hf_dir
from ..io import load_state, nonfinite_keys, read_model_config, require_finite

log = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"
CHECKSUMS = "checksums.json"
_STEP_RE = re.compile(r"^step_(\d+)$")
REQUIRED = ("model.safetensors", "optimizer.pt", "trainer_state.json")

# Keys a dense checkpoint cannot have and that continued pre-training initialises fresh (by pattern).
NEW_KEY_PATTERNS = (rf"^blocks\.\d+\.ffn\.{FRESH_AFTER_CONVERSION}$",)


class TrainingDiverged(UserError):
    """The loss, the validation loss or the weights became NaN/Inf; nothing is written from them, and the message
    names the last good (verified, finite) checkpoint."""


class CorruptCheckpoint(UserError):
    """A checkpoint whose files are missing, do not match their checksums, do not load or hold NaN/Inf."""


def list_checkpoints(out_dir: str | Path) -> list[tuple[int, Path]]:
    root = Path(out_dir) / CKPT_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_RE.match(p.name))]
    return sorted(found)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest checkpoint folder by step, verified or not (``find_resume_checkpoint`` verifies)."""
    ckpts = list_checkpoints(out_dir)
    return ckpts[-1][1] if ckpts else None


def rng_to_hex(state: torch.Tensor) -> str:
    return bytes(state.tolist()).hex()


def rng_from_hex(text: str) -> torch.Tensor:
    return torch.tensor(list(bytes.fromhex(text)), dtype=torch.uint8)


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(out_dir: str | Path, step: int, model_state: dict, optim_state: dict, config_json: str,
                    trainer_state: dict, keep_last: int, tokenizer_file: Path | None = None) -> Path:
    """Write step_<step> atomically with its checksums (call on rank 0 with full state dicts), then prune to
    keep_last. config_json: the model's config.json (``models.NativeModel`` / ``ConvertedHFModel.config_json``).
    Raises TrainingDiverged (and writes nothing) when the weights or the optimizer state hold NaN/Inf."""
    final = make_dirs(Path(out_dir) / CKPT_DIR) / f"step_{step:07d}"
    try:
        require_finite(model_state, f"checkpoint {final.name}: the model")
        require_finite(optim_state, f"checkpoint {final.name}: the optimizer state")
    except UserError as exc:
        raise TrainingDiverged(str(exc)) from None
    with atomic_folder(final, "checkpoint", lock=False) as tmp:  # the run folder's lock covers it
        save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, str(tmp / "model.safetensors"))
        (tmp / "config.json").write_text(config_json)
        torch.save(optim_state, tmp / "optimizer.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2))
        if tokenizer_file is not None and Path(tokenizer_file).is_file():
            shutil.copyfile(tokenizer_file, tmp / "tokenizer.json")
        sums = {p.name: {"sha256": file_sha256(p), "bytes": p.stat().st_size}
                for p in sorted(tmp.iterdir()) if p.is_file() and not p.name.startswith(".")}
        (tmp / CHECKSUMS).write_text(json.dumps({"files": sums}, indent=1))
    prune_checkpoints(out_dir, keep_last, step)
    return final


def prune_checkpoints(out_dir: str | Path, keep_last: int, newest_step: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints up to ``newest_step`` (the one just written)."""
    older = [p for s, p in list_checkpoints(out_dir) if s <= newest_step]
    for old in older[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- reading and verifying


def verify_checksums(path: Path) -> str | None:
    """None when every file matches checksums.json; else what is wrong. A checkpoint written before checksums
    existed has none: it is then checked by loading it (``load_checkpoint``)."""
    missing = [n for n in REQUIRED if not (path / n).is_file()]
    if missing:
        return f"incomplete: {', '.join(missing)} missing"
    if not (path / CHECKSUMS).is_file():
        return None
    try:
        files = json.loads((path / CHECKSUMS).read_text())["files"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return f"{CHECKSUMS} is corrupt"
    for name, want in files.items():
        f = path / name
        if not f.is_file():
            return f"incomplete: {name} missing"
        if f.stat().st_size != want.get("bytes"):
            return f"{name} holds {f.stat().st_size} bytes, {want.get('bytes')} were written (truncated?)"
        if file_sha256(f) != want.get("sha256"):
            return f"{name} does not match its checksum: its bytes changed after it was written"
    return None


def _trainer_state(path: Path) -> dict:
    state = read_json(path, f"{path} missing")
    if not isinstance(state, dict):
        raise CorruptCheckpoint(f"{path} does not hold a JSON object")
    for key in ("step", "tokens_seen"):
        if not isinstance(state.get(key), int) or isinstance(state.get(key), bool) or state[key] < 0:
            raise CorruptCheckpoint(f"{path} is malformed: {key!r} must be an integer >= 0; got {state.get(key)!r}")
    for key in ("rng_cpu", "rng_cuda"):
        if not isinstance(state.get(key, []), list):
            raise CorruptCheckpoint(f"{path} is malformed: {key!r} must be a list")
    return state


def load_checkpoint(path: str | Path) -> tuple[dict, dict, dict]:
    """(model_state, optim_state, trainer_state) of a checkpoint folder; CorruptCheckpoint (one clear message)
    when a file is missing, truncated, corrupt, malformed or holds NaN/Inf. Checksums: ``verify_checksums``."""
    path = Path(path)
    if not path.is_dir():
        raise MissingInputError(f"checkpoint not found: {path}")
    for name in REQUIRED:
        if not (path / name).is_file():
            raise CorruptCheckpoint(f"checkpoint {path} is incomplete: {name} missing")
    try:
        trainer_state = _trainer_state(path / "trainer_state.json")
        model_state = load_state(path / "model.safetensors")
    except UserError as exc:
        raise CorruptCheckpoint(str(exc)) from None
    try:
        optim_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, garbled pickle, or a non-tensor object (weights_only refuses it)
        raise CorruptCheckpoint(f"could not read {path / 'optimizer.pt'} (truncated or corrupt): "
                                f"{' '.join(str(exc).split())[:300]}") from None
    if not isinstance(optim_state, dict):
        raise CorruptCheckpoint(f"{path / 'optimizer.pt'} does not hold an optimizer state")
    bad = nonfinite_keys(model_state) or nonfinite_keys(optim_state)
    if bad:
        raise CorruptCheckpoint(f"checkpoint {path} holds NaN/Inf values ({', '.join(bad[:3])})")
    return model_state, optim_state, trainer_state


def find_resume_checkpoint(out_dir: str | Path) -> tuple[Path, tuple[dict, dict, dict], list[tuple[Path, str]]]:
    """The newest checkpoint that verifies: (path, its loaded state, [(newer checkpoint, why it was skipped)]).
    MissingInputError when there is none; UserError naming each one and its fault when none verifies."""
    ckpts = list_checkpoints(out_dir)
    if not ckpts:
        raise MissingInputError(f"--resume: no checkpoint under {Path(out_dir) / CKPT_DIR}")
    skipped: list[tuple[Path, str]] = []
    for _, path in reversed(ckpts):
        reason = verify_checksums(path)
        if reason is None:
            try:
                state = load_checkpoint(path)
                if not (path / CHECKSUMS).is_file():
                    log.warning("checkpoint %s has no checksums (written by an older version): checked that it "
                                "loads and holds finite values", path)
                return path, state, skipped
            except CorruptCheckpoint as exc:
                reason = str(exc)
        skipped.append((path, reason))
    listing = "; ".join(f"{p.name}: {r}" for p, r in skipped)
    raise UserError(f"--resume: no checkpoint under {Path(out_dir) / CKPT_DIR} verifies ({listing})")


def set_aside(path: Path) -> Path:
    """Rename a corrupt checkpoint to ``step_N.corrupt`` (kept for inspection, never resumed or pruned)."""
    target = path.with_name(path.name + ".corrupt")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.corrupt{n}")
    os.rename(path, target)
    return target


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
        raise UserError(f"{source} does not fit this model ({'; '.join(parts)}): a checkpoint from another "
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
        raise UserError(f"train.init_from={path} is a converted Hugging Face model: continue pre-training it with "
                        f"train.hf_model={path} (--hf-model) instead")
    read_model_config(path)  # a clear error if this is not a model folder
    state = load_state(path / "model.safetensors")
    fresh = check_state_matches(model, state, f"dense checkpoint {path}", NEW_KEY_PATTERNS)
    model.load_state_dict(state, strict=False)
    return fresh
