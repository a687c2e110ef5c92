"""Batches from a packed token split, addressed by global sample index (no iterator state to save).

Training: the split is cut into non-overlapping windows of ``seq_len + 1`` tokens; each epoch visits them in
a fresh permutation seeded by (seed, epoch). Global sample i of the run is window ``perm_epoch[i % n]`` with
epoch = i // n. A step's global batch is samples [step * B, (step + 1) * B); rank r, micro-step m takes its
contiguous slice. So the data position is just the step number (exact resume), and a run on any number of
ranks sees the same global batch as a single process.
Validation: the first ``max_tokens`` tokens of the val split, as consecutive windows, in order.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError
from .tokens import load_tokens, read_index


class PackedTrainData:
    def __init__(self, data_dir, seq_len: int, seed: int = 0, split: str = "train"):
        self.tokens = load_tokens(data_dir, split)
        self.index = read_index(data_dir)
        self.seq_len = seq_len
        self.seed = seed
        self.n_windows = (len(self.tokens) - 1) // seq_len
        if self.n_windows < 1:
            raise UserError(f"split {split!r} of {data_dir} holds {len(self.tokens)} tokens, fewer than one "
                            f"training sequence of seq_len + 1 = {seq_len + 1}")
        self._perm_epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
            self._perm_epoch = epoch
        return self._perm

    def samples(self, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Global samples [start, start + count) -> (inputs [count, T], targets [count, T]) as int64."""
        rows = []
        for i in range(start, start + count):
            w = int(self._permutation(i // self.n_windows)[i % self.n_windows])
            rows.append(np.asarray(self.tokens[w * self.seq_len: w * self.seq_len + self.seq_len + 1], dtype=np.int64))
        arr = torch.from_numpy(np.stack(rows))
        return arr[:, :-1].contiguous(), arr[:, 1:].contiguous()

    def micro_batch(self, step: int, global_batch: int, rank: int, world: int, micro: int, micro_size: int):
        """Rank ``rank``'s ``micro``-th micro-batch of optimizer step ``step``."""
        per_rank = global_batch // world
        start = step * global_batch + rank * per_rank + micro * micro_size
        return self.samples(start, micro_size)


def check_token_range(data_dir, split: str, vocab_size: int, vocab_name: str = "the model's vocabulary",
                      chunk: int = 1 << 26) -> None:
    """UserError when ``split`` holds a token id >= ``vocab_size`` (a corrupt file, or data from another tokenizer):
    said when the data is opened, not as an IndexError in the middle of a step. Reads the split once, in chunks."""
    tokens = load_tokens(data_dir, split)
    for start in range(0, len(tokens), chunk):
        part = tokens[start:start + chunk]
        top = int(part.max())
        if top >= vocab_size:
            pos = start + int(np.argmax(part >= vocab_size))
            raise UserError(f"{data_dir}: split {split!r} holds token id {int(tokens[pos])} at position {pos}, but "
                            f"{vocab_name}={vocab_size}: the file is corrupt or was made with another tokenizer "
                            "(prepare the data again)")


def val_windows(data_dir, seq_len: int, max_tokens: int | None = None, split: str = "val") -> torch.Tensor:
    """Consecutive [n, seq_len + 1] windows from the start of the validation split (a fixed, ordered set)."""
    tokens = load_tokens(data_dir, split)
    n = (len(tokens) - 1) // seq_len
    if max_tokens is not None:
        n = min(n, max(1, max_tokens // seq_len))
    if n < 1:
        raise UserError(f"split {split!r} of {data_dir} holds {len(tokens)} tokens, fewer than one sequence of "
                        f"seq_len + 1 = {seq_len + 1}")
    rows = [np.asarray(tokens[i * seq_len: i * seq_len + seq_len + 1], dtype=np.int64) for i in range(n)]
    return torch.from_numpy(np.stack(rows))
