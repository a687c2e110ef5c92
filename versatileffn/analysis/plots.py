"""The pictures. matplotlib's object API with the Agg canvas (no pyplot, no global backend switch, no display);
word clouds with the ``wordcloud`` package and the font it ships (DroidSansMono), so everything works offline."""
from __future__ import annotations

from pathlib import Path

import numpy as np

ANALYSIS_EXTRA = "pip install 'versatileffn[analysis]'"


def require_plotting() -> None:
    """Fail before any work when the analysis extra is missing. matplotlib and wordcloud are imported lazily so
    that ``import versatileffn.analysis`` (and the whole CLI) keeps working without them."""
    for name in ("matplotlib", "wordcloud"):
        try:
            __import__(name)
        except ImportError as exc:
            raise ImportError(f"the pictures need {name} (the analysis extra): {ANALYSIS_EXTRA}") from exc


def _figure(width: float = 7.0, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _layer_labels(layers: list[dict]) -> list[str]:
    return [str(r["layer"]) for r in layers]


def bin_positions(values_lt: np.ndarray, max_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Average [n_layers, T] values over at most ``max_bins`` equal position bins; returns (bin starts, values)."""
    values_lt = np.asarray(values_lt, dtype=np.float64)
    T = values_lt.shape[1]
    n_bins = min(T, max_bins)
    edges = np.linspace(0, T, n_bins + 1).astype(int)
    binned = np.stack([values_lt[:, a:b].mean(axis=1) for a, b in zip(edges[:-1], edges[1:])], axis=1)
    return edges[:-1], binned


def loops_per_layer(layers: list[dict], path: Path) -> Path:
    """Fig. 4: average executed loops per layer."""
    fig = _figure()
    ax = fig.add_subplot()
    means = [r.get("mean_loops", 0.0) for r in layers]
    bars = ax.bar(range(len(layers)), means, color="#3b6ea8")
    ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    max_loops = max(r["max_loops"] for r in layers)
    ax.axhline(max_loops, color="grey", ls="--", lw=1, label=f"L_max = {max_loops}")
    ax.set_xticks(range(len(layers)), _layer_labels(layers))
    ax.set(xlabel="layer", ylabel="average executed loops", ylim=(0, max_loops + 0.5),
           title="Average executed loops per layer")
    ax.legend(loc="upper left")
    return _save(fig, path)


def _layer_heatmap(fig, ax, matrix: np.ndarray, xlabels: list[str], ylabels: list[str], cbar_label: str,
                   annotate: bool, fmt: str = "{:.2f}", **kw) -> None:
    im = ax.imshow(matrix, aspect="auto", **kw)
    ax.set_xticks(range(len(xlabels)), xlabels)
    ax.set_yticks(range(len(ylabels)), ylabels)
    fig.colorbar(im, ax=ax, label=cbar_label)
    if annotate and matrix.size <= 400:
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7,
                    color="white" if v > 0.6 * np.nanmax(matrix) else "black")


def loop_histogram(layers: list[dict], path: Path) -> Path:
    """Share of tokens executing exactly l loops, per layer."""
    max_loops = max(r["max_loops"] for r in layers)
    m = np.zeros((len(layers), max_loops))
    for i, r in enumerate(layers):
        frac = r.get("loop_fraction", [])
        m[i, :len(frac)] = frac
    fig = _figure(6.5, 0.5 * len(layers) + 2.0)
    ax = fig.add_subplot()
    _layer_heatmap(fig, ax, m, [str(l) for l in range(1, max_loops + 1)], _layer_labels(layers),
                   "share of tokens", True, cmap="Blues", vmin=0, vmax=1)
    ax.set(xlabel="executed loops", ylabel="layer", title="Loop histogram per layer")
    return _save(fig, path)


def expert_load(layers: list[dict], path: Path) -> Path:
    """Share of the executed top-K assignments each virtual expert receives, per layer (balanced = 1/N)."""
    rows = [r.get("expert_load") or [] for r in layers]
    n_experts = max(len(x) for x in rows) if rows else 0
    m = np.full((len(layers), max(n_experts, 1)), np.nan)
    for i, x in enumerate(rows):
        m[i, :len(x)] = x
    fig = _figure(6.5, 0.5 * len(layers) + 2.0)
    ax = fig.add_subplot()
    _layer_heatmap(fig, ax, m, [str(e) for e in range(m.shape[1])], _layer_labels(layers), "share of assignments",
                   True, cmap="Oranges", vmin=0)
    ax.set(xlabel="virtual expert", ylabel="layer",
           title=f"Virtual-expert load per layer (balanced = {1 / max(n_experts, 1):.3f})")
    return _save(fig, path)


def lambda_distribution(layers: list[dict], path: Path) -> Path:
    """Share of tokens at each gate value lambda, per layer (stacked), with the mean lambda marked."""
    values = sorted({float(v) for r in layers for v in (r.get("lambda_histogram") or {})})
    fig = _figure(7.0, 0.4 * len(layers) + 2.2)
    ax = fig.add_subplot()
    left = np.zeros(len(layers))
    colors = [f"C{i % 10}" for i in range(len(values))]
    for v, color in zip(values, colors):
        share = []
        for r in layers:
            hist = r.get("lambda_histogram") or {}
            total = sum(hist.values())
            share.append(hist.get(f"{v:g}", 0) / total if total else 0.0)
        ax.barh(range(len(layers)), share, left=left, color=color, label=f"λ = {v:g}")
        left += np.asarray(share)
    means = [r.get("mean_lambda") for r in layers]
    ax.set_yticks(range(len(layers)), [f"{r['layer']}\nmean λ {m:.2f}" if m is not None else str(r["layer"])
                                       for r, m in zip(layers, means)], fontsize=8)
    ax.set(xlabel="share of tokens", ylabel="layer", xlim=(0, 1), title="Gate λ distribution per layer")
    ax.invert_yaxis()
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def loops_vs_position(loops_lt: list[list[float]], path: Path, max_bins: int = 64) -> Path:
    """Mean executed loops along the sequence, one line per layer and the average over layers."""
    starts, binned = bin_positions(np.asarray(loops_lt), max_bins)
    fig = _figure()
    ax = fig.add_subplot()
    for i, line in enumerate(binned):
        ax.plot(starts, line, lw=1, alpha=0.7, label=f"layer {i}")
    ax.plot(starts, binned.mean(axis=0), color="black", lw=2.2, label="all layers")
    ax.set(xlabel="position in sequence (bin start)", ylabel="mean executed loops",
           title="Executed loops vs sequence position")
    ax.legend(fontsize=6, ncol=2 if len(binned) > 8 else 1)
    return _save(fig, path)


def cos_sample_heatmap(matrix: list[list[float]], layer: int, path: Path) -> Path:
    """Fig. 5 (paper style): cos(Y_width at position i, Y_depth at position j) for one sample at one layer."""
    m = np.asarray(matrix)
    fig = _figure(5.8, 5.0)
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap="viridis", vmin=min(0.0, float(m.min())), vmax=1.0)
    fig.colorbar(im, ax=ax, label="cosine similarity")
    ax.set(xlabel="position j (depth path output)", ylabel="position i (width path output)",
           title=f"Width vs depth outputs, layer {layer}, one sample")
    return _save(fig, path)


def cos_layers_positions(cos_lt: list[list[float]], path: Path, max_bins: int = 128) -> Path:
    """cos(Y_width, Y_depth) of the same token, mean over sequences: layers x positions."""
    starts, binned = bin_positions(np.asarray(cos_lt), max_bins)
    fig = _figure(8.0, 0.35 * len(binned) + 2.2)
    ax = fig.add_subplot()
    im = ax.imshow(binned, aspect="auto", cmap="viridis", vmin=min(0.0, float(binned.min())), vmax=1.0,
                   extent=(0, starts[-1] + (starts[1] - starts[0] if len(starts) > 1 else 1), len(binned) - 0.5, -0.5))
    fig.colorbar(im, ax=ax, label="cosine similarity")
    ax.set_yticks(range(len(binned)), [str(i) for i in range(len(binned))])
    ax.set(xlabel="position in sequence", ylabel="layer",
           title="Width vs depth output, same token (mean over sequences)")
    return _save(fig, path)


def cos_per_layer(layers: list[dict], path: Path) -> Path:
    """Per-layer mean cosine of the branch outputs and of the branch updates (output minus the residual H)."""
    fig = _figure()
    ax = fig.add_subplot()
    x = np.arange(len(layers))
    out = [np.nan if r.get("mean_cos_width_depth") is None else r["mean_cos_width_depth"] for r in layers]
    upd = [np.nan if r.get("mean_cos_width_depth_update") is None else r["mean_cos_width_depth_update"] for r in layers]
    for offset, values, label in ((-0.2, out, "outputs Y_width vs Y_depth (include the residual H)"),
                                  (0.2, upd, "updates Y_width - H vs Y_depth - H")):
        bars = ax.bar(x + offset, values, width=0.4, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    ax.set_xticks(x, _layer_labels(layers))
    ax.set(xlabel="layer", ylabel="mean cosine similarity (same token)",
           ylim=(min(0.0, np.nanmin(upd + out + [0.0])), 1.3), title="Width vs depth path similarity per layer")
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    return _save(fig, path)


def word_cloud(entries: list[dict], title: str, path: Path, colormap: str, seed: int = 0) -> Path:
    """Word cloud of token texts weighted by their frequency (``entries`` from token_lambda_ranking)."""
    from wordcloud import WordCloud

    freqs = {e["token"]: e["count"] for e in entries}
    fig = _figure(6.0, 3.6)
    ax = fig.add_subplot()
    if freqs:
        wc = WordCloud(width=900, height=500, background_color="white", colormap=colormap, random_state=seed,
                       prefer_horizontal=0.9, collocations=False).generate_from_frequencies(freqs)
        ax.imshow(wc.to_array(), interpolation="bilinear")
    else:
        ax.text(0.5, 0.5, "no token seen often enough", ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def _label_points(ax, xs: list[float], ys: list[float], labels: list[str]) -> None:
    """Label each distinct point with its caps; caps that change nothing land on one point and share a label.
    Labels alternate above / below so that neighbouring points (e.g. caps 3 and 4) do not overprint."""
    points: dict[tuple[float, float], list[str]] = {}
    for x, y, lab in zip(xs, ys, labels):
        points.setdefault((x, y), []).append(lab)
    for n, ((x, y), labs) in enumerate(sorted(points.items())):
        ax.annotate("cap " + ", ".join(labs), (x, y), textcoords="offset points",
                    xytext=(4, 6) if n % 2 == 0 else (4, -13), fontsize=7)


def loop_cap_sweep(rows: list[dict], path: Path) -> Path:
    """Compute/quality trade-off: validation loss (and accuracy) against executed FFN FLOPs per token.

    Accuracy is drawn in percent with +-1 binomial standard error bars when the number of questions is known,
    and its y-range spans at least those bars: a one-question difference must not look like a trend."""
    has_acc = any("accuracy" in r for r in rows)
    fig = _figure(10.0 if has_acc else 6.0, 4.0)
    axes = [fig.add_subplot(1, 2 if has_acc else 1, i + 1) for i in range(2 if has_acc else 1)]
    flops = [r["ffn_flops_per_token"] / 1e6 for r in rows]
    labels = ["none" if r["cap"] is None else str(r["cap"]) for r in rows]
    loss = [r.get("val_loss", np.nan) for r in rows]
    ax = axes[0]
    ax.plot(flops, loss, "o-", color="#3b6ea8")
    _label_points(ax, flops, loss, labels)
    ax.ticklabel_format(useOffset=False)
    ax.set(xlabel="executed FFN MFLOPs per token", ylabel="loss on the analysed tokens (nats / token)",
           title="Loss vs loop cap")
    if has_acc:
        ax = axes[1]
        acc = [100 * r.get("accuracy", np.nan) for r in rows]
        err = [100 * r["accuracy_stderr"] if r.get("accuracy_stderr") is not None else np.nan for r in rows]
        ax.errorbar(flops, acc, yerr=None if np.all(np.isnan(err)) else err, fmt="o-", color="#c0504d", capsize=3)
        _label_points(ax, flops, acc, labels)
        lo, hi = np.nanmin(np.asarray(acc) - np.nan_to_num(err)), np.nanmax(np.asarray(acc) + np.nan_to_num(err))
        pad = max(1.0, 0.15 * (hi - lo))
        ax.set_ylim(lo - pad, hi + pad)
        n = rows[0].get("task_examples")
        what = f"{', '.join(n)}; {sum(n.values())} questions" if n else ", ".join(rows[0].get("tasks", {}))
        ax.set(xlabel="executed FFN MFLOPs per token", ylabel="accuracy (%)",
               title=f"Benchmark accuracy vs loop cap\n({what}; bars: ±1 std. error)")
        ax.title.set_fontsize(10)
    return _save(fig, path)
