"""Section ``decode``: one new token per sequence through the whole LM with the library's decoder
(``versatileffn.generation``: static KV cache, steps eager or replayed from one CUDA graph), dense and VersatileFFN
with the forced loop mixes, beside the yardstick ``anchor_decode.py`` run in the same section.

The yardstick's method: a prompt of ``decode_prompt`` (128) random tokens, then greedy steps timed on the wall clock
between two synchronisations, ms per step = time / steps. Here the steps are the decoder's own (``Decoder.generate``
times its prefill and its decode loop apart; the host never looks at the device in between). A forced mix gives
each layer's tokens their loop counts through the layer's ``loops=`` argument (a forward pre-hook on the decode
steps; the prefill keeps the loop head's choice). ``targets`` holds the figures of issue 13's decode targets per
mode (``targets.DECODE_KEYS``); the yardstick's path comes from the environment variable
``VERSATILEFFN_ANCHOR_DECODE`` (``benchmarks/h200.sh`` sets it)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..generation import GenerationConfig
from .common import LOOP_MIXES, Bench, build_lm, mix_loops
from .yardstick import run_script

ANCHOR_ENV = "VERSATILEFFN_ANCHOR_DECODE"


def decode_modes(b: Bench) -> tuple[str, ...]:
    return ("eager", "graph") if b.device.type == "cuda" else ("eager",)


def force_loops(model, probs: list[float] | None, batch: int) -> list:
    """Pre-hooks that give every VersatileFFN layer's decode tokens (batch of them) loop counts drawn from the mix
    (one seeded draw over all layers, so batch 1 still spreads the mix over the layers). -> hook handles."""
    layers = model.versatile_layers()
    if probs is None or not layers:
        return []
    loops = mix_loops(probs, len(layers) * batch, model.lm_head.weight.device).view(len(layers), batch)

    def hook_for(row: torch.Tensor):
        def hook(module, args, kwargs):
            x = args[0]
            return (args, {**kwargs, "loops": row}) if x.shape[0] * x.shape[1] == batch else None
        return hook

    return [m.register_forward_pre_hook(hook_for(loops[i]), with_kwargs=True) for i, m in enumerate(layers)]


def time_decode(b: Bench, model, batch: int, mode: str) -> dict:
    """ms per decode step and tokens/s of the decoder in ``mode`` after a prompt of ``decode_prompt`` tokens."""
    s = b.shape
    steps = 3 if b.quick else s.decode_steps
    config = GenerationConfig(max_new_tokens=steps + 1, mode=mode, check_every=steps + 1)
    prompt = torch.randint(0, model.config.vocab_size, (batch, s.decode_prompt), device=b.device)
    with torch.no_grad():
        out = config.build(model).generate(prompt)
    ms = out.decode_s / (out.steps - 1) * 1e3
    return {"step_ms": ms, "tokens_per_s": batch / ms * 1e3, "prefill_ms": out.prefill_s * 1e3}


def run_anchor(b: Bench) -> dict | str:
    path = os.environ.get(ANCHOR_ENV)
    if not path:
        return f"skipped: {ANCHOR_ENV} not set"
    if b.device.type != "cuda":
        return "skipped: the yardstick runs on CUDA only"
    if not Path(path).is_file():
        return f"skipped: {path} does not exist"
    return run_script(Path(path), min(240.0, b.left()))


def section_decode(b: Bench) -> dict:
    s = b.shape
    res: dict = {}
    variants = [("dense", "dense", None)] + [(mix, "versatile", probs) for mix, probs in LOOP_MIXES.items()]
    models = {}
    for name, ffn, probs in variants:
        if ffn not in models:  # one model per kind: the mixes share the VersatileFFN weights
            models[ffn] = build_lm(b, ffn).to(b.dtype).eval()
        model = models[ffn]
        for mode in decode_modes(b):
            rows: dict = {}
            for batch in s.decode_batches:
                if b.left() < 15:
                    rows[str(batch)] = "skipped: time budget"
                    continue
                hooks = force_loops(model, probs, batch)
                try:
                    rows[str(batch)] = time_decode(b, model, batch, mode)
                finally:
                    for h in hooks:
                        h.remove()
                if probs is not None:
                    rows[str(batch)]["mix_mean_loops"] = sum((i + 1) * p for i, p in enumerate(probs))
            res[f"{name}_{mode}"] = rows
    del models
    res["anchor"] = run_anchor(b) if b.left() > 60 else "skipped: time budget"
    res["x_dense"] = {key: ratios(res, key, key.replace(key.split("_")[0], "dense", 1)) for key in res
                      if key.split("_")[0] in LOOP_MIXES}
    res["targets"] = decode_targets(res, b)
    return res


def ratios(res: dict, key: str, base: str) -> dict:
    """{batch: res[key] step ms / res[base] step ms} over the batches both timed."""
    a, d = res.get(key, {}), res.get(base, {})
    return {k: a[k]["step_ms"] / d[k]["step_ms"] for k in d if isinstance(d[k], dict) and isinstance(a.get(k), dict)}


def decode_targets(res: dict, b: Bench) -> dict:
    """Issue 13's decode figures per mode: batch-1 uniform ms, the worst batch of uniform over dense, and the worst
    batch of our dense step over the yardstick's graph step (``loops1_b{B}_graph``)."""
    b1, worst, anchor_worst = {}, {}, {}
    anchor = res["anchor"].get("ms_per_step", {}) if isinstance(res.get("anchor"), dict) else {}
    for mode in decode_modes(b):
        uniform = res.get(f"uniform_{mode}", {})
        if isinstance(uniform.get("1"), dict):
            b1[mode] = uniform["1"]["step_ms"]
        x = res["x_dense"].get(f"uniform_{mode}", {})
        if x:
            worst[mode] = max(x.values())
        dense = res.get(f"dense_{mode}", {})
        over = [r["step_ms"] / anchor[f"loops1_b{k}_graph"] for k, r in dense.items()
                if isinstance(r, dict) and isinstance(anchor.get(f"loops1_b{k}_graph"), (int, float))]
        if over:
            anchor_worst[mode] = max(over)
    return {"b1_uniform_ms": b1, "uniform_x_dense_worst": worst, "dense_x_anchor_worst": anchor_worst}
