"""Training: run config, AdamW + cosine recipe, checkpoints / continued pre-training, torchrun DDP / FSDP2."""
from .checkpoint import init_from_dense, latest_checkpoint, load_checkpoint
from .config import DataConfig, RunConfig, TrainConfig, load_run_config
from .trainer import Trainer, TrainingDiverged

__all__ = ["DataConfig", "RunConfig", "TrainConfig", "Trainer", "TrainingDiverged", "init_from_dense",
           "latest_checkpoint", "load_checkpoint", "load_run_config"]
