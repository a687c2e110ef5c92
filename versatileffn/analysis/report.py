"""The HTML report: one self-contained file (PNGs embedded as base64 data URIs, tables inline)."""
from __future__ import annotations

import base64
import html
from pathlib import Path


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" ' \
           f'data-file="{html.escape(path.name)}"><figcaption>{html.escape(alt)} ({html.escape(path.name)})' \
           f'</figcaption></figure>'


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return " / ".join(_fmt(x) for x in v)
    return html.escape(str(v))


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


SECTIONS = [  # (figure key, heading, what it shows)
    ("loops_per_layer", "Average executed loops per layer (paper Fig. 4)",
     "Mean number of depth-path loops the tokens executed at each VersatileFFN layer (eval mode: each token runs "
     "exactly its predicted l_hat, after any loop cap)."),
    ("loop_histogram", "Loop histogram per layer", "Share of tokens that executed exactly l loops."),
    ("lambda_distribution", "Gate λ per layer",
     "Share of tokens at each gate value λ = (L_max − l_hat) / L_max (Eq. 13 at inference) and the mean λ."),
    ("expert_load", "Virtual-expert load per layer",
     "Share of the executed top-K routing assignments each virtual expert received (tokens with λ = 0 skip the "
     "width path and are not counted)."),
    ("loops_vs_position", "Executed loops vs sequence position",
     "Mean executed loops at each position of the analysed sequences, per layer and averaged over layers."),
    ("cos_sample_heatmap", "Width vs depth outputs for one sample (paper Fig. 5)",
     "C[i, j] = cos(Y_width at position i, Y_depth at position j) at the chosen layer for one sequence: the "
     "diagonal compares the two branches on the same token; off-diagonal values show how aligned the feature "
     "spaces are. Y_width is Eq. 8 (evaluated for every token), Y_depth = H^(l_hat)."),
    ("cos_layers_positions", "Width vs depth output of the same token, layers × positions",
     "cos(Y_width, Y_depth) of each token, averaged over the analysed sequences."),
    ("cos_per_layer", "Width vs depth similarity per layer",
     "Mean cosine of the branch outputs (which share the residual H) and of the branch updates Y − H."),
    ("wordcloud_low_lambda", "Tokens with low λ (many loops) (paper Fig. 6, left)",
     "Token texts with the lowest mean λ at the chosen layer, sized by frequency."),
    ("wordcloud_high_lambda", "Tokens with high λ (few loops) (paper Fig. 6, right)",
     "Token texts with the highest mean λ at the chosen layer, sized by frequency."),
    ("loop_cap_sweep", "Compute / quality trade-off of the inference loop cap",
     "Loss on the analysed tokens (and benchmark accuracy when tasks are given, with ±1 binomial standard "
     "error bars) against the executed FFN FLOPs per token (paper Table 2 convention) for each inference "
     "loop cap."),
]


def render_html(result: dict, figures: dict[str, Path]) -> str:
    m, d = result["model"], result["data"]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>VersatileFFN analysis</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;"
        "text-align:right}th{background:#f2f2f2}img{max-width:100%}figure{margin:1em 0}"
        "figcaption{font-size:12px;color:#666}</style></head><body>",
        "<h1>VersatileFFN analysis</h1>",
        f"<p>Model <code>{html.escape(str(m['path']))}</code>: {m['versatile_layers']} VersatileFFN layers, "
        f"L_max = {m['max_loops']}, {m['n_experts']} virtual experts, top-{m['top_k']}, mode {html.escape(m['mode'])}."
        f" Data: {d['tokens']:,} tokens in {d['sequences']} sequence(s) of {d['seq_len']} "
        f"({html.escape(', '.join(s['path'] for s in d['sources']))}). Device: {html.escape(str(result['device']))}."
        " All numbers are in <code>analysis.json</code>.</p>",
    ]
    f = result["flops"]
    parts.append(f"<p>Executed FFN FLOPs per token: <b>{f['ffn_flops_per_token'] / 1e6:.3f}M</b> "
                 f"({f['ffn_flops_over_dense']:.3f}× the dense FFN's {f['dense_ffn_flops_per_token'] / 1e6:.3f}M)."
                 "</p>")
    layers = result["layers"]
    parts.append("<h2>Per-layer statistics</h2>")
    parts.append(_table(
        ["layer", "tokens", "mean loops", "loop shares (1..L_max)", "mean λ", "width-path share", "expert imbalance",
         "cos(Y_w, Y_d)", "cos(updates)", "FFN MFLOPs/token"],
        [[r["layer"], r["tokens"], r.get("mean_loops"), r.get("loop_fraction"), r.get("mean_lambda"),
          r["width_fraction"], r.get("expert_imbalance"), r["mean_cos_width_depth"],
          r["mean_cos_width_depth_update"], r["ffn_flops_per_token"] / 1e6] for r in layers]))
    for key, heading, text in SECTIONS:
        if key not in figures:
            continue
        parts.append(f"<h2>{html.escape(heading)}</h2><p>{html.escape(text)}</p>")
        parts.append(_img(figures[key], heading))
        if key == "wordcloud_high_lambda":
            wc = result["word_cloud"]
            note = "" if wc.get("distinct_lambda") else (" <b>All ranked texts have the same mean λ, so the "
                                                         "split into low and high is arbitrary.</b>")
            parts.append(f"<p>Layer {wc['layer']}; {wc['ranked']} token texts seen at least {wc.get('min_count')} "
                         f"times were ranked.{note}</p>")
            for side in ("low", "high"):
                parts.append(f"<h3>{'Lowest' if side == 'low' else 'Highest'} mean λ</h3>")
                parts.append(_table(["token", "count", "mean λ", "mean loops"],
                                    [[e["token"], e["count"], e["mean_lambda"], e["mean_loops"]]
                                     for e in wc[side][:30]]))
        if key == "loop_cap_sweep":
            sweep = result["loop_cap_sweep"]
            has_acc = any("accuracy" in r for r in sweep)
            header = ["loop cap", "val loss", "val ppl", "FFN MFLOPs/token", "× dense"]
            header += ["accuracy", "± std. error"] if has_acc else []
            parts.append(_table(header, [["none" if r["cap"] is None else r["cap"], r["val_loss"], r["val_ppl"],
                                          r["ffn_flops_per_token"] / 1e6, r["ffn_flops_over_dense"]]
                                         + ([r.get("accuracy"), r.get("accuracy_stderr")] if has_acc else [])
                                         for r in sweep]))
    parts.append("</body></html>")
    return "\n".join(parts)
