"""Metrics sinks: a JSONL file (always), TensorBoard (on by default when installed), W&B (off by default)."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import UserError


class MetricsLogger:
    def __init__(self, out_dir: str | Path, tensorboard: bool = True, wandb: bool = False,
                 wandb_project: str = "versatileffn", config: dict | None = None, enabled: bool = True):
        self.enabled = enabled
        self.fh = self.tb = self.wandb = None
        if not enabled:
            return
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.fh = open(out / "metrics.jsonl", "a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is an optional extra
                SummaryWriter = None
            if SummaryWriter is not None:
                self.tb = SummaryWriter(log_dir=str(out / "tensorboard"))
        if wandb:
            try:
                import wandb as wandb_mod
            except ImportError as exc:
                raise UserError("train.wandb=true needs the wandb package (pip install wandb)") from exc
            self.wandb = wandb_mod.init(project=wandb_project, dir=str(out), config=config or {})

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()
        step = record.get("step", 0)
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self.tb is not None:
            prefix = record.get("kind", "train")
            for k, v in scalars.items():
                self.tb.add_scalar(f"{prefix}/{k}", v, step)
        if self.wandb is not None:
            self.wandb.log({f"{record.get('kind', 'train')}/{k}": v for k, v in scalars.items()}, step=step)

    def close(self) -> None:
        """Close every sink (again: nothing); logging after it is an error."""
        if self.fh is not None:
            self.fh.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
        self.fh = self.tb = self.wandb = None
