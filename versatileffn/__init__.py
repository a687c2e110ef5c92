"""versatileffn: VersatileFFN (Nie et al., arXiv 2512.14531) — a layer library, an LM, and the tools around them."""
from .config import (FFNConfig, ModelConfig, VersatileFFNConfig, apply_overrides, ffn_config_from_name, from_dict,
                     load_yaml, to_dict)
from .ffn import DenseFFN, FFNStats, LoopFFN, MoEFFN, RMSNorm, VersatileFFN, switch_balance_loss
from .flops import base_ffn_flops_per_token, paper_formula_flops, static_ffn_flops_per_token
from .model import MODEL_PRESETS, KVCache, LMOutput, VersatileLM, build_model, model_config

__version__ = "0.1.0"

# Converted Hugging Face models load with plain AutoModelForCausalLM.from_pretrained(DIR) after
# `import versatileffn`; registration waits for transformers' own import (never imports it here).
from .hf import register_with_transformers as _register_with_transformers  # noqa: E402

_register_with_transformers()

__all__ = [
    "VersatileFFN", "VersatileFFNConfig", "DenseFFN", "LoopFFN", "MoEFFN", "FFNStats", "RMSNorm",
    "switch_balance_loss", "FFNConfig", "ModelConfig", "VersatileLM", "LMOutput", "KVCache", "MODEL_PRESETS",
    "model_config", "build_model", "ffn_config_from_name", "from_dict", "to_dict", "apply_overrides", "load_yaml",
    "base_ffn_flops_per_token", "paper_formula_flops", "static_ffn_flops_per_token", "__version__",
]
