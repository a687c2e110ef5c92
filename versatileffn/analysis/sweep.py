"""Executed FFN FLOPs from the layers' statistics, and the inference loop-cap sweep (compute vs quality).

FLOPs come from ``versatileffn.flops.executed_ffn_flops`` on the layers' own statistics (loop histograms),
in its two conventions: ``paper`` (Table 2: a loop costs one SwiGLU FFN, a width-path token adds its top-K
virtual experts) and ``implementation`` (what this code's eval forward computes), plus the paper's closed
formula Base * N_mean + (MoE - Base) * P.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import torch

from ..model import ModelConfig
from ..eval import evaluate_tasks, validation_metrics
from ..eval.efficiency import merge_layer_stats
from ..flops import base_ffn_flops_per_token, executed_ffn_flops
from ..ffn.control import FFNControl, reset_ffn_stats, set_inference_loop_cap
from .collect import find_versatile_layers

log = logging.getLogger(__name__)


def flops_config(model: torch.nn.Module) -> ModelConfig:
    """The ModelConfig that FFN FLOP accounting needs: our LM's config, a converted Hugging Face model's
    ``ffn_model_config()``, or for any other wrapper one built from its VersatileFFN layers (FFN FLOPs depend
    only on d_model, d_hidden, the layer count and the FFN options)."""
    layers = [layer for _, layer in find_versatile_layers(model)]
    if isinstance(model, FFNControl) and model.ffn_model_config().n_layers == len(layers):
        return model.ffn_model_config()
    c = layers[0].config
    return ModelConfig(vocab_size=1, d_model=c.d_model, n_layers=len(layers), n_heads=1, d_hidden=c.d_hidden,
                       max_seq_len=2, norm_eps=c.norm_eps, init_std=c.init_std, ffn=c.unshaped())


def ffn_flops_summary(layer_stats: list[dict], config: ModelConfig) -> dict:
    """Executed FFN FLOPs per token over all layers (both conventions), the Table 2 formula, the dense model's
    FFN FLOPs for comparison, and the per-layer numbers; ``layer_stats`` = per-layer ``stats.summary()``."""
    ex = executed_ffn_flops(config, layer_stats)
    dense = base_ffn_flops_per_token(config)
    return {"ffn_flops_per_token": ex["paper"], "ffn_flops_implementation": ex["implementation"],
            "paper_formula_flops": ex["formula"], "mean_loops_all_layers": ex["mean_loops"],
            "frac_below_max_loops": ex["frac_below_max"], "dense_ffn_flops_per_token": dense,
            "ffn_flops_over_dense": ex["paper"] / dense, "per_layer": ex["per_layer"]}


def read_stats(model: torch.nn.Module) -> list[dict]:
    """Per-layer ``stats.summary()`` of every VersatileFFN, accumulated since the last reset."""
    return [layer.stats.summary() for _, layer in find_versatile_layers(model)]


def default_caps(model: torch.nn.Module) -> list[int | None]:
    max_loops = max(layer.max_loops for _, layer in find_versatile_layers(model))
    return [*range(1, max_loops + 1), None]


def accuracy_stderr(acc_by_task: dict[str, float], n_by_task: dict[str, int]) -> float:
    """Binomial standard error of the task-averaged accuracy: sqrt(sum_t p_t (1 - p_t) / n_t) / T. On a few
    hundred questions it is a couple of points, so smaller differences between loop caps are noise."""
    var = sum(p * (1 - p) / max(n_by_task[t], 1) for t, p in acc_by_task.items())
    return float(np.sqrt(var) / len(acc_by_task))


def loop_cap_sweep(model: torch.nn.Module, tokens: np.ndarray, seq_len: int, caps: list[int | None] | None = None,
                   tokenizer=None, tasks: list[str] | None = None, task_limit: int | None = None,
                   batch_size: int = 8, max_tokens: int | None = None, n_bytes: int | None = None,
                   device=None, progress: bool = False, validation_fn=None, tasks_fn=None) -> list[dict]:
    """For each inference loop cap (default 1..L_max and None = uncapped): validation loss on ``tokens``, the
    executed FFN FLOPs per token measured on that validation pass, and, with ``tasks``, benchmark accuracy (and
    the FLOPs measured on the benchmark pass). The model's own cap is restored afterwards.

    ``validation_fn`` / ``tasks_fn`` (same signatures) default to ``versatileffn.eval.validation_metrics`` /
    ``evaluate_tasks``.
    """
    layers = find_versatile_layers(model)
    validation_fn = validation_fn or validation_metrics
    tasks_fn = tasks_fn or evaluate_tasks
    if tasks and tokenizer is None:
        raise ValueError("benchmark tasks need a tokenizer")
    caps = default_caps(model) if caps is None else list(caps)
    config = flops_config(model)
    saved_caps = [layer.runtime.loop_cap for _, layer in layers]
    rows = []
    try:
        for cap in caps:
            set_inference_loop_cap(model, cap)
            t0 = time.perf_counter()
            reset_ffn_stats(model)
            val = validation_fn(model, tokens, seq_len, batch_size=batch_size, device=device,
                                max_tokens=max_tokens, n_bytes=n_bytes)
            row = {"cap": cap, "val_loss": float(val["loss"]), "val_ppl": float(val["ppl"]),
                   "val_bpb": None if val.get("bpb") is None else float(val["bpb"]),
                   "val_tokens": int(val["tokens"])}
            stats = read_stats(model)
            flops = ffn_flops_summary(stats, config)
            row.update({k: v for k, v in flops.items() if k != "per_layer"})
            row["mean_loops_per_layer"] = [st.get("mean_loops") for st in stats]
            if tasks:
                res = tasks_fn(model, tokenizer, tasks=tasks, limit=task_limit, batch_size=batch_size,
                               device=device, progress=progress)
                row["accuracy"] = float(res["average"])
                row["tasks"] = {name: float(r["primary"]) for name, r in res["tasks"].items()}
                if all("n" in r for r in res["tasks"].values()):
                    row["task_examples"] = {name: int(r["n"]) for name, r in res["tasks"].items()}
                    row["accuracy_stderr"] = accuracy_stderr(row["tasks"], row["task_examples"])
                if res.get("ffn_stats"):  # per-task statistics (our LM): FLOPs over every benchmark token
                    merged = merge_layer_stats(res["ffn_stats"])
                    row["task_ffn_flops_per_token"] = executed_ffn_flops(config, merged)["paper"]
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            if progress:
                acc = f", acc {row['accuracy']:.4f}" if "accuracy" in row else ""
                log.info("loop cap %s: val loss %.4f, FFN FLOPs/token %.3fM%s", cap, row["val_loss"],
                         row["ffn_flops_per_token"] / 1e6, acc)
    finally:
        for (_, layer), cap in zip(layers, saved_caps):
            layer.runtime.loop_cap = cap
    return rows
