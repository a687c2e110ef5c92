"""``versatileffn info``: parameter and FFN FLOP counts of a preset with a chosen FFN kind."""
from __future__ import annotations

import json

import torch

from ..ffn import ffn_config_from_name
from ..flops import base_ffn_flops_per_token, moe_ffn_flops_per_token, static_ffn_flops_per_token
from ..model import VersatileLM, model_config
from ..paper import VARIANTS
from ..presets import preset_names


def register(sub) -> None:
    p = sub.add_parser("info", help="parameter and FFN FLOP counts of a preset")
    p.add_argument("--preset", default="paper-354m", choices=preset_names(), help="model preset")
    p.add_argument("--ffn", default="dense", choices=sorted(VARIANTS), help="FFN kind (paper Table 1/3 rows)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def describe(preset: str, ffn: str) -> dict:
    cfg = model_config(preset, ffn_config_from_name(ffn))
    with torch.device("meta"):  # count without allocating 1B parameters
        model = VersatileLM(cfg)
    params, ffn_params = model.num_params(), model.ffn_params()
    with torch.device("meta"):
        base = VersatileLM(model_config(preset)).num_params()
    return {
        "preset": preset, "ffn": ffn, "params": params, "ffn_params": ffn_params, "params_over_dense": params - base,
        "d_model": cfg.d_model, "n_layers": cfg.n_layers, "d_hidden": cfg.d_hidden, "vocab_size": cfg.vocab_size,
        "base_ffn_flops_per_token": base_ffn_flops_per_token(cfg),
        "moe_ffn_flops_per_token": moe_ffn_flops_per_token(cfg),
        # None for VersatileFFN: its cost depends on the loops tokens execute (see `versatileffn eval`)
        "ffn_flops_per_token": static_ffn_flops_per_token(cfg),
    }


def run(args) -> int:
    info = describe(args.preset, args.ffn)
    if args.json:
        print(json.dumps(info))
    else:
        width = max(len(k) for k in info)
        for k, v in info.items():
            print(f"{k:<{width}}  {v:,}" if isinstance(v, int) else f"{k:<{width}}  {v}")
    return 0
