"""The static KV cache of ``VersatileLM``: preallocated buffers written in place at a device-side column."""
from __future__ import annotations

import torch


class KVCache:
    """A static KV cache: per-layer key/value buffers [B, kv_heads, max_len, head_dim], allocated once and written
    in place at a position held on the device, so a decode step has static shapes and no host read (one CUDA graph
    captures it; ``generation.py``).

    slot: [1] long on the device, the next buffer column to write (every row writes the same column); pad: [B]
    long, each row's left padding (batched prompts of different lengths): row b's token in column j sits at RoPE
    position j - pad[b] and never attends to columns < pad[b]. pos: the host's count of written columns, kept by
    eager forwards for bounds checks and the prefill's attention window; a replayed graph does not advance it (the
    decoder does: ``advance``)."""

    def __init__(self, config, batch: int, max_len: int, device, dtype,
                 pad: torch.Tensor | None = None):
        shape = (batch, config.kv_heads, max_len, config.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.slot = torch.zeros(1, dtype=torch.long, device=device)
        self.pad = torch.zeros(batch, dtype=torch.long, device=device)
        if pad is not None:
            self.pad.copy_(pad)
        self.pos = 0
        self.max_len = max_len

    def advance(self, n: int) -> None:
        """Count n columns written by replayed steps (the device slot moved inside the graph)."""
        self.pos += n

    def rewind(self, pos: int) -> None:
        """Write the next tokens at column ``pos`` again (a benchmark's repeated step)."""
        self.pos = pos
        self.slot.fill_(pos)

    def columns(self, T: int) -> torch.Tensor:
        """[T] long: the buffer columns the next T tokens write (slot .. slot + T - 1), on the device."""
        return self.slot + torch.arange(T, device=self.slot.device)

    def window(self, T: int) -> int:
        """How many columns the attention reads. A single-token step reads the whole buffer (a static shape the
        graph replays at any position, masked by ``attention_mask``); a longer chunk, never captured, only
        the columns written so far."""
        return self.max_len if T == 1 else self.pos + T

    def rope_positions(self, cols: torch.Tensor) -> torch.Tensor:
        """[B, T]: RoPE position of each row's token in these columns (left padding does not count)."""
        return (cols[None, :] - self.pad[:, None]).clamp_min(0)

    def attention_mask(self, cols: torch.Tensor, width: int) -> torch.Tensor:
        """[B, 1, T, width] True where the query in column cols[t] of row b may attend column j: causal, not the
        row's left padding; a padding query attends itself only (no empty row of softmax)."""
        j = torch.arange(width, device=cols.device)
        causal = j[None, :] <= cols[:, None]
        real = j[None, None, :] >= self.pad[:, None, None]
        return ((causal[None] & real) | (j[None, :] == cols[:, None])[None])[:, None]
