"""lm-evaluation-harness adapter: run ``lm_eval`` on a versatileffn model folder (users with internet).

    pip install "lm_eval==0.4.*"
    versatileffn-lm-eval run --model versatileffn --model_args pretrained=runs/demo/model \\
        --tasks piqa,arc_easy --device cuda --batch_size auto

(``python -m versatileffn.eval.harness`` is the same command): lm_eval's own CLI with the model registered.
lm-eval 0.4 has no plugin mechanism for models (no entry-point group; EleutherAI/lm-evaluation-harness#3282), so
a plain ``lm_eval`` process only knows ``versatileffn`` after ``import versatileffn.eval.harness; register()``.
From Python: ``lm_eval.simple_evaluate(model=harness_lm("runs/demo/model"), tasks=[...])``, or
``simple_evaluate(model="versatileffn", model_args="pretrained=...", ...)`` after ``register()``.
A Hugging Face folder (``versatileffn convert`` / ``versatileffn export``) also works with lm_eval's ``hf`` model.

The scoring logic lives in plain functions (``loglikelihood``, ``loglikelihood_rolling``, ``generate_until``)
on top of ``score_token_requests``, so it is tested without lm_eval; ``lm_eval`` is imported only when the
adapter class is built.
"""
from __future__ import annotations

import sys
from typing import Callable

import torch

from ..errors import UserError
from ..model import VersatileLM
from .scoring import as_tokenizer, model_device, model_max_len, score_token_requests

MODEL_NAME = "versatileffn"


def loglikelihood(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 16,
                  progress: bool = False) -> list[tuple[float, bool]]:
    """lm-eval's ``loglikelihood``: (sum log p(continuation | context), continuation is the greedy decode).

    lm-eval's pair encoding: trailing spaces of the context move to the continuation, the whole string is
    encoded once and split where the context's tokens end; an empty context becomes [EOS].
    """
    tok = as_tokenizer(tokenizer)
    pairs_tok = []
    for ctx, cont in pairs:
        n_space = len(ctx) - len(ctx.rstrip(" "))
        if n_space:
            ctx, cont = ctx[:-n_space], ctx[-n_space:] + cont
        if not ctx:
            pairs_tok.append(([tok.eos_id], tok.encode(cont)))
            continue
        whole, ctx_ids = tok.encode(ctx + cont), tok.encode(ctx)
        pairs_tok.append((whole[:len(ctx_ids)], whole[len(ctx_ids):]))
    scores = score_token_requests(model, pairs_tok, batch_size=batch_size, progress=progress, desc="lm_eval")
    return [(s.logprob, s.is_greedy) for s in scores]


def loglikelihood_rolling(model, tokenizer, texts: list[str], batch_size: int = 16,
                          progress: bool = False) -> list[float]:
    """Log-likelihood of whole documents: windows of the model's length, each conditioned on as much of the
    preceding text as fits (the first token on [EOS])."""
    tok = as_tokenizer(tokenizer)
    L = model_max_len(model)
    pairs_tok, owner = [], []
    for i, text in enumerate(texts):
        ids = tok.encode(text)
        for start in range(0, len(ids), L):
            pairs_tok.append(([tok.eos_id] + ids[:start], ids[start:start + L]))  # left-truncated to fit
            owner.append(i)
    scores = score_token_requests(model, pairs_tok, batch_size=batch_size, progress=progress, desc="rolling")
    out = [0.0] * len(texts)
    for i, s in zip(owner, scores):
        out[i] += s.logprob
    return out


@torch.no_grad()
def generate_until(model, tokenizer, requests: list[tuple[str, dict]], max_gen_toks: int = 256) -> list[str]:
    """Greedy generation, cut at the first stop string (``until``) of each request."""
    tok = as_tokenizer(tokenizer)
    device = model_device(model)
    out = []
    for ctx, kwargs in requests:
        kwargs = dict(kwargs or {})
        until = kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        n_new = int(kwargs.get("max_gen_toks", max_gen_toks))
        ids = (tok.encode(ctx) or [tok.eos_id])[-max(1, model_max_len(model) - n_new):]
        x = torch.tensor([ids], device=device)
        if isinstance(model, VersatileLM):
            y = model.generate(x, max_new_tokens=n_new, eos_id=tok.eos_id)
        else:
            y = model.generate(x, max_new_tokens=n_new, do_sample=False, eos_token_id=tok.eos_id,
                               pad_token_id=tok.eos_id)
        new = [t for t in y[0, len(ids):].tolist()]
        if tok.eos_id in new:
            new = new[:new.index(tok.eos_id)]
        text = tok.decode(new)
        for stop in until:
            if stop and stop in text:
                text = text[:text.index(stop)]
        out.append(text)
    return out


def largest_batch(fits: Callable[[int], None], max_batch_size: int) -> int:
    """The largest batch size <= max_batch_size for which ``fits(b)`` runs without running out of device memory
    (halving from max_batch_size, as lm-eval's ``hf`` model does for ``batch_size=auto``)."""
    b = max_batch_size
    while True:
        try:
            fits(b)
            return b
        except torch.OutOfMemoryError:
            if b == 1:
                raise
            b //= 2
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def auto_batch_size(model, max_batch_size: int = 64) -> int:
    """``batch_size=auto``: on CUDA, the largest batch of full-length rows a forward fits; elsewhere (host
    memory has no clean out-of-memory error to back off from) ``max_batch_size``."""
    device = model_device(model)
    if device.type != "cuda":
        return max_batch_size
    L, vocab = model_max_len(model), model.get_output_embeddings().weight.shape[0]

    @torch.no_grad()
    def fits(b: int) -> None:
        x = torch.randint(0, vocab, (b, L), device=device)
        model(x) if isinstance(model, VersatileLM) else model(input_ids=x, use_cache=False)

    return largest_batch(fits, max_batch_size)


def parse_batch_size(batch_size, max_batch_size) -> int | str:
    """lm-eval's batch_size: an integer >= 1, or "auto" / "auto:N" (N, re-detection, has no effect here)."""
    if isinstance(batch_size, str) and batch_size.split(":")[0] == "auto":
        if not (isinstance(max_batch_size, int) and max_batch_size >= 1):
            raise UserError(f"max_batch_size must be an integer >= 1; got {max_batch_size!r}")
        return "auto"
    try:
        b = int(batch_size)
    except (TypeError, ValueError):
        b = 0
    if b < 1 or str(b) != str(batch_size).strip():
        raise UserError(f"batch_size must be an integer >= 1 or 'auto'; got {batch_size!r}")
    return b


def make_harness_class(base: type):
    """The adapter class on top of ``base`` (lm_eval's ``LM``); lm_eval builds it as ``cls(**model_args)``, plus
    the batch_size / max_batch_size / device it passes itself."""

    class VersatileFFNHarnessLM(base):
        def __init__(self, pretrained: str | None = None, device: str | None = None, batch_size: int | str = 16,
                     max_batch_size: int | None = 64, tokenizer: str | None = None, **unknown):
            if unknown:  # a misspelt option would otherwise evaluate a different setting than the one asked for
                raise UserError(f"unknown model_args for --model {MODEL_NAME}: {', '.join(sorted(unknown))}; it takes "
                                "pretrained, tokenizer, device, batch_size, max_batch_size")
            if not pretrained:
                raise UserError(f"--model {MODEL_NAME} needs model_args pretrained=<model folder>")
            super().__init__()
            from .report import load_for_eval

            max_batch_size = 64 if max_batch_size is None else max_batch_size
            chosen = parse_batch_size(batch_size, max_batch_size)
            dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
            self.model, self.tok, _ = load_for_eval(pretrained, dev, tokenizer)
            self.batch_size = auto_batch_size(self.model, max_batch_size) if chosen == "auto" else chosen

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return loglikelihood(self.model, self.tok, [r.args[:2] for r in requests], self.batch_size,
                                 progress=not disable_tqdm)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            return loglikelihood_rolling(self.model, self.tok, [r.args[0] for r in requests], self.batch_size,
                                         progress=not disable_tqdm)

        def generate_until(self, requests, disable_tqdm: bool = False):
            return generate_until(self.model, self.tok, [(r.args[0], r.args[1]) for r in requests])

    return VersatileFFNHarnessLM


_REGISTERED = None


def register():
    """Register the adapter with lm_eval as ``versatileffn`` (idempotent); returns the class.

    lm_eval fills its registry with its built-in models (``hf``, ``vllm``, ...) only while the registry is empty,
    so they are loaded first: registering into the empty registry would hide them (``--model hf`` not found).
    """
    global _REGISTERED
    if _REGISTERED is None:
        try:
            import lm_eval.models  # noqa: F401  (registers the built-in models' lazy placeholders)
            from lm_eval.api.model import LM
            from lm_eval.api.registry import register_model
        except ImportError as exc:
            raise UserError('lm-evaluation-harness is not installed: pip install "lm_eval==0.4.*"') from exc
        _REGISTERED = register_model(MODEL_NAME)(make_harness_class(LM))
    return _REGISTERED


def harness_lm(pretrained: str, device: str | None = None, batch_size: int | str = 16, tokenizer: str | None = None,
               max_batch_size: int = 64):
    """An lm_eval ``LM`` instance for ``lm_eval.simple_evaluate(model=...)``."""
    return register()(pretrained=pretrained, device=device, batch_size=batch_size, tokenizer=tokenizer,
                      max_batch_size=max_batch_size)


def main() -> None:
    """``versatileffn-lm-eval`` / ``python -m versatileffn.eval.harness <lm_eval arguments>``: lm_eval's CLI with
    our model registered (beside lm_eval's own)."""
    register()
    from lm_eval.__main__ import cli_evaluate

    sys.argv[0] = "lm_eval"
    cli_evaluate()


if __name__ == "__main__":
    main()
