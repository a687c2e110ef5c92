"""Language-model metrics on a prepared token split: loss, perplexity, bits per byte, tokens/s."""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from .scoring import _autocast, _sync, model_device


@torch.no_grad()
def validation_metrics(model, tokens, seq_len: int, batch_size: int = 8, device=None, max_tokens: int | None = None,
                       n_bytes: int | None = None) -> dict:
    """Mean next-token cross-entropy over non-overlapping windows of ``seq_len`` inputs.

    Window i feeds tokens[i*seq_len : (i+1)*seq_len] and predicts the next token at every position, so every
    token but the first is predicted exactly once (the last window may be shorter). ``max_tokens`` caps the
    number of predicted tokens. bpb = total nats / ln 2 / bytes, with bytes = n_bytes (the split's UTF-8 size)
    scaled by the share of the split's tokens that were predicted (exact for a full split); None without n_bytes.
    """
    if not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be an integer >= 1; got {seq_len!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or len(tokens) < 2:
        raise ValueError(f"tokens must be a 1-D array of at least 2 token ids; got shape {tokens.shape}")
    if device is not None:
        model.to(device)
    device = model_device(model)
    n_pred = len(tokens) - 1 if max_tokens is None else min(int(max_tokens), len(tokens) - 1)
    if n_pred < 1:
        raise ValueError(f"max_tokens must be >= 1; got {max_tokens!r}")
    starts = list(range(0, n_pred, seq_len))
    was_training = model.training
    model.eval()
    nll, count, seconds = 0.0, 0, 0.0
    try:
        for i in range(0, len(starts), batch_size):
            chunk = starts[i:i + batch_size]
            lens = [min(seq_len, n_pred - s) for s in chunk]
            T = max(lens)
            x = torch.zeros(len(chunk), T, dtype=torch.long)
            y = torch.full((len(chunk), T), -100, dtype=torch.long)
            for b, (s, n) in enumerate(zip(chunk, lens)):
                x[b, :n] = torch.from_numpy(tokens[s:s + n].astype(np.int64))
                y[b, :n] = torch.from_numpy(tokens[s + 1:s + 1 + n].astype(np.int64))
            x, y = x.to(device), y.to(device)
            _sync(device)
            t0 = time.perf_counter()
            with _autocast(device):
                logits = model(x).logits
            _sync(device)
            seconds += time.perf_counter() - t0
            nll += float(F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                                         ignore_index=-100, reduction="sum"))
            count += sum(lens)
    finally:
        model.train(was_training)
    loss = nll / count
    bpb = None
    if n_bytes is not None:
        bytes_covered = n_bytes * count / (len(tokens) - 1)
        bpb = nll / math.log(2) / bytes_covered
    return {"loss": loss, "ppl": math.exp(loss), "bpb": bpb, "tokens": count,
            "tokens_per_s": count / seconds if seconds > 0 else 0.0}
