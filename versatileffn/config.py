"""The one config system: typed dataclasses, YAML files and ``key=value`` overrides.

Every config class validates itself in ``__post_init__`` and raises ``ValueError`` naming the field and
the allowed range, so a wrong value fails where it is written, not deep inside a forward pass.
``from_dict`` builds nested dataclasses from plain dicts (YAML) and rejects unknown keys;
``apply_overrides`` applies ``a.b.c=value`` strings (the CLI's ``--set``).
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

FFN_KINDS = ("dense", "loop", "moe", "versatile")
VERSATILE_MODES = ("gated", "width", "depth", "ungated")
DEPTH_GRAD_MODES = ("auto", "full", "exact")  # how VersatileFFN's training forward builds the depth graph


def _require(cond: bool, name: str, allowed: str, got: Any) -> None:
    if not cond:
        raise ValueError(f"{name} must be {allowed}; got {got!r}")


@dataclass
class VersatileFFNConfig:
    """Hyper-parameters of one VersatileFFN sublayer (paper Sec. 3; defaults = the paper's main setting).

    mode selects the Table 3 ablations: ``gated`` (width + depth fused by Eq. 13), ``width`` (width path
    only), ``depth`` (depth path only), ``ungated`` (width + depth with lambda fixed at 0.5).
    """

    d_model: int
    d_hidden: int
    n_experts: int = 8
    top_k: int = 2
    d_expert: int | None = None  # None -> d_hidden // n_experts (non-overlapping virtual experts)
    max_loops: int = 4
    mode: str = "gated"
    tau_start: float = 5.0
    tau_end: float = 0.1
    tau_decay: float = 0.99984  # per optimizer step (the released config's factor)
    balance_loss_coef: float = 1e-5
    norm_eps: float = 1e-6
    init_std: float = 0.02
    check_finite: bool = False  # debug mode: reject NaN/Inf inputs (costs a host sync per call)
    # training forward: "full" = Algorithm 1 (sync-free), "exact" = backward graphs only up to each token's
    # sampled depth (same gradients, one host read), "auto" = exact on CUDA in eager mode for large calls
    depth_grad: str = "auto"

    def __post_init__(self) -> None:
        _require(isinstance(self.d_model, int) and self.d_model >= 1, "d_model", "an integer >= 1", self.d_model)
        _require(isinstance(self.d_hidden, int) and self.d_hidden >= 1, "d_hidden", "an integer >= 1", self.d_hidden)
        _require(isinstance(self.n_experts, int) and self.n_experts >= 1, "n_experts", "an integer >= 1", self.n_experts)
        _require(isinstance(self.top_k, int) and 1 <= self.top_k <= self.n_experts, "top_k",
                 f"an integer in [1, n_experts={self.n_experts}]", self.top_k)
        _require(isinstance(self.max_loops, int) and self.max_loops >= 1, "max_loops", "an integer >= 1", self.max_loops)
        _require(self.mode in VERSATILE_MODES, "mode", f"one of {VERSATILE_MODES}", self.mode)
        _require(self.depth_grad in DEPTH_GRAD_MODES, "depth_grad", f"one of {DEPTH_GRAD_MODES}", self.depth_grad)
        if self.d_expert is None:
            _require(self.d_hidden % self.n_experts == 0, "d_hidden",
                     f"divisible by n_experts={self.n_experts} when d_expert is not set", self.d_hidden)
        else:
            _require(isinstance(self.d_expert, int) and 1 <= self.d_expert <= self.d_hidden, "d_expert",
                     f"an integer in [1, d_hidden={self.d_hidden}]", self.d_expert)
            if self.n_experts > 1:
                _require(self.expert_stride >= 1, "d_expert",
                         f"small enough that the stride floor((d_hidden - d_expert)/(n_experts - 1)) >= 1 "
                         f"(d_hidden={self.d_hidden}, n_experts={self.n_experts}), so experts differ", self.d_expert)
        _require(self.tau_start > 0 and self.tau_end > 0 and self.tau_end <= self.tau_start, "tau_start/tau_end",
                 "positive with tau_end <= tau_start", (self.tau_start, self.tau_end))
        _require(0 < self.tau_decay <= 1, "tau_decay", "in (0, 1]", self.tau_decay)
        _require(self.balance_loss_coef >= 0, "balance_loss_coef", ">= 0", self.balance_loss_coef)
        _require(self.norm_eps > 0, "norm_eps", "> 0", self.norm_eps)

    @property
    def expert_dim(self) -> int:
        return self.d_expert if self.d_expert is not None else self.d_hidden // self.n_experts

    @property
    def expert_stride(self) -> int:
        """Eq. 4: S = floor((d_hidden - d_expert) / (N - 1))."""
        if self.n_experts == 1:
            return 0
        return (self.d_hidden - self.expert_dim) // (self.n_experts - 1)

    def expert_slices(self) -> list[tuple[int, int]]:
        """Eq. 5: expert k owns hidden units [k*S, k*S + d_expert)."""
        s, e = self.expert_stride, self.expert_dim
        return [(k * s, k * s + e) for k in range(self.n_experts)]

    def build(self):
        from .ffn.versatile import VersatileFFN

        return VersatileFFN(self)


@dataclass
class FFNConfig:
    """Which FFN sublayer every block uses, and that kind's hyper-parameters.

    kind: ``dense`` (SwiGLU), ``loop`` (the dense sublayer applied ``n_loops`` times), ``moe`` (dense plus
    ``n_experts`` real experts of hidden ``d_expert``, top-``top_k``), ``versatile`` (the paper's layer).
    """

    kind: str = "dense"
    n_loops: int = 2
    n_experts: int = 8
    top_k: int = 2
    d_expert: int | None = None
    max_loops: int = 4
    mode: str = "gated"
    tau_start: float = 5.0
    tau_end: float = 0.1
    tau_decay: float = 0.99984
    balance_loss_coef: float = 1e-5
    depth_grad: str = "auto"

    def __post_init__(self) -> None:
        _require(self.kind in FFN_KINDS, "ffn.kind", f"one of {FFN_KINDS}", self.kind)
        _require(isinstance(self.n_loops, int) and self.n_loops >= 1, "ffn.n_loops", "an integer >= 1", self.n_loops)
        _require(isinstance(self.n_experts, int) and self.n_experts >= 1, "ffn.n_experts", "an integer >= 1", self.n_experts)
        _require(isinstance(self.top_k, int) and 1 <= self.top_k <= self.n_experts, "ffn.top_k",
                 f"an integer in [1, n_experts={self.n_experts}]", self.top_k)
        _require(self.mode in VERSATILE_MODES, "ffn.mode", f"one of {VERSATILE_MODES}", self.mode)
        _require(self.depth_grad in DEPTH_GRAD_MODES, "ffn.depth_grad", f"one of {DEPTH_GRAD_MODES}", self.depth_grad)

    def versatile(self, d_model: int, d_hidden: int, norm_eps: float, init_std: float) -> VersatileFFNConfig:
        return VersatileFFNConfig(
            d_model=d_model, d_hidden=d_hidden, n_experts=self.n_experts, top_k=self.top_k, d_expert=self.d_expert,
            max_loops=self.max_loops, mode=self.mode, tau_start=self.tau_start, tau_end=self.tau_end,
            tau_decay=self.tau_decay, balance_loss_coef=self.balance_loss_coef, norm_eps=norm_eps, init_std=init_std,
            depth_grad=self.depth_grad)

    def build(self, d_model: int, d_hidden: int, norm_eps: float = 1e-6, init_std: float = 0.02):
        from .ffn import DenseFFN, LoopFFN, MoEFFN, VersatileFFN

        if self.kind == "dense":
            return DenseFFN(d_model, d_hidden, norm_eps=norm_eps, init_std=init_std)
        if self.kind == "loop":
            return LoopFFN(d_model, d_hidden, n_loops=self.n_loops, norm_eps=norm_eps, init_std=init_std)
        if self.kind == "moe":
            d_expert = self.d_expert if self.d_expert is not None else d_hidden // self.n_experts
            _require(d_expert >= 1, "ffn.d_expert", ">= 1", d_expert)
            return MoEFFN(d_model, d_hidden, n_experts=self.n_experts, top_k=self.top_k, d_expert=d_expert,
                          balance_loss_coef=self.balance_loss_coef, norm_eps=norm_eps, init_std=init_std)
        return VersatileFFN(self.versatile(d_model, d_hidden, norm_eps, init_std))


# Short names used by the CLI and the experiments (the paper's Table 1-4 rows).
FFN_NAMES: dict[str, dict[str, Any]] = {
    "dense": {"kind": "dense"},
    "moe": {"kind": "moe"},
    "loop2": {"kind": "loop", "n_loops": 2},
    "loop4": {"kind": "loop", "n_loops": 4},
    "loop6": {"kind": "loop", "n_loops": 6},
    "versatile": {"kind": "versatile"},
    "versatile-width": {"kind": "versatile", "mode": "width"},
    "versatile-depth": {"kind": "versatile", "mode": "depth"},
    "versatile-ungated": {"kind": "versatile", "mode": "ungated"},
}


def ffn_config_from_name(name: str) -> FFNConfig:
    if name not in FFN_NAMES:
        raise ValueError(f"unknown FFN kind {name!r}; choose one of {sorted(FFN_NAMES)}")
    return FFNConfig(**FFN_NAMES[name])


@dataclass
class ModelConfig:
    """An OLMo2-style decoder: RMSNorm, RoPE, SwiGLU, no biases, untied embeddings, pre-norm blocks."""

    vocab_size: int = 50304
    d_model: int = 1024
    n_layers: int = 15
    n_heads: int = 16
    n_kv_heads: int | None = None
    d_hidden: int = 4096
    max_seq_len: int = 4096
    rope_theta: float = 500_000.0
    norm_eps: float = 1e-6
    qk_norm: bool = False
    init_std: float = 0.02
    # recompute each block's activations in the backward pass (torch.utils.checkpoint; the RNG state is
    # restored, so VersatileFFN's Gumbel sample is the same in the recomputation)
    activation_checkpointing: bool = False
    ffn: FFNConfig = field(default_factory=FFNConfig)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_hidden", "max_seq_len"):
            v = getattr(self, name)
            _require(isinstance(v, int) and v >= 1, name, "an integer >= 1", v)
        _require(self.d_model % self.n_heads == 0, "n_heads", f"a divisor of d_model={self.d_model}", self.n_heads)
        _require((self.d_model // self.n_heads) % 2 == 0, "n_heads", "such that the head dim is even (RoPE)",
                 self.n_heads)
        kv = self.kv_heads
        _require(1 <= kv <= self.n_heads and self.n_heads % kv == 0, "n_kv_heads",
                 f"a divisor of n_heads={self.n_heads}", self.n_kv_heads)
        if isinstance(self.ffn, dict):
            self.ffn = from_dict(FFNConfig, self.ffn)
        if self.ffn.kind == "versatile":  # validate the layer config early, with its own field names
            self.ffn.versatile(self.d_model, self.d_hidden, self.norm_eps, self.init_std)

    def build(self):
        from .model import VersatileLM

        return VersatileLM(self)

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


# ----------------------------------------------------------------------------- dict / YAML / overrides


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def from_dict(cls: type[T], data: dict[str, Any], path: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) dict, rejecting unknown keys with their dotted path."""
    if not isinstance(data, dict):
        raise ValueError(f"{path or cls.__name__} must be a mapping; got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f" in {path}" if path else ""
        raise ValueError(f"unknown config key(s){where}: {unknown}; allowed: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        tp = hints[key]
        where = f"{path}.{key}" if path else key
        if _is_dataclass_type(tp) and isinstance(value, dict):
            value = from_dict(tp, value, where)
        elif not _is_dataclass_type(tp):
            value = _coerce(value, tp, where)
        kwargs[key] = value
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def _parse_scalar(text: str) -> Any:
    value = yaml.safe_load(text)
    if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string; numbers should stay numbers
        try:
            return float(value)
        except ValueError:
            return value
    return text if value is None and text not in ("null", "~", "") else value


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Convert YAML scalars to the annotated type (e.g. "3e-4" -> 3e-4 for a float field)."""
    args = typing.get_args(tp)
    if value is None:
        if type(None) in args or tp is Any:
            return None
        raise ValueError(f"{path} must not be null")
    base = [a for a in args if a is not type(None)] if args else [tp]
    if float in base and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{path} must be a number; got {value!r}") from None
    if int in base and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{path} must be an integer; got {value!r}") from None
    if int in base and isinstance(value, float) and value.is_integer() and float not in base:
        return int(value)
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings to a nested dict (values parsed as YAML scalars)."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value (e.g. model.d_model=256)")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = _parse_scalar(text)
    return data


def read_json(path: str | Path, missing: str) -> Any:
    """A JSON file's content; FileNotFoundError(missing) when absent, a ValueError naming the file when corrupt."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(missing)
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p} is not valid JSON: {exc}") from exc


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"config file {p} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {p} must hold a mapping at the top level")
    return data
