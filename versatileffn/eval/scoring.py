"""Log-likelihood scoring of (context, continuation) requests, and ``evaluate_tasks`` on top of it.

Two backends, same numbers:
* ``VersatileLM`` — packed (``packing.py``): a context is run ONCE for all of its choices, groups packed into
  rows, the attention layout built on the device, the FFN on real tokens only, so the layers' loop statistics
  (``model.ffn_stats()``) count exactly the tokens a per-sequence evaluation would need after prefix sharing — no
  padding. Logits are computed only where a continuation token is scored. Batches go to the GPU without a host
  synchronisation; their results are read once per task.
* any other causal LM (Hugging Face: ``model(input_ids).logits``) — one row per request (context + choice),
  sorted by length and right-padded (padding after the real tokens cannot change them under causal attention).

Sequences longer than the model's window are truncated from the left (the context first), as OLMES does.
The first continuation token is predicted by the last context token; an empty context is replaced by EOS.
``evaluate_tasks`` prepares the next task (reading, tokenising in one batch, packing) on a worker thread while
the device scores the current one.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from ..console import progress as show_progress
from ..ffn.control import FFNControl
from ..model import VersatileLM
from .packing import PackedBatch, build_groups, make_packed_batch, pack_rows
from .tasks import TASKS, Task, doc_predictions, load_task, task_folder, task_metrics

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

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.tok(list(texts), add_special_tokens=False)["input_ids"]

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


def encode_texts(tok, texts: list[str]) -> dict[str, list[int]]:
    """Token ids of each distinct text, in one ``encode_batch`` call where the tokenizer has one (the Rust
    tokenizers encode a batch on every core)."""
    unique = list(dict.fromkeys(texts))
    batch = getattr(tok, "encode_batch", None)
    return dict(zip(unique, batch(unique) if batch is not None else [tok.encode(t) for t in unique]))


def tokenize_pairs(tok, pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """Context and continuation tokenized separately (as OLMo's evaluator does; the continuations start with a
    space); an empty context becomes [EOS]."""
    ids = encode_texts(tok, [t for pair in pairs for t in pair])
    return [(ids[c] or [tok.eos_id], ids[k]) for c, k in pairs]


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


# ----------------------------------------------------------------------------------------------- results


@dataclass
class Score:
    logprob: float   # sum of log p(continuation token | everything before it)
    n_tokens: int    # continuation tokens scored
    is_greedy: bool  # every continuation token was the argmax (lm-eval's second return value)
    truncated: bool  # context (or continuation) was cut from the left to fit the model's window


@dataclass
class Throughput:
    tokens: int = 0       # tokens run through the model (after prefix sharing, no padding)
    seconds: float = 0.0  # wall time from the first forward to the last result on the host

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {"tokens": self.tokens, "seconds": self.seconds, "tokens_per_s": self.tokens_per_s}


@dataclass
class Prepared:
    """Requests ready for the device: packed batches (our LM) or length-sorted request rows (other models)."""

    n: int
    truncated: list[bool]
    batches: list[PackedBatch] = field(default_factory=list)
    rows: list[list[tuple[list[int], list[int], int]]] = field(default_factory=list)


def prepare_requests(model, pairs_tok: list[tuple[list[int], list[int]]], batch_size: int = 16,
                     row_tokens: int = DEFAULT_ROW_TOKENS, pin: bool = False) -> Prepared:
    """Truncate, group by context and pack (our LM) or sort by length (other models) into batches: the host
    work of scoring, done before (or beside) the device work. pin: page-locked batches (for a CUDA device)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    if any(not c for c, _ in pairs_tok):
        raise ValueError("every request needs at least one context token (use [EOS] for an empty context)")
    groups, truncated = build_groups(pairs_tok, model_max_len(model), row_tokens)
    out = Prepared(len(pairs_tok), truncated)
    if isinstance(model, VersatileLM):  # the packed forward (positions, layout, real-token FFN) is ours
        rows = pack_rows(groups, max(row_tokens, 1))
        for i in range(0, len(rows), batch_size):
            batch = make_packed_batch(rows[i:i + batch_size])
            out.batches.append(batch.pin_memory() if pin else batch)
    else:
        reqs = [(g.ctx, cont, key) for g in groups for cont, key in zip(g.conts, g.keys)]
        reqs.sort(key=lambda r: len(r[0]) + len(r[1]), reverse=True)
        out.rows = [reqs[i:i + batch_size] for i in range(0, len(reqs), batch_size)]
    return out


# ----------------------------------------------------------------------------------------------- forwards


@torch.no_grad()
def packed_logprobs(model: VersatileLM, batch: PackedBatch, device: torch.device
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of every scored token and whether it was the argmax, for one packed batch (the model's packed
    forward: per-token positions, the layout's mask, FFN on real tokens only, logits only where a token is
    scored). Nothing waits for the device: the layout and the real-token mask go in as host tensors."""
    def dev(t: torch.Tensor) -> torch.Tensor:
        return t.to(device, non_blocking=True)

    out = model(dev(batch.ids_bt), positions=batch.pos_bt, packing=(dev(batch.group_bt), dev(batch.branch_bt)),
                token_mask=batch.valid_bt, logits_at=(dev(batch.score_b), dev(batch.score_t)))
    return _target_logprobs(out.logits.float(), dev(batch.target))


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
    real = torch.zeros(len(rows), T, dtype=torch.bool)
    for b, (ctx, cont) in enumerate(rows):
        seq = ctx + cont[:-1]
        ids[b, :len(seq)] = torch.tensor(seq)
        real[b, :len(seq)] = True
    # models with VersatileFFN layers (converted HF models) run the FFN on, and count, the real tokens only
    kwargs = {"token_mask": real} if isinstance(model, FFNControl) else {}
    logits = model(ids.to(device), **kwargs).logits.float()
    out = []
    for b, (ctx, cont) in enumerate(rows):
        lg = logits[b, len(ctx) - 1:len(ctx) + len(cont) - 1]
        tgt = torch.tensor(cont, device=device)
        out.append(_target_logprobs(lg, tgt))
    return out


# ----------------------------------------------------------------------------------------------- scoring


def run_prepared(model, prepared: Prepared, device=None, progress: bool = False, desc: str = "score",
                 throughput: Throughput | None = None) -> list[Score]:
    """Score prepared requests on the device (``prepare_requests``)."""
    device = torch.device(device) if device is not None else model_device(model)
    throughput = throughput if throughput is not None else Throughput()
    n = prepared.n
    lp_sum, n_tok, misses = np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    was_training = model.training
    model.eval()
    try:
        _sync(device)
        t0 = time.perf_counter()
        if prepared.batches:
            lps, hits = [], []
            for batch in show_progress(prepared.batches, desc=desc, enabled=progress, leave=False):
                with _autocast(device):
                    lp, hit = packed_logprobs(model, batch, device)
                lps.append(lp)
                hits.append(hit)
                throughput.tokens += batch.n_tokens
            # one read of the results per call; sums in the order of the scored tokens, as a loop would add them
            keys = np.concatenate([b.score_key for b in prepared.batches])
            lp_all = torch.cat(lps).double().cpu().numpy()
            miss_all = (~torch.cat(hits)).cpu().numpy()
            lp_sum = np.bincount(keys, weights=lp_all, minlength=n)
            n_tok = np.bincount(keys, minlength=n)
            misses = np.bincount(keys, weights=miss_all, minlength=n)
        for chunk in show_progress(prepared.rows, desc=desc, enabled=progress, leave=False):
            with _autocast(device):
                res = rows_logprobs(model, [(c, k) for c, k, _ in chunk], device)
            throughput.tokens += sum(len(c) + len(k) - 1 for c, k, _ in chunk)
            for (_, _, key), (lp, hit) in zip(chunk, res):
                lp_sum[key] = float(lp.sum())
                n_tok[key] = int(lp.numel())
                misses[key] = int((~hit).sum())
        _sync(device)
        throughput.seconds += time.perf_counter() - t0
    finally:
        model.train(was_training)
    return [Score(float(lp_sum[i]), int(n_tok[i]), bool(misses[i] == 0), prepared.truncated[i]) for i in range(n)]


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
    return score_token_requests(model, tokenize_pairs(tok, pairs), batch_size, device, progress, desc, throughput,
                                row_tokens)


def score_token_requests(model, pairs_tok: list[tuple[list[int], list[int]]], batch_size: int = 16, device=None,
                         progress: bool = False, desc: str = "score", throughput: Throughput | None = None,
                         row_tokens: int = DEFAULT_ROW_TOKENS) -> list[Score]:
    """``score_requests`` on token ids: (context ids (non-empty), continuation ids (non-empty)) pairs."""
    device = torch.device(device) if device is not None else model_device(model)
    prepared = prepare_requests(model, pairs_tok, batch_size, row_tokens, pin=device.type == "cuda")
    return run_prepared(model, prepared, device, progress, desc, throughput)


def task_pairs(task: Task) -> list[tuple[str, str]]:
    """A task's requests: per doc its choices, then (if loaded) the same choices after the unconditional context."""
    pairs: list[tuple[str, str]] = []
    for d in task.docs:
        pairs += list(zip(d.contexts, d.continuations))
        if d.uncond_contexts is not None:
            pairs += list(zip(d.uncond_contexts, d.continuations))
    return pairs


def task_metrics_from_scores(task: Task, scores: list[Score]) -> dict:
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
    return metrics


def evaluate_tasks(model, tokenizer, tasks=None, limit: int | None = None, batch_size: int = 16, device=None,
                   progress: bool = True, uncond: bool | None = None) -> dict:
    """Zero-shot OLMES evaluation (ranked classification) on the given tasks (default: the paper's 8).

    Returns {"tasks": {task: {"acc", "acc_per_token", "acc_per_char", "acc_per_byte", ["acc_uncond"],
    "primary_metric", "primary", "n", "n_total", "n_truncated", "tokens_per_s"}}, "average": mean primary,
    "throughput": {...}, "ffn_stats": {task: per-layer stats} (our LM and converted HF models)}. Accuracies are fractions.
    A worker thread reads, tokenises and packs the next task while the device scores the current one.
    """
    names = list(TASKS if tasks is None else ([tasks] if isinstance(tasks, str) else tasks))
    if not names:
        raise ValueError("no tasks given")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be None or an integer >= 1; got {limit!r}")
    for name in names:  # fail fast on a bad name
        task_folder(name)
    if device is not None:
        model.to(device)
    device = model_device(model)
    tok = as_tokenizer(tokenizer)
    check_tokenizer_matches(model, tok)

    def prepare(name: str) -> tuple[Task, Prepared]:
        task = load_task(name, limit=limit, uncond=uncond)
        pairs_tok = tokenize_pairs(tok, task_pairs(task))
        return task, prepare_requests(model, pairs_tok, batch_size, pin=device.type == "cuda")

    out: dict = {"tasks": {}, "ffn_stats": {}}
    total = Throughput()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eval-prepare")
    try:
        pending = [pool.submit(prepare, name) for name in names]  # one worker: in order, one task ahead or more
        for future in pending:
            task, prepared = future.result()
            if isinstance(model, FFNControl):  # our LM and converted HF models: per-task FFN statistics
                model.reset_ffn_stats()
            tp = Throughput()
            scores = run_prepared(model, prepared, device, progress, task.name, tp)
            metrics = task_metrics_from_scores(task, scores)
            metrics["tokens_per_s"] = tp.tokens_per_s
            out["tasks"][task.name] = metrics
            if isinstance(model, FFNControl):
                out["ffn_stats"][task.name] = model.ffn_stats()
            total.tokens += tp.tokens
            total.seconds += tp.seconds
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    out["average"] = sum(m["primary"] for m in out["tasks"].values()) / len(out["tasks"])
    out["throughput"] = total.as_dict()
    return out
