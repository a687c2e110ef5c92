"""``versatileffn generate``: continue a prompt with a model folder, streaming the text as it is produced, then log
tokens/s and the mean executed loops (``versatileffn.generation``: static KV cache, decode steps eager, in one CUDA
graph or compiled)."""
from __future__ import annotations

import logging
import sys

import torch

from ..errors import UserError
from ..generation import MODES, GenerationConfig

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("generate", help="continue a prompt with a model folder (streams the text; tokens/s, loops)")
    p.add_argument("--model", required=True, help="versatileffn model folder (e.g. a run's final/) with its "
                   "tokenizer.json")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate at most (fewer at EOS)")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature; 0 = greedy")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest tokens (default: all)")
    p.add_argument("--top-p", type=float, default=None, help="sample among the smallest set of tokens holding this "
                   "probability (default: all)")
    p.add_argument("--mode", default="eager", choices=MODES, help="decode steps: eager, one CUDA graph per step "
                   "(graph, CUDA only) or torch.compile reduce-overhead (compile)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available; bf16 on CUDA)")
    p.add_argument("--seed", type=int, default=None, help="random seed of the sampling (default: not seeded)")
    p.add_argument("--tokenizer", default=None, help="override the model folder's tokenizer (e.g. olmo; default: "
                   "the folder's tokenizer.json)")
    p.set_defaults(func=run)


class TextStream:
    """Prints the decoded text of the new tokens as they arrive (up to the first EOS), holding back an unfinished
    UTF-8 character."""

    def __init__(self, tokenizer, eos_id: int | None, out=None):
        self.tok, self.eos_id, self.out = tokenizer, eos_id, out or sys.stdout
        self.ids: list[int] = []
        self.shown = 0
        self.stopped = False

    def __call__(self, rows: list[list[int]]) -> None:
        for t in rows[0]:
            if self.stopped or t == self.eos_id:
                self.stopped = True
                break
            self.ids.append(t)
        self.flush(final=False)

    def flush(self, final: bool = True) -> None:
        text = self.tok.decode(self.ids)
        if not final and text.endswith("\ufffd"):  # a multi-byte character split between tokens: wait
            text = text[:-1]
        if len(text) > self.shown:
            self.out.write(text[self.shown:])
            self.out.flush()
            self.shown = len(text)
        if final:
            self.out.write("\n")
            self.out.flush()


def run(args) -> int:
    from ..eval.report import load_for_eval
    from ..loading import NATIVE

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                              top_p=args.top_p, mode=args.mode, seed=args.seed,
                              check_every=4)  # bad options fail before loading; streamed every 4 tokens
    model, tokenizer, kind = load_for_eval(args.model, device, args.tokenizer)
    if kind != NATIVE:
        raise UserError(f"{args.model} is a Hugging Face model folder; versatileffn generate runs versatileffn model "
                        "folders (a Hugging Face model: model.generate(..., cache_implementation='static'))")
    if device.type == "cuda":
        model = model.to(torch.bfloat16)
    ids = tokenizer.encode(args.prompt)
    if not ids:
        raise UserError("--prompt is empty after tokenization")
    config.eos_id = getattr(tokenizer, "eos_id", None)
    stream = TextStream(tokenizer, config.eos_id)
    out = config.build(model).generate([ids], on_tokens=stream)
    stream.flush()
    loops = "" if out.mean_loops is None else f", {out.mean_loops:.2f} mean executed loops"
    log.info("%d tokens in %.2f s: %.1f tokens/s (prefill %.3f s, %s decode)%s", out.new_tokens.numel(),
             out.prefill_s + out.decode_s, out.tokens_per_s, out.prefill_s, args.mode, loops)
    return 0
