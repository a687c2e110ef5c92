"""Run configuration: the model (``ModelConfig``), the data and the training recipe, one YAML file.

Defaults are the paper's recipe (FACTS.md): AdamW beta (0.9, 0.95), eps 1e-8, weight decay 0.1 (not on
norms / 1-D parameters; embeddings configurable), clip 1.0, cosine with 5% warm-up to 10% of peak, bf16
autocast on GPU and fp32 on CPU. ``load_run_config`` = YAML preset + ``--set key=value`` overrides.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import apply_overrides, from_dict, require, to_dict
from ..errors import UserError
from ..model import ModelConfig
from ..presets import load_preset

PRECISIONS = ("auto", "fp32", "bf16")
PARALLEL = ("ddp", "fsdp")


@dataclass
class DataConfig:
    path: str = ""            # a folder written by `versatileffn prepare-data`
    seq_len: int = 1024
    train_split: str = "train"
    val_split: str = "val"

    def __post_init__(self) -> None:
        require(isinstance(self.seq_len, int) and self.seq_len >= 1, "data.seq_len", "an integer >= 1", self.seq_len)


@dataclass
class TrainConfig:
    out_dir: str = "runs/train"
    seed: int = 0
    # budget: max_tokens (if set) wins over max_steps; steps = max_tokens // global_batch_tokens
    max_steps: int = 1000
    max_tokens: int | None = None
    global_batch_tokens: int = 65536    # per optimizer step, all ranks together
    micro_batch_size: int = 8           # sequences per rank per forward; grad accumulation fills the rest
    lr: float = 5e-4                    # peak (paper 354M: 5e-4, 720M: 4e-4)
    min_lr_ratio: float = 0.1           # cosine decays to 10% of peak
    warmup_frac: float = 0.05
    weight_decay: float = 0.1
    decay_embeddings: bool = False      # weight decay on the token embedding (norms / 1-D params never)
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0              # 0 disables
    precision: str = "auto"             # auto: bf16 autocast on CUDA, fp32 on CPU
    device: str = "auto"                # auto | cpu | cuda
    compile: bool = False               # torch.compile the model
    parallel: str = "ddp"               # with torchrun world > 1: ddp | fsdp (FSDP2, per block + root)
    init_from: str | None = None        # continued pre-training: a dense model folder (save_model format)
    hf_model: str | None = None         # continued pre-training of a converted HF folder (`versatileffn convert`);
                                        # replaces model: (architecture and VersatileFFN options come from it)
    log_every: int = 10
    eval_every: int = 0                 # 0: evaluate at the end only
    eval_tokens: int = 262144           # validation tokens per evaluation
    ckpt_every: int = 0                 # 0: checkpoint at the end only
    keep_last: int = 2                  # training checkpoints kept
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "versatileffn"
    progress: bool = True

    def __post_init__(self) -> None:
        # YAML strings such as "3e-4" are converted to the annotated types by config.from_dict
        for name in ("max_steps", "global_batch_tokens", "micro_batch_size", "log_every", "eval_tokens"):
            v = getattr(self, name)
            require(isinstance(v, int) and v >= 1, f"train.{name}", "an integer >= 1", v)
        require(self.max_tokens is None or (isinstance(self.max_tokens, int) and self.max_tokens >= 1),
                 "train.max_tokens", "null or an integer >= 1", self.max_tokens)
        require(self.lr > 0, "train.lr", "> 0", self.lr)
        require(0 <= self.min_lr_ratio <= 1, "train.min_lr_ratio", "in [0, 1]", self.min_lr_ratio)
        require(0 <= self.warmup_frac < 1, "train.warmup_frac", "in [0, 1)", self.warmup_frac)
        require(self.weight_decay >= 0, "train.weight_decay", ">= 0", self.weight_decay)
        require(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "train.beta1/beta2", "in [0, 1)", (self.beta1, self.beta2))
        require(self.grad_clip >= 0, "train.grad_clip", ">= 0", self.grad_clip)
        require(self.precision in PRECISIONS, "train.precision", f"one of {PRECISIONS}", self.precision)
        require(self.parallel in PARALLEL, "train.parallel", f"one of {PARALLEL}", self.parallel)
        require(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "train.device",
                 "auto, cpu, cuda or cuda:N", self.device)
        for name in ("eval_every", "ckpt_every"):
            v = getattr(self, name)
            require(isinstance(v, int) and v >= 0, f"train.{name}", "an integer >= 0", v)
        if self.hf_model and self.init_from:
            raise UserError(f"train.hf_model={self.hf_model} and train.init_from={self.init_from} exclude each other: "
                            "hf_model is already the initialisation (a converted Hugging Face folder)")
        require(isinstance(self.keep_last, int) and self.keep_last >= 1, "train.keep_last", "an integer >= 1",
                 self.keep_last)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.train.hf_model:  # the trainer checks against the HF config's max_position_embeddings
            return
        require(self.data.seq_len <= self.model.max_seq_len, "data.seq_len",
                 f"<= model.max_seq_len={self.model.max_seq_len}", self.data.seq_len)


def run_config_from_dict(data: dict) -> RunConfig:
    return from_dict(RunConfig, data)


def load_run_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """A YAML file or a preset by name (``versatileffn/presets/``), then ``key=value`` overrides."""
    data = load_preset(path) if path is not None else {}
    return run_config_from_dict(apply_overrides(data, overrides or []))


def run_config_to_dict(cfg: RunConfig) -> dict:
    return to_dict(cfg)
