"""The FFN family, side by side: every kind is a whole pre-norm FFN sublayer x -> x + ... of shape [B, T, d],
with its config (``kind``, options, ``build()``) in its own module and one line in ``registry.FFN_KINDS``."""
from .common import FFNBaseConfig, RMSNorm, switch_balance_loss
from .dense import DenseFFN, DenseFFNConfig
from .loop import LoopFFN, LoopFFNConfig
from .moe import MoEFFN, MoEFFNConfig
from .registry import FFN_KINDS, AnyFFNConfig, ffn_config_from_dict, ffn_config_from_name
from .stats import FFNStats
from .versatile import VersatileFFN, VersatileFFNConfig

__all__ = ["DenseFFN", "LoopFFN", "MoEFFN", "VersatileFFN", "FFNStats", "RMSNorm", "switch_balance_loss",
           "FFNBaseConfig", "DenseFFNConfig", "LoopFFNConfig", "MoEFFNConfig", "VersatileFFNConfig", "FFN_KINDS",
           "AnyFFNConfig", "ffn_config_from_dict", "ffn_config_from_name"]
