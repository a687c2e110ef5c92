"""Log-likelihood scoring of (context, continuation) requests, and ``evaluate_tasks`` on top of it.

Two backends, same numbers:
* ``VersatileLM`` — packed: a context is run ONCE for all of its choices. One packed "group" is
  [context, choice_1[:-1], choice_2[:-1], ...]; each choice's tokens get the positions they would have after the
  context and attend to the context and to themselves only (a block mask), so choice i's logits equal those of the
  plain sequence context + choice_i. Groups are packed into rows, and the FFN runs on real tokens only, so the
  layers' loop statistics (``model.ffn_stats()``) count exactly the tokens a per-sequence evaluation would need
  after prefix sharing — no padding. Logits are computed only where a continuation token is scored.
* any other causal LM (Hugging Face: ``model(input_ids).logits``) — one row per request (context + choice),
  sorted by length and right-padded (padding after the real tokens cannot change them under causal attention).

Sequences longer than the model's window are truncated from the left (the context first), as OLMES does.
The first continuation token is predicted by the last context token; an empty context is replaced by EOS.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..console import progress as show_progress
from ..ffn.control import FFNControl
from ..model import VersatileLM
from .tasks import TASKS, doc_predictions, load_task, task_metrics

DEFAULT_ROW_TOKENS = 1024  # packed row budget (a longer group gets a row of its own)


# ----------------------------------------------------------------------------------------------- tokenizer


class HFTokenizerView:
    """A Hugging Face (transformers) tokenizer seen through the three things scoring needs."""

    def __init__(self, tok):
        self.tok = tok
        self.name = getattr(tok, "name_or_path", type(tok).__name__)
        self.eos_id = tok.eos_token_id if tok.eos_token_id is not None else 0
        self.vocab_size = len(tok)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)  # OLMES / lm-eval: no BOS unless asked

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids)


def as_tokenizer(tokenizer):
    """``versatileffn.tokenizer.Tokenizer`` as is; a transformers tokenizer wrapped."""
    if hasattr(tokenizer, "eos_id") and hasattr(tokenizer, "encode") and hasattr(tokenizer, "vocab_size"):
        return tokenizer
    if hasattr(tokenizer, "eos_token_id") and hasattr(tokenizer, "encode"):
        return HFTokenizerView(tokenizer)
    raise TypeError(f"unsupported tokenizer type {type(tokenizer).__name__}; pass a versatileffn Tokenizer "
                    "(versatileffn.tokenizer.load_tokenizer) or a transformers tokenizer")


def model_vocab_size(model) -> int:
    """Rows of the output head (``get_output_embeddings``, which our LM has as transformers models do)."""
    emb = model.get_output_embeddings()
    return emb.weight.shape[0] if emb is not None else int(model.config.vocab_size)


def model_max_len(model) -> int:
    """The model's window from its config (ours: max_seq_len; transformers' names otherwise), else 2048."""
    cfg = getattr(model, "config", None)
    for key in ("max_seq_len", "max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def check_tokenizer_matches(model, tok) -> None:
    mv = model_vocab_size(model)
    if tok.vocab_size > mv:
        raise ValueError(f"tokenizer {getattr(tok, 'name', '?')!r} has {tok.vocab_size} entries but the model's "
                         f"vocabulary has {mv}: this tokenizer does not belong to this model")


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def _autocast(device: torch.device):
    """bf16 autocast on GPU (the paper's precision); plain fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------- requests


@dataclass
class Group:
    """One context and the continuations scored after it; ``keys`` index the caller's request list."""

    ctx: list[int]
    conts: list[list[int]]
    keys: list[int]

    def __len__(self) -> int:
        return len(self.ctx) + sum(len(c) - 1 for c in self.conts)


@dataclass
class Score:
    logprob: float   # sum of log p(continuation token | everything before it)
    n_tokens: int    # continuation tokens scored
    is_greedy: bool  # every continuation token was the argmax (lm-eval's second return value)
    truncated: bool  # context (or continuation) was cut from the left to fit the model's window


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
    mask_b1tt: torch.Tensor     # True = may attend
    valid_bt: torch.Tensor      # real tokens (the FFN runs on these only)
    score_b: torch.Tensor       # row of each scored token
    score_t: torch.Tensor       # position (in the row) whose logits predict it
    target: torch.Tensor        # the scored token id
    score_key: list[int]        # request it belongs to


def make_packed_batch(rows: list[list[Group]]) -> PackedBatch:
    T = max(sum(len(g) for g in row) for row in rows)
    B = len(rows)
    ids = torch.zeros(B, T, dtype=torch.long)
    pos = torch.zeros(B, T, dtype=torch.long)
    group_id = torch.full((B, T), -1, dtype=torch.long)
    branch = torch.zeros(B, T, dtype=torch.long)  # 0 = context, i + 1 = continuation i
    sb, st, tgt, keys = [], [], [], []
    for b, row in enumerate(rows):
        o = 0
        for gi, g in enumerate(row):
            n = len(g.ctx)
            ids[b, o:o + n] = torch.tensor(g.ctx)
            pos[b, o:o + n] = torch.arange(n)
            group_id[b, o:o + n] = gi
            last_ctx = o + n - 1
            o += n
            for i, (cont, key) in enumerate(zip(g.conts, g.keys)):
                m = len(cont) - 1  # inputs: all but the last continuation token
                if m:
                    ids[b, o:o + m] = torch.tensor(cont[:-1])
                    pos[b, o:o + m] = torch.arange(n, n + m)
                    group_id[b, o:o + m] = gi
                    branch[b, o:o + m] = i + 1
                predictors = [last_ctx] + list(range(o, o + m))
                sb += [b] * len(cont)
                st += predictors
                tgt += cont
                keys += [key] * len(cont)
                o += m
    row_idx = torch.arange(T)
    causal = row_idx[None, :] <= row_idx[:, None]                               # key index <= query index
    same_group = (group_id[:, :, None] == group_id[:, None, :]) & (group_id[:, :, None] >= 0)
    same_branch = (branch[:, None, :] == 0) | (branch[:, None, :] == branch[:, :, None])
    mask = (same_group & same_branch & causal) | torch.eye(T, dtype=torch.bool)  # padding attends to itself
    return PackedBatch(ids, pos, mask[:, None], group_id >= 0, torch.tensor(sb), torch.tensor(st),
                       torch.tensor(tgt), keys)


# ----------------------------------------------------------------------------------------------- forwards


@torch.no_grad()
def packed_logprobs(model: VersatileLM, batch: PackedBatch, device: torch.device
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of every scored token and whether it was the argmax, for one packed batch (the model's packed
    forward: per-token positions, block mask, FFN on real tokens only, logits only where a token is scored)."""
    out = model(batch.ids_bt.to(device), positions=batch.pos_bt.to(device), attn_mask=batch.mask_b1tt.to(device),
                token_mask=batch.valid_bt.to(device), logits_at=(batch.score_b.to(device), batch.score_t.to(device)))
    return _target_logprobs(out.logits.float(), batch.target.to(device))


def _target_logprobs(logits_nv: torch.Tensor, target_n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(target) = logit - logsumexp (no full log-softmax tensor) and whether target is the argmax."""
    picked_n = logits_nv.gather(-1, target_n[:, None])[:, 0]
    return picked_n - torch.logsumexp(logits_nv, dim=-1), picked_n >= logits_nv.max(-1).values


@torch.no_grad()
def rows_logprobs(model, rows: list[tuple[list[int], list[int]]], device: torch.device
                  ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One right-padded row per (ctx, cont): (log-probs, is-argmax) of each continuation token."""
    T = max(len(c) + len(k) - 1 for c, k in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    for b, (ctx, cont) in enumerate(rows):
        seq = ctx + cont[:-1]
        ids[b, :len(seq)] = torch.tensor(seq)
    logits = model(ids.to(device)).logits.float()
    out = []
    for b, (ctx, cont) in enumerate(rows):
        lg = logits[b, len(ctx) - 1:len(ctx) + len(cont) - 1]
        tgt = torch.tensor(cont, device=device)
        out.append(_target_logprobs(lg, tgt))
    return out


# ----------------------------------------------------------------------------------------------- scoring


@dataclass
class Throughput:
    tokens: int = 0       # tokens run through the model (after prefix sharing, no padding)
    seconds: float = 0.0  # wall time of the forwards (GPU synchronised)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {"tokens": self.tokens, "seconds": self.seconds, "tokens_per_s": self.tokens_per_s}


def score_requests(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 16, device=None,
                   progress: bool = False, desc: str = "score", throughput: Throughput | None = None,
                   row_tokens: int = DEFAULT_ROW_TOKENS) -> list[Score]:
    """Summed log-likelihood of each continuation given its context (strings), batched.

    Context and continuation are tokenized separately and concatenated (as OLMo's evaluator does; the
    continuations start with a space); an empty context becomes [EOS].
    batch_size: packed rows (VersatileLM) or requests (other models) per forward.
    """
    tok = as_tokenizer(tokenizer)
    check_tokenizer_matches(model, tok)
    ctx_cache: dict[str, list[int]] = {}

    def enc_ctx(text: str) -> list[int]:
        if text not in ctx_cache:
            ctx_cache[text] = tok.encode(text) or [tok.eos_id]
        return ctx_cache[text]

    pairs_tok = [(enc_ctx(c), tok.encode(k)) for c, k in pairs]
    return score_token_requests(model, pairs_tok, batch_size, device, progress, desc, throughput, row_tokens)


def score_token_requests(model, pairs_tok: list[tuple[list[int], list[int]]], batch_size: int = 16, device=None,
                         progress: bool = False, desc: str = "score", throughput: Throughput | None = None,
                         row_tokens: int = DEFAULT_ROW_TOKENS) -> list[Score]:
    """``score_requests`` on token ids: (context ids (non-empty), continuation ids (non-empty)) pairs."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    if any(not c for c, _ in pairs_tok):
        raise ValueError("every request needs at least one context token (use [EOS] for an empty context)")
    device = torch.device(device) if device is not None else model_device(model)
    throughput = throughput if throughput is not None else Throughput()
    max_len = model_max_len(model)
    groups, truncated = build_groups(pairs_tok, max_len, row_tokens)
    n = len(pairs_tok)
    lp_sum, n_tok, greedy = [0.0] * n, [0] * n, [True] * n
    was_training = model.training
    model.eval()
    try:
        if isinstance(model, VersatileLM):  # the packed forward (positions, block mask, real-token FFN) is ours
            rows = pack_rows(groups, max(row_tokens, 1))
            batches = [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
            for chunk in show_progress(batches, desc=desc, enabled=progress, leave=False):
                batch = make_packed_batch(chunk)
                _sync(device)
                t0 = time.perf_counter()
                with _autocast(device):
                    lp, hit = packed_logprobs(model, batch, device)
                _sync(device)
                throughput.seconds += time.perf_counter() - t0
                throughput.tokens += int(batch.valid_bt.sum())
                for key, v, h in zip(batch.score_key, lp.tolist(), hit.tolist()):
                    lp_sum[key] += v
                    n_tok[key] += 1
                    greedy[key] = greedy[key] and h
        else:
            reqs = [(g.ctx, cont, key) for g in groups for cont, key in zip(g.conts, g.keys)]
            reqs.sort(key=lambda r: len(r[0]) + len(r[1]), reverse=True)
            batches = [reqs[i:i + batch_size] for i in range(0, len(reqs), batch_size)]
            for chunk in show_progress(batches, desc=desc, enabled=progress, leave=False):
                _sync(device)
                t0 = time.perf_counter()
                with _autocast(device):
                    res = rows_logprobs(model, [(c, k) for c, k, _ in chunk], device)
                _sync(device)
                throughput.seconds += time.perf_counter() - t0
                throughput.tokens += sum(len(c) + len(k) - 1 for c, k, _ in chunk)
                for (_, _, key), (lp, hit) in zip(chunk, res):
                    lp_sum[key] = float(lp.sum())
                    n_tok[key] = int(lp.numel())
                    greedy[key] = bool(hit.all())
    finally:
        model.train(was_training)
    return [Score(lp_sum[i], n_tok[i], greedy[i], truncated[i]) for i in range(n)]


def evaluate_tasks(model, tokenizer, tasks=None, limit: int | None = None, batch_size: int = 16, device=None,
                   progress: bool = True, uncond: bool | None = None) -> dict:
    """Zero-shot OLMES evaluation (ranked classification) on the given tasks (default: the paper's 8).

    Returns {"tasks": {task: {"acc", "acc_per_token", "acc_per_char", "acc_per_byte", ["acc_uncond"],
    "primary_metric", "primary", "n", "n_total", "n_truncated", "tokens_per_s"}}, "average": mean primary,
    "throughput": {...}, "ffn_stats": {task: per-layer stats} (our LM and converted HF models)}. Accuracies are fractions.
    """
    names = list(TASKS if tasks is None else ([tasks] if isinstance(tasks, str) else tasks))
    if not names:
        raise ValueError("no tasks given")
    if device is not None:
        model.to(device)
    device = model_device(model)
    tok = as_tokenizer(tokenizer)
    check_tokenizer_matches(model, tok)
    loaded = [load_task(n, limit=limit, uncond=uncond) for n in names]  # fail fast on a bad name
    out: dict = {"tasks": {}, "ffn_stats": {}}
    total = Throughput()
    for task in loaded:
        pairs: list[tuple[str, str]] = []
        for d in task.docs:
            pairs += list(zip(d.contexts, d.continuations))
            if d.uncond_contexts is not None:
                pairs += list(zip(d.uncond_contexts, d.continuations))
        if isinstance(model, FFNControl):  # our LM and converted HF models: per-task FFN statistics
            model.reset_ffn_stats()
        tp = Throughput()
        scores = score_requests(model, tok, pairs, batch_size=batch_size, device=device, progress=progress,
                                desc=task.name, throughput=tp)
        preds, i = [], 0
        for d in task.docs:
            k = len(d.continuations)
            cond = scores[i:i + k]
            i += k
            unc = None
            if d.uncond_contexts is not None:
                unc = [s.logprob for s in scores[i:i + k]]
                i += k
            preds.append(doc_predictions(d, [s.logprob for s in cond], [s.n_tokens for s in cond], unc))
        metrics = task_metrics(task, preds)
        metrics["n_truncated"] = sum(s.truncated for s in scores)
        metrics["tokens_per_s"] = tp.tokens_per_s
        out["tasks"][task.name] = metrics
        if isinstance(model, FFNControl):
            out["ffn_stats"][task.name] = model.ffn_stats()
        total.tokens += tp.tokens
        total.seconds += tp.seconds
    out["average"] = sum(m["primary"] for m in out["tasks"].values()) / len(out["tasks"])
    out["throughput"] = total.as_dict()
    return out
