"""Section ``e2e``: an LM training step (bf16 autocast, fused AdamW), eager (``compiled=True``: every block
compiled): tokens/s, MFU from the FLOPs actually executed, peak memory; VersatileFFN with ``depth_grad`` auto and
full, and with activation checkpointing."""
from __future__ import annotations

import time

import torch

from ..ffn.common import swiglu_flops
from ..ffn.temperature import attach_temperature_schedule
from ..ffn.ragged import gmm_runs
from ..flops import static_ffn_flops_per_token, versatile_sublayer_x_dense
from .common import Bench, build_lm
from .timing import peak_tflops, sync


def executed_flops_per_token(model, seq: int) -> float:
    """Matmul FLOPs per token of one training step (fwd + bwd) for what the model actually executed: FFNs whose
    cost does not depend on the data from ``flops.static_ffn_flops_per_token``; VersatileFFN from
    ``flops.versatile_sublayer_x_dense`` on the statistics of the timed steps and the path the layer ran."""
    c = model.config
    d, L = c.d_model, c.n_layers
    attn = 2 * 4 * d * d + 2 * seq * d  # q,k,v,o projections + causal scores/values (half of 4 T d)
    rest = 3 * (L * attn + 2 * d * c.vocab_size)  # fwd + bwd (2x fwd)
    static = static_ffn_flops_per_token(c)
    if static is not None:
        return rest + 3 * static
    dev = next(model.parameters()).device
    for m in model.versatile_layers():
        exact = m.last_depth_grad == "exact"
        grouped = exact and gmm_runs(dev, torch.bfloat16 if dev.type == "cuda" else torch.float32)
        x_dense = versatile_sublayer_x_dense(m.config, m.stats.summary()["loop_histogram"], training=True,
                                             grouped_width=grouped, exact_depth_grad=exact)
        rest += 3 * swiglu_flops(m.d_model, m.d_hidden) * x_dense
    return rest


def train_lm(b: Bench, ffn: str, micro_batch: int, compiled: bool, checkpointing: bool = False,
             steps: int = 8, depth_grad: str = "auto") -> dict:
    s, dev = b.shape, b.device
    model = build_lm(b, ffn, activation_checkpointing=checkpointing).train()
    for m in model.versatile_layers():
        m.runtime.depth_grad = depth_grad
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
        row["mean_loops"] = model.mean_loops()
        row["depth_grad"] = model.versatile_layers()[0].last_depth_grad
    del model, opt
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return row


def section_e2e(b: Bench, compiled: bool = False) -> dict:
    s = b.shape
    res: dict = {}
    runs = [("dense", False, "auto"), ("versatile", False, "auto")]
    if not compiled:
        runs += [("versatile", False, "full"), ("versatile", True, "auto")]
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


def summary(sec: dict) -> list[str]:
    lines = []
    for k, v in sec.items():
        if isinstance(v, dict):
            lines.append(f"e2e {k}: {v['tokens_per_s']:.0f} tok/s, MFU {v['mfu']:.3f}, "
                         f"peak {v.get('peak_mem_gib', float('nan')):.1f} GiB (mb {v['micro_batch']})")
        elif isinstance(v, str):
            lines.append(f"e2e {k}: {v}")
    return lines
