"""lm-evaluation-harness adapter: run ``lm_eval`` on a versatileffn model folder (users with internet).

    pip install lm_eval
    python -m versatileffn.eval.harness --model versatileffn --model_args pretrained=runs/demo/model \\
        --tasks piqa,arc_easy --device cuda --batch_size 16

or from Python: ``lm_eval.simple_evaluate(model=harness_lm("runs/demo/model", device="cuda"), tasks=[...])``.
A model converted to Hugging Face format works with lm_eval's own ``hf`` type instead.

The scoring logic lives in plain functions (``loglikelihood``, ``loglikelihood_rolling``, ``generate_until``)
on top of ``score_token_requests``, so it is tested without lm_eval; ``lm_eval`` is imported only when the
adapter class is built.
"""
from __future__ import annotations

import sys

import torch

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


def make_harness_class(base: type):
    """The adapter class on top of ``base`` (lm_eval's ``LM``); lm_eval builds it as ``cls(**model_args)``."""

    class VersatileFFNHarnessLM(base):
        def __init__(self, pretrained: str, device: str | None = None, batch_size: int | str = 16,
                     tokenizer: str | None = None, **_ignored):
            super().__init__()
            from .report import load_for_eval

            dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
            self.model, self.tok, _ = load_for_eval(pretrained, dev, tokenizer)
            self.batch_size = int(batch_size) if str(batch_size).isdigit() else 16

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
    """Register the adapter with lm_eval as ``versatileffn`` (idempotent); returns the class."""
    global _REGISTERED
    if _REGISTERED is None:
        try:
            from lm_eval.api.model import LM
            from lm_eval.api.registry import register_model
        except ImportError as exc:
            raise ValueError("lm-evaluation-harness is not installed: pip install lm_eval") from exc
        _REGISTERED = register_model(MODEL_NAME)(make_harness_class(LM))
    return _REGISTERED


def harness_lm(pretrained: str, device: str | None = None, batch_size: int = 16, tokenizer: str | None = None):
    """An lm_eval ``LM`` instance for ``lm_eval.simple_evaluate(model=...)``."""
    return register()(pretrained=pretrained, device=device, batch_size=batch_size, tokenizer=tokenizer)


def main() -> None:
    """``python -m versatileffn.eval.harness <lm_eval arguments>``: lm_eval's CLI with our model registered."""
    register()
    from lm_eval.__main__ import cli_evaluate

    sys.argv[0] = "lm_eval"
    cli_evaluate()


if __name__ == "__main__":
    main()
