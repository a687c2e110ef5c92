"""Section ``prefill``: the eval forward of one FFN sublayer (4k and 16k tokens) per loop mix, eager and captured
in a CUDA graph, against dense in the same mode and against the FLOP ideal (``flops.versatile_sublayer_x_dense``:
mean loops + the width path's K/N of a down projection per width-path token on the grouped route).

Mixes are forced through ``layer(x, loops=...)``: all-1, uniform, mostly-easy, all-4, and the mix a trained model
predicts (``Inputs.trained_model``). One graph per token count replays every mix (the engine keeps its row counts
on the device); every eager mix is also checked against the plain path.
"""
from __future__ import annotations

import torch

from ..data import load_tokens
from ..eval.scoring import model_max_len, model_vocab_size
from ..ffn import engine
from ..flops import versatile_sublayer_x_dense
from ..loading import load_any_model
from .common import LOOP_MIXES, Bench, loop_histogram, make_layers, mix_loops
from .timing import graphed, rel_err


def trained_mix(b: Bench, max_loops: int) -> dict | None:
    """The loop mix (share of tokens per loop count, pooled over layers) a trained model predicts on the
    validation split of ``Inputs.data`` (random tokens without it), from its eval statistics."""
    path = b.inputs.trained_model
    if path is None:
        return None
    model, _ = load_any_model(path, b.device, torch.float32)
    if not model.versatile_layers():
        raise ValueError(f"{path}: no VersatileFFN layers, so no loop mix")
    if model.versatile_layers()[0].max_loops != max_loops:
        raise ValueError(f"{path}: L_max = {model.versatile_layers()[0].max_loops}; the benchmark's mixes have "
                         f"{max_loops} loop counts")
    seq = min(1024, model_max_len(model))
    n_rows = 2 if b.quick else 8
    if b.inputs.data is not None:
        tokens = torch.from_numpy(load_tokens(b.inputs.data, "val")[:n_rows * seq].astype("int64"))
        source = f"{b.inputs.data} (val)"
    else:
        tokens = torch.randint(0, model_vocab_size(model), (n_rows * seq,), generator=torch.Generator().manual_seed(0))
        source = "random tokens"
    ids = tokens[:tokens.numel() // seq * seq].view(-1, seq).to(b.device)
    model.eval().reset_ffn_stats()
    autocast = torch.autocast(b.device.type, dtype=torch.bfloat16, enabled=b.device.type == "cuda")
    with torch.no_grad(), autocast:
        model(ids)
    hist = [sum(col) for col in zip(*(s["loop_histogram"] for s in model.ffn_stats()))]
    del model
    return {"model": str(path), "tokens": source, "n_tokens": int(ids.numel()), "loop_histogram": hist,
            "probs": [c / sum(hist) for c in hist]}


def section_prefill(b: Bench) -> dict:
    s, dev = b.shape, b.device
    layers = make_layers(b)
    dense, vffn = layers["dense"].eval(), layers["vffn"].eval()
    vffn.runtime.impl = "engine"  # the default on CUDA; on the CPU (quick runs) the engine too
    mixes = dict(LOOP_MIXES)
    res: dict = {"modes": ["eager"] + (["graph"] if dev.type == "cuda" else [])}
    trained = trained_mix(b, s.max_loops)
    if trained is not None:
        mixes["trained"] = trained["probs"]
        res["trained_mix"] = trained
    res["mixes"] = mixes
    for n in s.tokens:
        x = torch.randn(1, n, s.d_model, device=dev, dtype=b.dtype)
        loops = mix_loops(mixes["uniform"], n, dev).view(1, n)  # a static buffer each mix is copied into
        grouped = engine.uses_grouped_width(vffn, x.reshape(n, -1))
        row: dict = {"width_route": "grouped" if grouped else "masked down projection"}
        with torch.no_grad():
            fns = {"eager": (lambda: dense(x), lambda: vffn(x, loops=loops))}
            if "graph" in res["modes"]:
                fns["graph"] = tuple(graphed(f) for f in fns["eager"])
            for mode, (run_dense, run_vffn) in fns.items():
                dense_ms = b.time_ms(run_dense)
                per: dict = {"dense_ms": dense_ms}
                for name, probs in mixes.items():
                    if b.left() < 10:
                        per[name] = "skipped: time budget"
                        continue
                    loops.copy_(mix_loops(probs, n, dev).view(1, n))
                    ideal = versatile_sublayer_x_dense(vffn.config, loop_histogram(loops, s.max_loops),
                                                       grouped_width=grouped)
                    ms = b.time_ms(run_vffn)
                    per[name] = {"ms": ms, "x_dense": ms / dense_ms, "ideal_x_dense": ideal,
                                 "over_ideal": ms / dense_ms / ideal}
                    if mode == "eager":
                        vffn.runtime.impl = "plain"
                        plain = vffn(x, loops=loops)
                        vffn.runtime.impl = "engine"
                        per[name]["rel_err_vs_plain"] = rel_err(run_vffn(), plain)
                row[mode] = per
        res[str(n)] = row
    return res


def summary(sec: dict) -> list[str]:
    lines = []
    for n, row in sec.items():
        if not n.isdigit():
            continue
        for mode in sec["modes"]:
            per = row.get(mode, {})
            r = " ".join(f"{m} {v['x_dense']:.2f}/{v['ideal_x_dense']:.2f}={v['over_ideal']:.2f}"
                         for m, v in per.items() if isinstance(v, dict))
            lines.append(f"prefill {n} tok {mode} (x dense / ideal = over ideal; dense {per.get('dense_ms', 0):.3f} "
                         f"ms): {r}")
    return lines
