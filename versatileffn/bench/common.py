"""What every benchmark section shares: the shapes, the run's state (device, dtype, time budget), the layers and
LMs under test with one set of weights, and the loop mixes that pin inference loop counts."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..ffn import DenseFFN, LoopFFN, MoEFFN, VersatileFFN, VersatileFFNConfig, ffn_config_from_name
from ..model import model_config

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


QUICK = Shape(d_model=64, d_hidden=256, tokens=(256, 128), preset="micro", seq=32, micro_batch=2,
              decode_batches=(1, 4), decode_prompt=8)


@dataclass
class Bench:
    shape: Shape
    device: torch.device
    dtype: torch.dtype
    budget_s: float
    compile: bool = True
    out: dict = field(default_factory=dict)
    t0: float = field(default_factory=time.time)

    def left(self) -> float:
        return self.budget_s - (time.time() - self.t0)


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


def forced_loops(layer: VersatileFFN, loops_n: torch.Tensor) -> None:
    """Pin the inference loop counts (a given loop mix) for both our eval path and the reference."""
    layer._predicted_loops = lambda h_nd: loops_n  # instance attribute shadows the method


def mix_loops(probs: list[float], n: int, device) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return (torch.multinomial(torch.tensor(probs, dtype=torch.float), n, replacement=True, generator=g) + 1).to(device)


def build_lm(b: Bench, ffn: str, **overrides):
    s = b.shape
    torch.manual_seed(0)
    return model_config(s.preset, ffn_config_from_name(ffn), **overrides).build().to(b.device)
