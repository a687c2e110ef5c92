"""The FFN kinds a model can use: kind name -> (config class, module class, FLOP formula).

A new kind is one file beside these (a config with ``kind`` and ``build()``, the module, a FLOP formula)
and one line in ``FFN_KINDS``; the LM config, YAML files, ``--set model.ffn.*`` and the FLOP accounting
(``versatileffn.flops``) read this table.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, Union

import torch.nn as nn

from ..config import from_dict
from ..paper import VARIANTS
from .common import SHAPE_FIELDS, FFNBaseConfig
from .dense import DenseFFN, DenseFFNConfig, dense_flops
from .loop import LoopFFN, LoopFFNConfig, loop_flops
from .moe import MoEFFN, MoEFFNConfig, moe_flops
from .versatile import VersatileFFN, VersatileFFNConfig


@dataclass(frozen=True)
class FFNKind:
    config: type[FFNBaseConfig]
    module: type[nn.Module]
    # FLOPs per token of one layer from its shaped config; None when the cost depends on the data
    # (VersatileFFN: counted from the executed loops, versatileffn.flops.executed_ffn_flops)
    flops_per_token: Callable[[Any], int | None]


def _data_dependent(config: FFNBaseConfig) -> None:
    return None


FFN_KINDS: dict[str, FFNKind] = {
    "dense": FFNKind(DenseFFNConfig, DenseFFN, dense_flops),
    "loop": FFNKind(LoopFFNConfig, LoopFFN, loop_flops),
    "moe": FFNKind(MoEFFNConfig, MoEFFN, moe_flops),
    "versatile": FFNKind(VersatileFFNConfig, VersatileFFN, _data_dependent),
}

# The type of ``ModelConfig.ffn``: any registered kind's config.
AnyFFNConfig = Union[tuple(k.config for k in FFN_KINDS.values())]

# Keys of the one flat FFN config that every kind shared before each kind got its own (models saved then).
_LEGACY_KEYS = frozenset({"kind", "n_loops", "n_experts", "top_k", "d_expert", "max_loops", "mode", "tau_start",
                          "tau_end", "tau_decay", "balance_loss_coef"})


def ffn_config_from_dict(data: dict, path: str = "model.ffn") -> AnyFFNConfig:
    """The config of ``data["kind"]`` (default dense) from a YAML / JSON mapping, shape left to the model."""
    if not isinstance(data, dict):
        raise ValueError(f"{path} must be a mapping such as {{kind: versatile, n_experts: 8}}; got {data!r}")
    kind = data.get("kind", "dense")
    if kind not in FFN_KINDS:
        raise ValueError(f"{path}.kind must be one of {tuple(FFN_KINDS)}; got {kind!r}")
    cls = FFN_KINDS[kind].config
    options = dict(data)
    if _LEGACY_KEYS <= set(data) <= _LEGACY_KEYS | {"depth_grad"}:  # an older saved model: keep this kind's keys
        own = {f.name for f in fields(cls)}
        options = {k: v for k, v in options.items() if k in own}
    shape = sorted(set(options) & set(SHAPE_FIELDS))
    if shape:
        raise ValueError(f"{path} sets {shape}: the FFN's shape comes from the model (model.d_model, model.d_hidden, "
                         "model.norm_eps, model.init_std)")
    try:
        return from_dict(cls, options, path)
    except ValueError as exc:
        raise ValueError(f"{exc} (FFN kind {kind!r})") from None


def ffn_config_from_name(name: str) -> AnyFFNConfig:
    """The FFN config of one of the paper's variants by its short name (``versatile-width``, ``loop4``, ...)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown FFN kind {name!r}; choose one of {sorted(VARIANTS)}")
    return ffn_config_from_dict(VARIANTS[name].ffn)
