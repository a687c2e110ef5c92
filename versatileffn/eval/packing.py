"""Packing of (context, continuation) requests for the packed scorer: a context is run ONCE for all of its choices.

One packed "group" is [context, choice_1[:-1], choice_2[:-1], ...]; each choice's tokens get the positions they
would have after the context and attend to the context and to themselves only, so choice i's logits equal those
of the plain sequence context + choice_i. Groups are packed into rows of a batch. A batch carries the layout
(group and branch of every token), never a [T, T] mask: the model builds the mask on its device
(``VersatileLM.forward(packing=...)``). Everything here is host work, vectorised with numpy per batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..model import packed_attention_mask


@dataclass
class Group:
    """One context and the continuations scored after it; ``keys`` index the caller's request list."""

    ctx: list[int]
    conts: list[list[int]]
    keys: list[int]

    def __len__(self) -> int:
        return len(self.ctx) + sum(len(c) - 1 for c in self.conts)


def _fit(ctx: list[int], cont: list[int], max_len: int) -> tuple[list[int], list[int], bool]:
    """Left-truncate so that len(ctx) + len(cont) - 1 <= max_len, keeping >= 1 token of conditioning."""
    if len(ctx) + len(cont) - 1 <= max_len:
        return ctx, cont, False
    if len(cont) > max_len:  # the continuation alone does not fit: score only its last max_len tokens
        whole = ctx + cont
        return whole[-(max_len + 1):-max_len], cont[-max_len:], True
    return ctx[-(max_len - len(cont) + 1):], cont, True


def build_groups(pairs_tok: list[tuple[list[int], list[int]]], max_len: int, row_tokens: int
                 ) -> tuple[list[Group], list[bool]]:
    """Group requests by identical context token ids (in first-seen order), after left-truncation; a group
    larger than ``max(row_tokens, max_len)`` is split (each part repeats the context)."""
    by_ctx: dict[tuple[int, ...], Group] = {}
    truncated = [False] * len(pairs_tok)
    for key, (ctx, cont) in enumerate(pairs_tok):
        if not cont:
            raise ValueError("a continuation tokenized to zero tokens; nothing to score")
        ctx, cont, cut = _fit(ctx, cont, max_len)
        truncated[key] = cut
        g = by_ctx.setdefault(tuple(ctx), Group(ctx=ctx, conts=[], keys=[]))
        g.conts.append(cont)
        g.keys.append(key)
    cap = max(row_tokens, max_len)
    groups: list[Group] = []
    for g in by_ctx.values():
        part = Group(ctx=g.ctx, conts=[], keys=[])
        for cont, key in zip(g.conts, g.keys):
            if part.conts and len(part) + len(cont) - 1 > cap:
                groups.append(part)
                part = Group(ctx=g.ctx, conts=[], keys=[])
            part.conts.append(cont)
            part.keys.append(key)
        groups.append(part)
    return groups, truncated


def pack_rows(groups: list[Group], row_tokens: int) -> list[list[Group]]:
    """Longest groups first, next-fit into rows of ``row_tokens`` (a longer group gets its own row)."""
    rows: list[list[Group]] = []
    cur: list[Group] = []
    used = 0
    for g in sorted(groups, key=len, reverse=True):
        if cur and used + len(g) > row_tokens:
            rows.append(cur)
            cur, used = [], 0
        cur.append(g)
        used += len(g)
    if cur:
        rows.append(cur)
    return rows


@dataclass
class PackedBatch:
    ids_bt: torch.Tensor        # token ids (0 = padding)
    pos_bt: torch.Tensor        # RoPE positions (restart at 0 for every group)
    group_bt: torch.Tensor      # group of each token within its row (-1 = padding)
    branch_bt: torch.Tensor     # 0 = context, i + 1 = continuation i of the group
    valid_bt: torch.Tensor      # real tokens (the FFN runs on these only)
    score_b: torch.Tensor       # row of each scored token
    score_t: torch.Tensor       # position (in the row) whose logits predict it
    target: torch.Tensor        # the scored token id
    score_key: np.ndarray       # request it belongs to

    @property
    def mask_b1tt(self) -> torch.Tensor:
        """The attention mask the layout stands for (True = may attend)."""
        return packed_attention_mask(self.group_bt, self.branch_bt)

    @property
    def n_tokens(self) -> int:
        return int(self.valid_bt.sum())

    def pin_memory(self) -> "PackedBatch":
        """Page-locked copies, so that the copies to the GPU do not wait for it."""
        return PackedBatch(**{k: v.pin_memory() if isinstance(v, torch.Tensor) else v
                              for k, v in self.__dict__.items()})


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """concat(arange(n) for n in lengths)."""
    starts = np.cumsum(lengths) - lengths
    return np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(starts, lengths)


def make_packed_batch(rows: list[list[Group]]) -> PackedBatch:
    """The rows as tensors [B, T], T = the longest row (shorter rows padded after their tokens).

    A row is a run of segments (a context, or one continuation without its last token); one Python step per
    segment and per request, numpy for the tokens.
    """
    tokens: list[int] = []
    targets: list[int] = []
    seg = []    # (row, offset in row, length, group, branch, first position)
    reqs = []   # (row, offset of its segment, continuation length, last context offset, key)
    row_len = []
    for b, row in enumerate(rows):
        o = 0
        for gi, g in enumerate(row):
            n = len(g.ctx)
            tokens += g.ctx
            seg.append((b, o, n, gi, 0, 0))
            last_ctx = o + n - 1
            o += n
            for i, (cont, key) in enumerate(zip(g.conts, g.keys)):
                m = len(cont) - 1  # inputs: all but the last continuation token
                tokens += cont[:-1]
                targets += cont
                seg.append((b, o, m, gi, i + 1, n))
                reqs.append((b, o, m + 1, last_ctx, key))
                o += m
        row_len.append(o)
    B = len(rows)
    T = max(row_len)
    s = np.array(seg, dtype=np.int64).reshape(-1, 6)
    lens = s[:, 2]
    flat = np.repeat(s[:, 0] * T + s[:, 1], lens) + _ranges(lens)
    ids = np.zeros(B * T, dtype=np.int64)
    ids[flat] = tokens
    pos = np.zeros(B * T, dtype=np.int64)
    pos[flat] = np.repeat(s[:, 5], lens) + _ranges(lens)
    group = np.full(B * T, -1, dtype=np.int64)
    group[flat] = np.repeat(s[:, 3], lens)
    branch = np.zeros(B * T, dtype=np.int64)
    branch[flat] = np.repeat(s[:, 4], lens)
    r = np.array(reqs, dtype=np.int64).reshape(-1, 5)
    n_scored = r[:, 2]
    # continuation token j (>= 1) is predicted by input token j - 1 of its segment; token 0 by the last context token
    score_t = np.repeat(r[:, 1] - 1, n_scored) + _ranges(n_scored)
    score_t[np.cumsum(n_scored) - n_scored] = r[:, 3]

    def bt(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.reshape(B, T))

    return PackedBatch(bt(ids), bt(pos), bt(group), bt(branch), bt(group >= 0),
                       torch.from_numpy(np.repeat(r[:, 0], n_scored)), torch.from_numpy(score_t),
                       torch.tensor(targets, dtype=torch.long), np.repeat(r[:, 4], n_scored))
