"""Paper Sec. 4.3 for any model with VersatileFFN layers: one call computes every statistic, draws the pictures
and writes ``DIR/analysis.json``, ``DIR/*.png`` and the self-contained ``DIR/report.html``."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch

from . import plots
from ..eval.scoring import model_device, model_max_len
from ..folders import atomic_folder, check_replaceable, check_writable
from .collect import collect, find_versatile_layers
from .report import render_html
from .summarize import by_position, layer_table, sample_cos_matrix, token_lambda_ranking
from .sweep import ffn_flops_summary, flops_config, loop_cap_sweep

log = logging.getLogger(__name__)


def _jsonable(x):
    """NaN/inf -> None so analysis.json is strict JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    return x


def default_seq_len(model: torch.nn.Module, cap: int = 512) -> int:
    return int(min(model_max_len(model), cap))


def run_analysis(model: torch.nn.Module, tokenizer, tokens: np.ndarray, out_dir: str | Path, *, layer: int = 0,
                 seq_len: int | None = None, batch_size: int = 8, max_tokens: int | None = None,
                 sample_index: int = 0, heatmap_positions: int = 64, top_words: int = 50, min_count: int = 3,
                 sweep: bool = True, caps: list[int | None] | None = None, tasks: list[str] | None = None,
                 task_limit: int | None = None, n_bytes: int | None = None, sources: list[dict] | None = None,
                 model_path: str | None = None, progress: bool = True, validation_fn=None,
                 tasks_fn=None) -> dict:
    """Analyse ``model`` on ``tokens`` (1-D ids) and write the report into ``out_dir``; returns the JSON dict.

    ``layer`` indexes the VersatileFFN layers (model order) for the word clouds and the sample heatmap.
    ``sweep``: also run the inference loop-cap sweep (validation loss / accuracy / FLOPs per cap).
    ``out_dir`` is written as a whole when the analysis is done (``folders.atomic_folder``): a new folder, or an
    earlier analysis folder that it replaces; any other folder is refused before the work starts.
    """
    plots.require_plotting()
    check_writable(out_dir)
    check_replaceable(out_dir, "analysis")
    layers = find_versatile_layers(model)
    if not 0 <= layer < len(layers):
        raise ValueError(f"--layer {layer} is out of range: the model has {len(layers)} VersatileFFN layers "
                         f"(0..{len(layers) - 1})")
    if heatmap_positions < 2:
        raise ValueError(f"heatmap_positions must be >= 2; got {heatmap_positions}")
    seq_len = seq_len or default_seq_len(model)
    tokens = np.asarray(tokens)
    if max_tokens is not None and 0 < max_tokens < len(tokens):
        if n_bytes is not None:  # bits-per-byte of a prefix: assume its bytes are proportional to its tokens
            n_bytes = int(round(n_bytes * max_tokens / len(tokens)))
        tokens = tokens[:max_tokens]
    device = model_device(model)

    if progress:
        log.info("analysing %d VersatileFFN layers on %s ...", len(layers), device)
    traces, rows = collect(model, tokens, seq_len, batch_size=batch_size, sample_index=sample_index)
    first = layers[0][1]
    flops = ffn_flops_summary([t.summary for t in traces], flops_config(model))
    result: dict = {
        "model": {"path": model_path, "versatile_layers": len(layers), "layer_names": [n for n, _ in layers],
                  "max_loops": first.max_loops, "n_experts": first.n_experts, "top_k": first.top_k,
                  "mode": first.mode},
        "data": {"sources": sources or [], "tokens": int(rows.size), "sequences": int(rows.shape[0]),
                 "seq_len": int(rows.shape[1])},
        "device": str(device),
        "layers": layer_table(traces, flops.pop("per_layer")),
        "flops": flops,
        "loops_by_position": by_position(traces, "loops"),
        "cos_by_position": by_position(traces, "cos_out"),
        "cos_update_by_position": by_position(traces, "cos_update"),
        "cos_sample": {"layer": layer, "sequence": sample_index,
                       "matrix": sample_cos_matrix(traces[layer], heatmap_positions)},
        "word_cloud": token_lambda_ranking(traces[layer], rows, tokenizer, top=top_words, min_count=min_count,
                                           skip_ids={getattr(tokenizer, "eos_id", -1)}),
        "loop_cap_sweep": None,
    }
    if result["cos_sample"]["matrix"] is not None:
        result["cos_sample"]["positions"] = len(result["cos_sample"]["matrix"])
    if sweep:
        if progress:
            log.info("loop-cap sweep ...")
        result["loop_cap_sweep"] = loop_cap_sweep(
            model, tokens, seq_len, caps=caps, tokenizer=tokenizer, tasks=tasks, task_limit=task_limit,
            batch_size=batch_size, n_bytes=n_bytes, device=device, progress=progress,
            validation_fn=validation_fn, tasks_fn=tasks_fn)

    with atomic_folder(out_dir, "analysis") as tmp:
        figures = draw_figures(result, tmp)
        result["figures"] = {k: p.name for k, p in figures.items()}
        result = _jsonable(result)
        (tmp / "analysis.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
        (tmp / "report.html").write_text(render_html(result, figures), encoding="utf-8")
    out = Path(out_dir)
    if progress:
        log.info("wrote %s, %s and %d PNGs", out / "report.html", out / "analysis.json", len(figures))
    return result


def draw_figures(result: dict, out: Path) -> dict[str, Path]:
    """Every picture whose data the analysis produced (a depth-only model has no width/depth cosine, ...)."""
    layers = result["layers"]
    figs: dict[str, Path] = {}
    if all("loop_histogram" in r for r in layers):
        figs["loops_per_layer"] = plots.loops_per_layer(layers, out / "loops_per_layer.png")
        figs["loop_histogram"] = plots.loop_histogram(layers, out / "loop_histogram.png")
    if any("lambda_histogram" in r for r in layers):
        figs["lambda_distribution"] = plots.lambda_distribution(layers, out / "lambda_distribution.png")
    if any("expert_load" in r for r in layers):
        figs["expert_load"] = plots.expert_load(layers, out / "expert_load.png")
    if result["loops_by_position"] is not None:
        figs["loops_vs_position"] = plots.loops_vs_position(result["loops_by_position"], out / "loops_vs_position.png")
    cs = result["cos_sample"]
    if cs["matrix"] is not None:
        figs["cos_sample_heatmap"] = plots.cos_sample_heatmap(cs["matrix"], cs["layer"], out / "cos_sample_heatmap.png")
    if result["cos_by_position"] is not None:
        figs["cos_layers_positions"] = plots.cos_layers_positions(result["cos_by_position"],
                                                                  out / "cos_layers_positions.png")
        figs["cos_per_layer"] = plots.cos_per_layer(layers, out / "cos_per_layer.png")
    wc = result["word_cloud"]
    if wc["low"] or wc["high"]:
        figs["wordcloud_low_lambda"] = plots.word_cloud(wc["low"], f"layer {wc['layer']}: low λ (many loops)",
                                                        out / "wordcloud_low_lambda.png", "winter")
        figs["wordcloud_high_lambda"] = plots.word_cloud(wc["high"], f"layer {wc['layer']}: high λ (few loops)",
                                                         out / "wordcloud_high_lambda.png", "Dark2")
    if result["loop_cap_sweep"]:
        figs["loop_cap_sweep"] = plots.loop_cap_sweep(result["loop_cap_sweep"], out / "loop_cap_sweep.png")
    return figs
