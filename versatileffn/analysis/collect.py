"""One instrumented inference pass: the layers' own statistics plus the per-token values behind Sec. 4.3.

A forward pre-hook on every VersatileFFN captures the layer's INPUT H [B, T, d] and evaluates the layer's
own pieces on it (``_predicted_loops``, ``hidden``, ``_width``, ``step``), so nothing of the layer's math is
re-implemented here; the model's real forward then runs unchanged and fills ``layer.stats``.

Per token and layer we keep: l_hat (executed loops, after any inference loop cap), lambda (Eq. 13 at
inference: (L_max - l_hat) / L_max; 0.5 for the ungated ablation), and the cosine similarity between the two
branch outputs Y_width (Eq. 8) and Y_depth = H^(l_hat) (the state the token exits the depth path with).
Both outputs contain the residual H (Eq. 2), so we also keep the cosine of the branch updates Y - H, which
shows the difference between the branches without the shared residual. In gated inference the width path is
executed only for tokens with lambda > 0; here it is evaluated for every token so every position has a value.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..ffn import VersatileFFN
from ..eval.scoring import model_device
from ..ffn.control import reset_ffn_stats
from ..ffn.fusion import width_weight


def find_versatile_layers(model: torch.nn.Module) -> list[tuple[str, VersatileFFN]]:
    """(qualified name, module) of every VersatileFFN in ``model.modules()`` order — works for our LM and for
    any wrapper (e.g. a converted Hugging Face model) that holds VersatileFFN modules."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"expected a torch.nn.Module; got {type(model).__name__}")
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, VersatileFFN)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no VersatileFFN layers; the analysis needs a model whose FFN "
                         "kind is 'versatile' (or one of its ablations), e.g. trained with --ffn versatile or "
                         "converted with `versatileffn convert`")
    return layers


@torch.no_grad()
def token_quantities(layer: VersatileFFN, h_btd: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """Per-token l_hat, lambda, branch outputs and their cosine similarities for one layer input H [B, T, d].

    Returns [B, T] tensors ``loops``, ``lam``, ``cos_out``, ``cos_update`` (None where the layer's mode has no
    such quantity) and [B, T, d] ``y_width`` / ``y_depth``, on the layer's device.
    """
    B, T, d = h_btd.shape
    h_nd = h_btd.reshape(-1, d)
    a_nh = layer.hidden(h_nd)  # loop 1's activations, shared by both paths (as in the layer)
    loops_n = lam_n = y_depth = y_width = None
    if layer.uses_depth:
        L = layer.max_loops
        loops_n = layer._predicted_loops(h_nd)
        lam_n = width_weight(layer.mode, L, loops_n)  # Eq. 13 at inference; None without a fusion
        cur = h_nd + layer.project_out(a_nh)  # H^(1)
        y_depth = cur.clone()
        for loop in range(2, int(loops_n.max()) + 1):
            cur = layer.loop_step(cur)  # Eq. 9
            sel = loops_n == loop
            y_depth[sel] = cur[sel]
    if layer.uses_width:
        y_width, _, _ = layer._width(h_nd, a_nh)
    cos_out = cos_update = None
    if y_width is not None and y_depth is not None:
        cos_out = F.cosine_similarity(y_width.float(), y_depth.float(), dim=-1)
        cos_update = F.cosine_similarity((y_width - h_nd).float(), (y_depth - h_nd).float(), dim=-1)
    bt = lambda t: None if t is None else t.reshape(B, T, *t.shape[1:])  # noqa: E731
    return {"loops": bt(loops_n), "lam": bt(lam_n), "cos_out": bt(cos_out), "cos_update": bt(cos_update),
            "y_width": bt(y_width), "y_depth": bt(y_depth)}


@dataclass
class LayerTrace:
    """Everything collected for one VersatileFFN layer. Per-token arrays are [n_sequences, seq_len]."""

    index: int
    name: str
    mode: str
    max_loops: int
    n_experts: int
    top_k: int
    d_model: int
    d_hidden: int
    d_expert: int
    summary: dict = field(default_factory=dict)          # layer.stats.summary() after the pass
    width_tokens: float = 0.0                             # tokens that executed the width path (from stats)
    loops: np.ndarray | None = None
    lam: np.ndarray | None = None
    cos_out: np.ndarray | None = None
    cos_update: np.ndarray | None = None
    sample_width: np.ndarray | None = None               # [T, d] Y_width of the heatmap sample
    sample_depth: np.ndarray | None = None               # [T, d] Y_depth of the heatmap sample


def layer_trace(index: int, name: str, layer: VersatileFFN) -> LayerTrace:
    c = layer.config
    return LayerTrace(index=index, name=name, mode=layer.mode, max_loops=layer.max_loops, n_experts=layer.n_experts,
                      top_k=layer.top_k, d_model=layer.d_model, d_hidden=layer.d_hidden, d_expert=c.expert_dim)


def fill_from_stats(trace: LayerTrace, layer: VersatileFFN) -> None:
    """The layer's own accumulated statistics; width_tokens counts the tokens that ran the width path exactly
    (each contributes top_k expert assignments)."""
    trace.summary = layer.stats.summary()
    ec = layer.stats.expert_counts
    trace.width_tokens = float(ec.sum()) / layer.top_k if ec is not None else 0.0


def sequences(tokens: np.ndarray, seq_len: int, max_tokens: int | None = None) -> np.ndarray:
    """Cut a 1-D token stream into non-overlapping rows [n, seq_len] (a shorter stream gives one short row)."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be a 1-D array of token ids; got shape {tokens.shape}")
    if max_tokens is not None:
        if max_tokens < 2:
            raise ValueError(f"max_tokens must be >= 2; got {max_tokens}")
        tokens = tokens[:max_tokens]
    if len(tokens) < 2:
        raise ValueError(f"need at least 2 tokens to analyse; got {len(tokens)}")
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2; got {seq_len}")
    n = len(tokens) // seq_len
    if n == 0:
        return np.asarray(tokens, dtype=np.int64)[None, :]
    return np.asarray(tokens[: n * seq_len], dtype=np.int64).reshape(n, seq_len)


@torch.no_grad()
def collect(model: torch.nn.Module, tokens: np.ndarray, seq_len: int, batch_size: int = 8,
            max_tokens: int | None = None, sample_index: int = 0) -> tuple[list[LayerTrace], np.ndarray]:
    """Run the model (eval mode) over ``tokens`` cut into rows of ``seq_len`` and return (per-layer traces,
    token ids [n_sequences, seq_len]). Row ``sample_index`` keeps its full branch outputs for the heatmaps."""
    layers = find_versatile_layers(model)
    rows = sequences(tokens, seq_len, max_tokens)
    if not 0 <= sample_index < len(rows):
        raise ValueError(f"sample index {sample_index} is out of range: the data gives {len(rows)} sequence(s) "
                         f"of {rows.shape[1]} tokens")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    device = model_device(model)
    was_training = model.training
    model.eval()
    traces = [layer_trace(i, name, layer) for i, (name, layer) in enumerate(layers)]
    parts: list[dict[str, list]] = [{"loops": [], "lam": [], "cos_out": [], "cos_update": []} for _ in layers]
    batch_start = [0]

    def make_hook(i: int):
        def hook(module, args):
            q = token_quantities(module, args[0])
            for key in parts[i]:
                if q[key] is not None:
                    parts[i][key].append(q[key].cpu().numpy())
            row = sample_index - batch_start[0]
            if 0 <= row < args[0].shape[0]:  # only the heatmap sample's full outputs leave the device
                for key, attr in (("y_width", "sample_width"), ("y_depth", "sample_depth")):
                    if q[key] is not None:
                        setattr(traces[i], attr, q[key][row].float().cpu().numpy())
        return hook

    handles = [layer.register_forward_pre_hook(make_hook(i)) for i, (_, layer) in enumerate(layers)]
    try:
        reset_ffn_stats(model)
        for start in range(0, len(rows), batch_size):
            batch_start[0] = start
            ids = torch.from_numpy(rows[start:start + batch_size]).to(device)
            model(ids)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for trace, (_, layer), p in zip(traces, layers, parts):
        fill_from_stats(trace, layer)
        for key, chunks in p.items():
            if chunks:
                setattr(trace, key, np.concatenate(chunks, axis=0))
    return traces, rows
