"""GPU benchmark suite for the FFN family (``versatileffn bench``, ``benchmarks/bench_ffn.py``).

Sections (each writes into one JSON; a section that runs out of its time budget is skipped and says so):
  check   correctness against the plain references on fresh random inputs (bf16 on the GPU)
  train   one FFN sublayer, fwd+bwd, dense / 4-Loop / VersatileFFN ("full", "exact") / the authors'
          approach (versatileffn.ffn.reference) / MoE (dense einsum, grouped GEMM); eager and compiled
  infer   eval forward per loop mix vs dense and vs the FLOP ideal; ours (compacted) vs authors' batch-max
  decode  one new token per sequence with a KV cache, whole LM, dense vs VersatileFFN
  e2e     LM training step (bf16 autocast, fused AdamW), tokens/s, MFU, peak memory; checkpointing
Every ratio is against the dense sublayer/model timed in the same run and the same execution mode.

FLOP counting (2 FLOPs per multiply-accumulate): one SwiGLU loop = 6 d h per token forward; backward =
2x forward for every matmul that runs with autograd. MFU = executed matmul FLOPs per step / (step time
x peak), peak = 989.4 TFLOP/s (H100/H200 SXM dense bf16); attention counted causal (half of 4 T d).
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .ffn import DenseFFN, LoopFFN, MoEFFN, VersatileFFN, VersatileFFNConfig, ffn_config_from_name
from .ffn.reference import authors_eval_forward, authors_train_forward
from .ffn.temperature import attach_temperature_schedule
from .model import KVCache, model_config

PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}
LOOP_MIXES = {"all1": [1, 0, 0, 0], "uniform": [0.25, 0.25, 0.25, 0.25], "easy": [0.5, 0.3, 0.15, 0.05],
              "all4": [0, 0, 0, 1]}
TARGETS = {"train_16k": 4.5, "train_4k": 5.5, "exact_uniform": 3.6, "infer_over_ideal": 1.15, "decode": 2.0,
           "mfu": 0.35}


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


# ---------------------------------------------------------------------------------------- timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device: torch.device, warmup: int = 5, reps: int = 20, min_ms: float = 200.0) -> float:
    """Median over repetitions of one call (CUDA events on the GPU), after warm-up calls; at least
    ``reps`` timed calls, more until ``min_ms`` of measured time has accumulated."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    while len(times) < reps or (sum(times) < min_ms and len(times) < 2000):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# ---------------------------------------------------------------------------------------- layers


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


# ---------------------------------------------------------------------------------------- check


def section_check(b: Bench) -> dict:
    s, dev = b.shape, b.device
    n = s.tokens[-1]
    layers = make_layers(b)
    vffn = layers["vffn"]
    x = torch.randn(1, n, s.d_model, device=dev, dtype=b.dtype)
    gy = torch.randn_like(x)
    res: dict = {}
    grads = {}
    for mode in ("full", "exact"):
        vffn.depth_grad = mode
        xg = x.clone().requires_grad_()
        for p in vffn.parameters():
            p.grad = None
        torch.manual_seed(3)
        y = vffn(xg)
        y.backward(gy)
        grads[mode] = (y.detach(), {k: p.grad.clone() for k, p in vffn.named_parameters()}, xg.grad.clone())
    (y_f, g_f, x_f), (y_e, g_e, x_e) = grads["full"], grads["exact"]
    res["exact_vs_full_out"] = rel_err(y_e, y_f)
    res["exact_vs_full_grad_max"] = max([rel_err(g_e[k], g_f[k]) for k in g_f] + [rel_err(x_e, x_f)])
    with torch.no_grad():
        vffn.depth_grad = "auto"
        torch.manual_seed(4)
        ours = vffn(x)
        torch.manual_seed(4)
        res["train_vs_authors_out"] = rel_err(ours, authors_train_forward(vffn, x))
        vffn.eval()
        for name, probs in LOOP_MIXES.items():
            forced_loops(vffn, mix_loops(probs, n, dev))
            res[f"eval_{name}_vs_authors"] = rel_err(vffn(x), authors_eval_forward(vffn, x))
        del vffn._predicted_loops
        vffn.train()
        moe = layers["moe"]
        moe.expert_impl = "dense"
        ref = moe(x)
        moe.expert_impl = "grouped"
        res["moe_grouped_vs_dense"] = rel_err(moe(x), ref)
        moe.expert_impl = "auto"
    tol = 1e-5 if b.dtype == torch.float32 else 2e-2
    res["tolerance"] = tol
    res["ok"] = all(v < tol for k, v in res.items() if k not in ("tolerance",))
    return res


# ---------------------------------------------------------------------------------------- train


def train_variants(layers: dict, compiled: bool) -> dict:
    vffn = layers["vffn"]

    def with_mode(mode):
        def f(x):
            vffn.depth_grad = mode
            return vffn(x)
        return f

    def moe_impl(impl):
        def f(x):
            layers["moe"].expert_impl = impl
            return layers["moe"](x)
        return f

    v = {"dense": layers["dense"], "loop4": layers["loop4"], "vffn_full": with_mode("full"),
         "vffn_exact": with_mode("exact"), "moe_grouped": moe_impl("grouped")}
    if not compiled:  # data-dependent Python loops: the authors' code and the dense-einsum MoE run eager only
        v["authors"] = lambda x: authors_train_forward(vffn, x)
        v["moe_dense"] = moe_impl("dense")
    return v


def compile_fn(name: str, fn):
    if name in ("dense", "loop4", "vffn_full"):  # sync-free paths must compile to one graph
        return torch.compile(fn, fullgraph=True)
    # the sorted path breaks the graph at its one host sync; bucket sizes change every step, so the
    # pieces are compiled with symbolic sizes once instead of once per bucket size
    return torch.compile(fn, dynamic=True)


def section_train(b: Bench, compiled: bool) -> dict:
    s, dev = b.shape, b.device
    layers = make_layers(b)
    res: dict = {}
    for n in s.tokens:
        x = torch.randn(1, n, s.d_model, device=dev, dtype=b.dtype, requires_grad=True)  # as inside a model
        gy = torch.randn_like(x)
        ms: dict = {}
        hist = None
        for name, fn in train_variants(layers, compiled).items():
            if b.left() < 20:
                ms[name] = "skipped: time budget"
                continue
            if compiled:
                fn = compile_fn(name, fn)
            params = [p for m in layers.values() for p in m.parameters()]

            def step(fn=fn):
                for p in params:
                    p.grad = None
                x.grad = None
                fn(x).backward(gy)

            layers["vffn"].reset_stats()
            try:
                ms[name] = time_ms(step, dev, warmup=3 if not compiled else 4)
            except Exception as exc:  # a variant that fails is reported, the others still run
                ms[name] = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
            if name == "vffn_exact":
                hist = layers["vffn"].stats.summary().get("loop_histogram")
        dense = ms["dense"]
        ratios = {k: v / dense for k, v in ms.items() if isinstance(v, float)}
        res[str(n)] = {"ms": ms, "x_dense": ratios, "vffn_loop_histogram": hist,
                       "flop_x_dense": train_flop_ratios(s, hist)}
    return res


def train_flop_ratios(s: Shape, hist: list[int] | None) -> dict:
    """Executed matmul FLOPs (fwd + bwd) as a multiple of the dense sublayer's, input gradient included."""
    L = s.max_loops
    full = (L * 3 + 1) / 3  # L loops + the width path's down projection, all with backward
    out = {"loop4": float(L), "vffn_full": full}
    if hist:
        tot = sum(hist)
        at_least = [sum(hist[k:]) / tot for k in range(L)]  # share of tokens with l_hat >= k + 1
        bwd_loops = sum(at_least)                          # loops that run with a backward graph
        out["vffn_exact"] = ((L * 3 + 1) + 2 * (bwd_loops * 3 + 1)) / 9
    return out


# ---------------------------------------------------------------------------------------- infer


def section_infer(b: Bench, compiled: bool) -> dict:
    s, dev = b.shape, b.device
    layers = make_layers(b)
    vffn, dense = layers["vffn"].eval(), layers["dense"].eval()
    ours = torch.compile(vffn, dynamic=True) if compiled else vffn  # bucket sizes vary: symbolic sizes
    dense_fn = torch.compile(dense) if compiled else dense
    res: dict = {}
    for n in s.tokens:
        x = torch.randn(1, n, s.d_model, device=dev, dtype=b.dtype)
        per: dict = {}
        with torch.no_grad():
            dense_ms = time_ms(lambda: dense_fn(x), dev)
            for name, probs in LOOP_MIXES.items():
                if b.left() < 15:
                    per[name] = "skipped: time budget"
                    continue
                loops = mix_loops(probs, n, dev)
                forced_loops(vffn, loops)
                lf = loops.float()
                ideal = float(lf.mean() + (loops < s.max_loops).float().mean() * s.top_k / s.n_experts)
                ours_ms = time_ms(lambda: ours(x), dev)
                row = {"ideal_flop_x_dense": ideal, "ours_ms": ours_ms, "ours_x_dense": ours_ms / dense_ms,
                       "ours_over_ideal": ours_ms / dense_ms / ideal}
                if not compiled:
                    a_ms = time_ms(lambda: authors_eval_forward(vffn, x), dev)
                    row.update(authors_ms=a_ms, authors_x_dense=a_ms / dense_ms, authors_over_ideal=a_ms / dense_ms / ideal)
                per[name] = row
        if hasattr(vffn, "_predicted_loops") and "_predicted_loops" in vffn.__dict__:
            del vffn._predicted_loops
        res[str(n)] = {"dense_ms": dense_ms, "mixes": per}
    return res


# ---------------------------------------------------------------------------------------- decode


def build_lm(b: Bench, ffn: str, **overrides):
    s = b.shape
    torch.manual_seed(0)
    return model_config(s.preset, ffn_config_from_name(ffn), **overrides).build().to(b.device)


DECODE_VARIANTS = {  # name: (ffn kind, VersatileFFN.eval_impl, compile the FFN sublayers)
    "dense": ("dense", None, False),
    "versatile_compact": ("versatile", "compact", False),
    "versatile_all_loops": ("versatile", "all_loops", False),
    "dense_ffn_compiled": ("dense", None, True),
    "versatile_ffn_compiled": ("versatile", "auto", True),  # auto = all_loops (sync-free) when compiled
}


def section_decode(b: Bench) -> dict:
    s, dev = b.shape, b.device
    res: dict = {}
    for name, (ffn, impl, compiled) in DECODE_VARIANTS.items():
        if compiled and not b.compile:
            continue
        model = build_lm(b, ffn).to(b.dtype).eval()
        for m in model.versatile_layers():
            m.eval_impl = impl
        if compiled:
            for m in model.ffn_layers():
                m.compile()
        vocab = model.config.vocab_size
        per: dict = {}
        for batch in s.decode_batches:
            if b.left() < (60 if compiled else 10):
                per[str(batch)] = "skipped: time budget"
                continue
            cache = KVCache(model.config, batch, s.decode_prompt + 1, dev, b.dtype)
            ids = torch.randint(0, vocab, (batch, s.decode_prompt), device=dev)
            nxt = torch.randint(0, vocab, (batch, 1), device=dev)
            with torch.no_grad():
                model(ids, cache=cache)

                def step():
                    cache.pos = s.decode_prompt  # the same position every time: one decode step
                    model(nxt, cache=cache)

                step()
                model.reset_ffn_stats()
                ms = time_ms(step, dev, warmup=5, reps=30, min_ms=100)
            row = {"step_ms": ms, "tokens_per_s": batch / ms * 1e3}
            if ffn == "versatile":
                st = model.ffn_stats()
                row["mean_loops"] = sum(x["mean_loops"] for x in st) / len(st)
            per[str(batch)] = row
        res[name] = per
        del model
    for name, base in (("versatile_compact", "dense"), ("versatile_all_loops", "dense"),
                       ("versatile_ffn_compiled", "dense_ffn_compiled")):
        if name in res and base in res:
            res[f"{name}_x_{base}"] = {k: res[name][k]["step_ms"] / res[base][k]["step_ms"] for k in res[base]
                                       if isinstance(res[base][k], dict) and isinstance(res[name].get(k), dict)}
    best = {}
    for key in ("versatile_compact_x_dense", "versatile_all_loops_x_dense"):
        for k, v in res.get(key, {}).items():
            best[k] = min(best.get(k, v), v)
    res["versatile_x_dense"] = best  # eager, the faster eval implementation per batch size
    return res


def section_profile(b: Bench) -> dict:
    """Where the time goes at the small size: top kernels / ops of one call, and the cost of a host sync."""
    s, dev = b.shape, b.device
    n = s.tokens[-1]
    layers = make_layers(b)
    vffn = layers["vffn"]
    x = torch.randn(1, n, s.d_model, device=dev, dtype=b.dtype, requires_grad=True)
    gy = torch.randn_like(x)

    def train(mode):
        def f():
            vffn.depth_grad = mode
            vffn(x).backward(gy)
        return f

    def infer_all1():
        vffn.eval()
        forced_loops(vffn, torch.ones(n, dtype=torch.long, device=dev))
        with torch.no_grad():
            vffn(x)
        del vffn._predicted_loops
        vffn.train()

    res: dict = {}
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    sort_key = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
    for name, fn in (("train_full", train("full")), ("train_exact", train("exact")), ("infer_all1", infer_all1)):
        for _ in range(3):
            fn()
        sync(dev)
        with torch.profiler.profile(activities=acts) as prof:
            fn()
            sync(dev)
        res[name] = prof.key_averages().table(sort_by=sort_key, row_limit=18, max_name_column_width=60)
    small = torch.randn(1024, device=dev)

    def no_sync():
        for _ in range(100):
            small.add_(1e-6)

    def with_sync():
        for _ in range(100):
            small.add_(1e-6).sum().item()
    res["100_tiny_ops_ms"] = time_ms(no_sync, dev, reps=5, min_ms=0)
    res["100_tiny_ops_with_item_ms"] = time_ms(with_sync, dev, reps=5, min_ms=0)
    return res


# ---------------------------------------------------------------------------------------- e2e


def executed_flops_per_token(model, seq: int) -> float:
    """Matmul FLOPs per token of one training step (fwd + bwd) for what the model actually executed, from
    the FFN statistics of the timed steps (loop histogram: exact-gradient backward depth)."""
    c = model.config
    d, h, L = c.d_model, c.d_hidden, c.n_layers
    attn = 2 * 4 * d * d + 2 * seq * d  # q,k,v,o projections + causal scores/values (half of 4 T d)
    fwd = L * attn + 2 * d * c.vocab_size
    bwd = 2 * fwd
    ffn = c.ffn
    for m in model.ffn_layers():
        loop = 6 * d * h
        if ffn.kind == "dense":
            fwd, bwd = fwd + loop, bwd + 2 * loop
        elif isinstance(m, VersatileFFN):
            st = m.stats.summary()
            width = 2 * d * h
            fwd += m.max_loops * loop + width
            if m.last_depth_grad == "exact":
                hist = st["loop_histogram"]
                tot = sum(hist)
                bwd_loops = sum(sum(hist[k:]) / tot for k in range(m.max_loops))
                bwd += 2 * (bwd_loops * loop + width)
            else:
                bwd += 2 * (m.max_loops * loop + width)
    return fwd + bwd


def peak_tflops(device: torch.device) -> float:
    if device.type != "cuda":
        return float("nan")
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), float("nan"))


def train_lm(b: Bench, ffn: str, micro_batch: int, compiled: bool, checkpointing: bool = False,
             steps: int = 8, depth_grad: str = "auto") -> dict:
    s, dev = b.shape, b.device
    model = build_lm(b, ffn, activation_checkpointing=checkpointing).train()
    for m in model.versatile_layers():
        m.depth_grad = depth_grad
    if compiled:
        for block in model.blocks:  # per-block compile: one graph reused by all blocks (torchtitan style)
            block.compile()
    fused = dev.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=fused)
    attach_temperature_schedule(opt, model)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (micro_batch, s.seq), device=dev)
    autocast = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")

    def step():
        with autocast:
            loss = model(ids, targets=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    t = time.time()
    for _ in range(3):
        step()
    sync(dev)
    warm_s = time.time() - t
    model.reset_ffn_stats()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base_mem = torch.cuda.memory_allocated(dev)
    t = time.time()
    for _ in range(steps):
        step()
    sync(dev)
    step_s = (time.time() - t) / steps
    tokens = micro_batch * s.seq
    flops = executed_flops_per_token(model, s.seq) * tokens
    row = {"micro_batch": micro_batch, "seq": s.seq, "step_ms": step_s * 1e3, "tokens_per_s": tokens / step_s,
           "executed_tflop_per_step": flops / 1e12, "achieved_tflops": flops / step_s / 1e12,
           "mfu": flops / step_s / 1e12 / peak_tflops(dev), "warmup_s": warm_s}
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev)
        row.update(peak_mem_gib=peak / 2**30, activation_mem_gib=(peak - base_mem) / 2**30)
    if ffn == "versatile":
        st = model.ffn_stats()
        row["mean_loops"] = sum(x["mean_loops"] for x in st) / len(st)
        row["depth_grad"] = model.versatile_layers()[0].last_depth_grad
    del model, opt
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return row


def section_e2e(b: Bench, compiled: bool) -> dict:
    s = b.shape
    res: dict = {}
    runs = [("dense", False, "auto"), ("versatile", False, "auto")]
    if not compiled:  # under compile "auto" is the sync-free "full" path already
        runs += [("versatile", False, "full"), ("versatile", False, "exact"), ("versatile", True, "auto")]
    for ffn, ckpt, depth_grad in runs:
        key = ffn + ("_checkpointing" if ckpt else "") + ("" if depth_grad == "auto" else f"_{depth_grad}")
        if b.left() < (150 if compiled else 40):
            res[key] = "skipped: time budget"
            continue
        for mb in (s.micro_batch, s.micro_batch // 2):
            try:
                res[key] = train_lm(b, ffn, mb, compiled, checkpointing=ckpt, depth_grad=depth_grad)
                break
            except torch.cuda.OutOfMemoryError as exc:
                res[key] = f"out of memory at micro-batch {mb}: {str(exc)[:120]}"
                torch.cuda.empty_cache()
    if isinstance(res.get("dense"), dict) and isinstance(res.get("versatile"), dict):
        res["versatile_tokens_per_s_x_dense"] = res["versatile"]["tokens_per_s"] / res["dense"]["tokens_per_s"]
        if "activation_mem_gib" in res["dense"]:
            res["versatile_activation_mem_x_dense"] = (res["versatile"]["activation_mem_gib"]
                                                       / res["dense"]["activation_mem_gib"])
    return res


# ---------------------------------------------------------------------------------------- targets


def targets(out: dict, shape: Shape) -> dict:
    """Each target: met (True/False) with the measured figure, or why it was not measured."""
    t: dict = {}

    def get(*path):
        node = out
        for p in path:
            if not isinstance(node, dict) or p not in node:
                return None
            node = node[p]
        return node if isinstance(node, (int, float)) else None

    n_big, n_small = (str(n) for n in shape.tokens[:2])
    for mode in ("eager", "compiled"):
        sec = f"train_{mode}"
        best = lambda n: min([v for v in (get(sec, n, "x_dense", "vffn_full"), get(sec, n, "x_dense", "vffn_exact"))  # noqa: E731
                              if v is not None], default=None)
        for n, key in ((n_big, "train_16k"), (n_small, "train_4k")):
            v = best(n)
            t[f"{key}_{mode}"] = {"target": TARGETS[key], "measured": v, "met": v is not None and v <= TARGETS[key]}
        v = get(sec, n_big, "x_dense", "vffn_exact")
        t[f"exact_uniform_{mode}"] = {"target": TARGETS["exact_uniform"], "measured": v,
                                      "met": v is not None and v <= TARGETS["exact_uniform"]}
        for mix in LOOP_MIXES:
            v = get(f"infer_{mode}", n_big, "mixes", mix, "ours_over_ideal")
            t[f"infer_{mix}_{mode}"] = {"target": TARGETS["infer_over_ideal"], "measured": v,
                                        "met": v is not None and v <= TARGETS["infer_over_ideal"]}
        v = get(f"e2e_{mode}", "versatile", "mfu")
        t[f"mfu_{mode}"] = {"target": TARGETS["mfu"], "measured": v, "met": v is not None and v >= TARGETS["mfu"]}
    dec = out.get("decode")
    dec = dec.get("versatile_x_dense") or {} if isinstance(dec, dict) else {}
    worst = max(dec.values(), default=None)
    t["decode_worst_batch_eager"] = {"target": TARGETS["decode"], "measured": worst,
                                     "met": worst is not None and worst <= TARGETS["decode"]}
    dec = out.get("decode")
    dec = dec.get("versatile_ffn_compiled_x_dense_ffn_compiled") or {} if isinstance(dec, dict) else {}
    worst = max(dec.values(), default=None)
    t["decode_worst_batch_ffn_compiled"] = {"target": TARGETS["decode"], "measured": worst,
                                            "met": worst is not None and worst <= TARGETS["decode"]}
    return t


# ---------------------------------------------------------------------------------------- main


SECTIONS = ("check", "train_eager", "infer_eager", "decode", "e2e_eager", "train_compiled", "e2e_compiled",
            "infer_compiled", "profile")


def run(out_path: str | Path, quick: bool = False, budget_s: float = 540.0, sections: tuple[str, ...] = SECTIONS,
        device: str | None = None, compile: bool = True) -> dict:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    shape = QUICK if quick else Shape()
    b = Bench(shape, dev, dtype, budget_s, compile)
    out_path = Path(out_path)
    out = b.out
    out["env"] = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
                  "torch": torch.__version__, "dtype": str(dtype), "python": platform.python_version(),
                  "shape": {k: getattr(shape, k) for k in shape.__dataclass_fields__}, "peak_tflops": peak_tflops(dev),
                  "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out["method"] = __doc__.split("\n\n", 2)[2].strip()
    out["targets_spec"] = TARGETS
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    funcs = {"check": section_check, "train_eager": lambda b: section_train(b, False),
             "infer_eager": lambda b: section_infer(b, False), "decode": section_decode,
             "e2e_eager": lambda b: section_e2e(b, False), "train_compiled": lambda b: section_train(b, True),
             "e2e_compiled": lambda b: section_e2e(b, True), "infer_compiled": lambda b: section_infer(b, True), "profile": section_profile}
    for name in sections:
        if name not in funcs:
            raise ValueError(f"unknown section {name!r}; choose from {SECTIONS}")
        if name.endswith("compiled") and not compile:
            out[name] = "skipped: --no-compile"
            continue
        if b.left() < 20:
            out[name] = "skipped: time budget"
            continue
        t = time.time()
        try:
            out[name] = funcs[name](b)
        except Exception as exc:  # keep the other sections' numbers
            out[name] = f"failed: {type(exc).__name__}: {str(exc)[:400]}"
        print(f"[bench] {name}: {time.time() - t:.1f}s", flush=True)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        out["targets"] = targets(out, shape)
        _write_json(out_path, out)
    return out


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=lambda o: None if isinstance(o, float) and math.isnan(o) else str(o)))
    os.replace(tmp, path)


def summary_lines(out: dict) -> list[str]:
    """A short table for the terminal (and the README)."""
    lines = [f"device: {out['env']['device']}  torch {out['env']['torch']}  dtype {out['env']['dtype']}"]
    for mode in ("eager", "compiled"):
        sec = out.get(f"train_{mode}")
        if isinstance(sec, dict):
            for n, row in sec.items():
                r = " ".join(f"{k} {v:.2f}" for k, v in row["x_dense"].items())
                lines.append(f"train {mode} {n} tok (x dense, dense {row['ms']['dense']:.2f} ms): {r}")
        sec = out.get(f"infer_{mode}")
        if isinstance(sec, dict):
            for n, row in sec.items():
                r = " ".join(f"{m} {v['ours_x_dense']:.2f}/{v['ideal_flop_x_dense']:.2f}"
                             + (f" (authors {v['authors_x_dense']:.2f})" if "authors_x_dense" in v else "")
                             for m, v in row["mixes"].items() if isinstance(v, dict))
                lines.append(f"infer {mode} {n} tok (ours/ideal x dense): {r}")
        sec = out.get(f"e2e_{mode}")
        if isinstance(sec, dict):
            for k, v in sec.items():
                if isinstance(v, dict):
                    lines.append(f"e2e {mode} {k}: {v['tokens_per_s']:.0f} tok/s, MFU {v['mfu']:.3f}, "
                                 f"peak {v.get('peak_mem_gib', float('nan')):.1f} GiB (mb {v['micro_batch']})")
                elif isinstance(v, str):
                    lines.append(f"e2e {mode} {k}: {v}")
    dec = out.get("decode")
    if isinstance(dec, dict):
        for name in DECODE_VARIANTS:
            rows = dec.get(name)
            if isinstance(rows, dict):
                r = " ".join(f"b{k} {v['step_ms']:.2f}ms/{v['tokens_per_s']:.0f}tok/s" for k, v in rows.items()
                             if isinstance(v, dict))
                lines.append(f"decode {name}: {r}")
        for k, v in dec.get("versatile_x_dense", {}).items():
            lines.append(f"decode batch {k}: best eager versatile x dense {v:.2f}")
    for k, v in (out.get("targets") or {}).items():
        m = v["measured"]
        lines.append(f"target {k}: {'MET' if v['met'] else 'not met'} (measured {m if m is None else round(m, 3)}, "
                     f"target {v['target']})")
    return lines
