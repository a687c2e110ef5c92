"""versatileffn: VersatileFFN (Nie et al., arXiv 2512.14531) — a layer library, an LM, and the tools around them."""
from .config import apply_overrides, from_dict, load_yaml, to_dict
from .ffn import (FFN_KINDS, DenseFFN, DenseFFNConfig, FFNStats, LoopFFN, LoopFFNConfig, MoEFFN, MoEFFNConfig, RMSNorm,
                  VersatileFFN, VersatileFFNConfig, ffn_config_from_name, switch_balance_loss)
from .ffn.temperature import attach_temperature_schedule, set_temperature_step
from .generation import Decoder, Generation, GenerationConfig, generate
from .flops import base_ffn_flops_per_token, paper_formula_flops, static_ffn_flops_per_token
from .model import KVCache, LMOutput, ModelConfig, VersatileLM, build_model, model_config
from .presets import preset_names

from .version import __version__

# Converted Hugging Face models load with plain AutoModelForCausalLM.from_pretrained(DIR) after
# `import versatileffn`; registration waits for transformers' own import (never imports it here).
from .hf import register_with_transformers as _register_with_transformers  # noqa: E402

_register_with_transformers()

__all__ = [
    "VersatileFFN", "VersatileFFNConfig", "DenseFFN", "DenseFFNConfig", "LoopFFN", "LoopFFNConfig", "MoEFFN",
    "MoEFFNConfig", "FFN_KINDS", "FFNStats", "RMSNorm", "switch_balance_loss", "ModelConfig", "VersatileLM",
    "LMOutput", "KVCache", "preset_names", "set_temperature_step", "attach_temperature_schedule",
    "model_config", "build_model", "ffn_config_from_name", "from_dict", "to_dict", "apply_overrides", "load_yaml",
    "base_ffn_flops_per_token", "paper_formula_flops", "static_ffn_flops_per_token", "__version__",
    "GenerationConfig", "Decoder", "Generation", "generate",
]
