"""The FFN family, side by side: every kind is a whole pre-norm FFN sublayer x -> x + ... of shape [B, T, d]."""
from .common import RMSNorm, switch_balance_loss
from .dense import DenseFFN
from .loop import LoopFFN
from .moe import MoEFFN
from .stats import FFNStats
from .versatile import VersatileFFN

__all__ = ["DenseFFN", "LoopFFN", "MoEFFN", "VersatileFFN", "FFNStats", "RMSNorm", "switch_balance_loss"]
