"""The trainer's state on disk: full (unsharded) state dicts, verified checkpoints, the final model folder.

A mixin of ``Trainer`` (its attributes: model, optimizer, dist, device, cfg, folder, source, ...), so the training
loop in ``trainer.py`` reads in one sitting. Nothing is written from NaN/Inf weights (``TrainingDiverged`` names
the last good checkpoint instead), and under torchrun every rank learns of a refusal on rank 0.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError
from ..io import require_finite
from . import checkpoint as ckpt
from .checkpoint import TrainingDiverged
from .config import run_config_to_dict
from .distributed import agree


class TrainerStateIO:
    def _last_good(self) -> str:
        """Where to continue from: only a checkpoint this run wrote or verified (never an unchecked one)."""
        last = self.last_good_checkpoint
        if last is not None and last.is_dir() and ckpt.verify_checksums(last) is None:
            return f"the last good checkpoint is {last}"
        return "no verified checkpoint was written yet"

    def _full_state(self) -> tuple[dict, dict]:
        """Unsharded model and optimizer state dicts (collective under FSDP: every rank calls it)."""
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                             get_optimizer_state_dict)

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state = get_model_state_dict(self.model, options=opts)
        return model_state, get_optimizer_state_dict(self.model, self.optimizer, options=opts)

    def _restore(self, model_state: dict, optim_state: dict, trainer_state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                             set_optimizer_state_dict)

        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(self.model, model_state, options=opts)
        set_optimizer_state_dict(self.model, self.optimizer, optim_state, options=opts)
        self.step = int(trainer_state["step"])
        self.tokens_seen = int(trainer_state["tokens_seen"])
        self.last_loss = trainer_state.get("last_loss")
        self.last_val = trainer_state.get("last_val")
        rngs = trainer_state.get("rng_cpu", [])
        if len(rngs) == self.dist.world:
            torch.set_rng_state(ckpt.rng_from_hex(rngs[self.dist.rank]))
        else:  # a different world size: fresh, still deterministic, streams
            torch.manual_seed(self.cfg.train.seed + 1000003 * self.dist.rank + self.step)
        cuda_rngs = trainer_state.get("rng_cuda", [])
        if self.device.type == "cuda" and len(cuda_rngs) == self.dist.world:
            torch.cuda.set_rng_state(ckpt.rng_from_hex(cuda_rngs[self.dist.rank]), self.device)

    def save_checkpoint(self) -> Path | None:
        """Write a verified checkpoint of this step (TrainingDiverged, and nothing written, for NaN/Inf state)."""
        model_state, optim_state = self._full_state()
        rng_cpu = ckpt.rng_to_hex(torch.get_rng_state())
        rng_cuda = ckpt.rng_to_hex(torch.cuda.get_rng_state(self.device)) if self.device.type == "cuda" else None
        if self.dist.enabled:
            import torch.distributed as dist

            gathered = [None] * self.dist.world
            dist.all_gather_object(gathered, (rng_cpu, rng_cuda))
        else:
            gathered = [(rng_cpu, rng_cuda)]
        path, error = None, None
        if self.dist.is_main:
            trainer_state = {"step": self.step, "tokens_seen": self.tokens_seen, "world": self.dist.world,
                             "rng_cpu": [g[0] for g in gathered],
                             "rng_cuda": [g[1] for g in gathered] if rng_cuda is not None else [],
                             "config": run_config_to_dict(self.cfg), "last_loss": self.last_loss,
                             "last_val": self.last_val, "metrics_offset": self.folder.metrics_size()}
            try:
                path = ckpt.save_checkpoint(self.out_dir, self.step, model_state, optim_state,
                                            self.source.config_json(self.model), trainer_state,
                                            self.cfg.train.keep_last, self.tokenizer_file)
            except TrainingDiverged as exc:
                error = f"{exc} at step {self.step}; {self._last_good()}"
        error = agree(error, self.dist)
        if error is not None:
            raise TrainingDiverged(error)
        self.last_good_checkpoint = path or self.out_dir / ckpt.CKPT_DIR / f"step_{self.step:07d}"
        return path

    def save_final(self, name: str = "final", extra: dict | None = None) -> Path:
        """The trained model as a model folder (refused, like a checkpoint, for NaN/Inf weights)."""
        model_state, _ = self._full_state()
        path, error = self.out_dir / name, None
        if self.dist.is_main:
            try:
                require_finite(model_state, f"the final model {path}")
                self.source.save_final(self.model, model_state, path, self.tokenizer_file,
                                       {"train_step": self.step, "tokens_seen": self.tokens_seen, **(extra or {})})
            except UserError as exc:
                error = f"{exc}; {self._last_good()}"
        error = agree(error, self.dist)
        if error is not None:
            raise TrainingDiverged(error)
        return path
