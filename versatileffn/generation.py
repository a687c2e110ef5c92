"""Fast generation for ``VersatileLM``: a prefill, then decode steps on a static KV cache (``kvcache.KVCache``).

A decode step (every layer, the FFN engine included, then sampling) reads nothing on the host: the cache column,
the RoPE positions and the step counter live on the device, the next token is sampled there (greedy, or
temperature / top-k / top-p through the exponential race argmax(p / q), q ~ Exp(1), which is a draw from p
without ``torch.multinomial``), and a finished row keeps emitting EOS. So the step runs three ways:

* ``eager``: the step as Python calls;
* ``graph``: the step captured once in one ``torch.cuda.CUDAGraph`` and replayed (CUDA only);
* ``compile``: ``torch.compile(mode="reduce-overhead")`` (Inductor, and CUDA graphs on CUDA).

The host looks at the device every ``check_every`` steps only: are all rows done (EOS), and which tokens to stream.
Prompts of different lengths are left-padded; each row's padding is masked out of attention and does not count
in its RoPE positions (``KVCache.pad``), so a row generates what it would alone.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .config import require
from .errors import UserError
from .ffn.control import ffn_layers
from .kvcache import KVCache

MODES = ("eager", "graph", "compile")
WARMUP = 3  # steps a capture or a compilation runs before the real ones (then the state is reset)


@dataclass
class GenerationConfig:
    """How to generate. temperature 0: greedy; top_k / top_p (None: off) restrict sampling to the k likeliest
    tokens / the smallest set holding probability top_p; eos_id: a row stops there (None: never); check_every: the
    host reads the done flags and streams tokens every k steps; seed: torch's RNG seed before the prefill."""

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    eos_id: int | None = None
    mode: str = "eager"
    check_every: int = 8
    seed: int | None = None

    def __post_init__(self) -> None:
        require(isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1, "max_new_tokens",
                "an integer >= 1", self.max_new_tokens)
        require(self.temperature >= 0, "temperature", ">= 0", self.temperature)
        require(self.top_k is None or (isinstance(self.top_k, int) and self.top_k >= 1), "top_k",
                "None or an integer >= 1", self.top_k)
        require(self.top_p is None or 0 < self.top_p <= 1, "top_p", "None or in (0, 1]", self.top_p)
        require(self.mode in MODES, "mode", f"one of {MODES}", self.mode)
        require(isinstance(self.check_every, int) and self.check_every >= 1, "check_every", "an integer >= 1",
                self.check_every)

    def build(self, model) -> "Decoder":
        return Decoder(model, self)


@dataclass
class Generation:
    """tokens [B, T + n]: the (left-padded) prompts and n new tokens (EOS after a row's stop); pad [B]: each row's
    left padding; prompt_len T; mean_loops: executed loops per token over the FFNs (VersatileFFN; None otherwise)."""

    tokens: torch.Tensor
    pad: torch.Tensor
    prompt_len: int
    prefill_s: float
    decode_s: float
    mean_loops: float | None = None
    steps: int = 0  # n, the new tokens per row (the prefill's one and n - 1 decode steps)

    @property
    def new_tokens(self) -> torch.Tensor:
        return self.tokens[:, self.prompt_len:]

    @property
    def tokens_per_s(self) -> float:
        """New tokens of every row per second of prefill + decode."""
        total = self.prefill_s + self.decode_s
        return self.new_tokens.numel() / total if total > 0 else float("inf")

    def rows(self) -> list[list[int]]:
        """Each row's prompt and new tokens without its padding."""
        return [row[int(p):] for row, p in zip(self.tokens.tolist(), self.pad.tolist())]


# ------------------------------------------------------------------------------------------ sampling


def restrict_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """-inf outside the top-k tokens, then outside the smallest prefix of the sorted tokens whose probability
    reaches top_p (the likeliest token always stays). Static shapes, no host read."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        outside = probs.cumsum(-1) - probs >= top_p  # the mass before this token already reaches top_p
        sorted_logits = sorted_logits.masked_fill(outside, float("-inf"))
        logits = torch.empty_like(logits).scatter_(-1, order, sorted_logits)
    return logits


def sample(logits: torch.Tensor, temperature: float, top_k: int | None = None,
           top_p: float | None = None) -> torch.Tensor:
    """Next token per row of logits [B, V] -> [B], on the device."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = restrict_logits(logits.float() / temperature, top_k, top_p).softmax(-1)
    return (probs / torch.empty_like(probs).exponential_()).argmax(-1)  # the exponential race: a draw from probs


# ----------------------------------------------------------------------------------------- prompts


def left_pad(prompts, attention_mask: torch.Tensor | None, pad_id: int,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [B, T], pad [B]) from a tensor [B, T] (with an optional 0/1 attention mask, padding on the left) or
    a list of token lists of any lengths."""
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() != 2 or prompts.shape[1] == 0:
            raise UserError(f"input_ids must have shape [batch, seq] with seq >= 1; got {tuple(prompts.shape)}")
        ids = prompts.to(device)
        if attention_mask is None:
            return ids, torch.zeros(ids.shape[0], dtype=torch.long, device=device)
        mask = attention_mask.to(device=device, dtype=torch.long)
        if mask.shape != ids.shape:
            raise UserError(f"attention_mask has shape {tuple(mask.shape)}; input_ids {tuple(ids.shape)}")
        pad = ids.shape[1] - mask.sum(1)
        expected = (torch.arange(ids.shape[1], device=device)[None] >= pad[:, None]).long()
        if not torch.equal(mask, expected) or bool((pad >= ids.shape[1]).any()):
            raise UserError("attention_mask must be left padding (zeros, then ones) with a token in every row")
        return ids, pad
    rows = [list(map(int, p)) for p in prompts]
    if not rows or any(len(r) == 0 for r in rows):
        raise UserError("every prompt needs at least one token")
    T = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (T - len(r)) + r for r in rows], dtype=torch.long, device=device)
    return ids, torch.tensor([T - len(r) for r in rows], dtype=torch.long, device=device)


def recompute_logits(model, ids: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """Last-token logits [B, V] from a full forward of left-padded ids (no cache: the reference path)."""
    if not bool(pad.any()):
        return model(ids).logits[:, -1]
    T = ids.shape[1]
    j = torch.arange(T, device=ids.device)
    positions = (j[None] - pad[:, None]).clamp_min(0)
    mask = ((j[None, :] <= j[:, None])[None] & (j[None, None, :] >= pad[:, None, None])) | torch.eye(
        T, dtype=torch.bool, device=ids.device)
    return model(ids, positions=positions, attn_mask=mask[:, None]).logits[:, -1]


# ------------------------------------------------------------------------------------------ decoder


class Decoder:
    """Generates from ``model`` with ``config``: prefill eagerly, then decode steps in ``config.mode``."""

    def __init__(self, model, config: GenerationConfig):
        if not hasattr(model, "decode_step"):
            raise TypeError(f"Decoder drives a VersatileLM; got {type(model).__name__} (Hugging Face models: "
                            "model.generate(..., cache_implementation='static'))")
        self.model, self.config = model, config
        p = model.lm_head.weight
        self.device, self.dtype = p.device, p.dtype
        if config.mode == "graph" and self.device.type != "cuda":
            raise UserError("mode 'graph' needs CUDA (use 'eager' or 'compile' on the CPU)")

    @torch.no_grad()
    def generate(self, prompts, attention_mask: torch.Tensor | None = None, use_cache: bool = True,
                 on_tokens: Callable[[list[list[int]]], None] | None = None) -> Generation:
        """prompts: a tensor [B, T] (attention_mask: left padding) or lists of token ids. on_tokens(rows): called
        with each row's tokens since the last call, every ``check_every`` steps and at the end (streaming)."""
        c, model = self.config, self.model
        was_training = model.training
        model.eval()
        try:
            ids, pad = left_pad(prompts, attention_mask, c.eos_id if c.eos_id is not None else 0, self.device)
            total = ids.shape[1] + c.max_new_tokens
            if total > model.config.max_seq_len:
                raise UserError(f"prompt + new tokens = {total} exceeds max_seq_len={model.config.max_seq_len}")
            if not use_cache and c.mode != "eager":
                raise UserError(f"use_cache=False recomputes every step eagerly; mode {c.mode!r} needs the cache")
            return (self._run_cached if use_cache else self._run_recompute)(ids, pad, on_tokens)
        finally:
            model.train(was_training)

    # ------------------------------------------------------------------------------------------ steps

    def _state(self, B: int) -> dict:
        """The step's device state; ``out`` has WARMUP spare columns for the steps a capture runs."""
        c, dev = self.config, self.device
        st = {"tok": torch.zeros(B, 1, dtype=torch.long, device=dev),
              "out": torch.zeros(B, c.max_new_tokens + WARMUP, dtype=torch.long, device=dev),
              "done": torch.zeros(B, dtype=torch.bool, device=dev),
              "first_eos": torch.zeros(B, dtype=torch.long, device=dev),
              "count": torch.zeros(1, dtype=torch.long, device=dev)}
        self._reset(st)
        return st

    def _reset(self, st: dict, cache: KVCache | None = None) -> None:
        """Back to before the first token, in place (a captured graph holds these tensors)."""
        for t in st.values():
            t.zero_()
        st["first_eos"].fill_(self.config.max_new_tokens)
        if cache is not None:
            cache.rewind(0)

    def _emit(self, st: dict, logits: torch.Tensor) -> None:
        """Sample, stop finished rows at EOS, write the token at the device-side step count. No host read."""
        c = self.config
        nxt = sample(logits, c.temperature, c.top_k, c.top_p)
        if c.eos_id is not None:
            nxt = torch.where(st["done"], c.eos_id, nxt)
            stops = (nxt == c.eos_id) & ~st["done"]
            st["first_eos"].copy_(torch.where(stops, st["count"], st["first_eos"]))
            st["done"] |= stops
        st["out"].index_copy_(1, st["count"], nxt[:, None])
        st["tok"].copy_(nxt[:, None])
        st["count"] += 1

    def _step_fn(self, st: dict, cache: KVCache) -> Callable[[], None]:
        """The decode step in the config's mode, warmed up (compiled, captured); state reset afterwards."""
        def step() -> None:
            self._emit(st, self.model.decode_step(st["tok"], cache))

        mode = self.config.mode
        if mode == "compile":  # tensors the step mutates in place: CUDA graphs keep them where they are
            for t in [*cache.k, *cache.v, cache.slot, cache.pad, *st.values(), *stats_tensors(self.model)]:
                torch._dynamo.mark_static_address(t)
            step = torch.compile(step, mode="reduce-overhead")
            for _ in range(WARMUP):  # compile, record the CUDA graph, replay it
                step()
        elif mode == "graph":
            step = capture(step)
        self._reset(st, cache)
        return step

    def _run_cached(self, ids, pad, on_tokens) -> Generation:
        c, model = self.config, self.model
        B, T = ids.shape
        cache = KVCache(model.config, B, T + c.max_new_tokens, self.device, self.dtype, pad)
        st = self._state(B)
        zero_ffn_stats(model, self.device)
        step = self._step_fn(st, cache) if c.max_new_tokens > 1 else None
        zero_ffn_stats(model, self.device)
        if c.seed is not None:
            torch.manual_seed(c.seed)
        sync(self.device)
        t0 = time.perf_counter()
        last = torch.full((B,), T - 1, device=self.device)
        self._emit(st, model(ids, cache=cache, logits_at=(torch.arange(B, device=self.device), last)).logits)
        sync(self.device)
        t1 = time.perf_counter()
        n = self._loop(st, step, on_tokens, advance=cache.advance)
        sync(self.device)
        t2 = time.perf_counter()
        return self._finish(ids, pad, st, n, t1 - t0, t2 - t1)

    def _run_recompute(self, ids, pad, on_tokens) -> Generation:
        """No cache: every step a full forward of the sequence so far (the reference the cached path matches)."""
        st = self._state(ids.shape[0])
        zero_ffn_stats(self.model, self.device)
        if self.config.seed is not None:
            torch.manual_seed(self.config.seed)
        t0 = time.perf_counter()

        def step() -> None:
            self._emit(st, recompute_logits(self.model, torch.cat([ids, st["out"][:, :int(st["count"])]], 1), pad))

        step()
        t1 = time.perf_counter()
        n = self._loop(st, step, on_tokens)
        return self._finish(ids, pad, st, n, t1 - t0, time.perf_counter() - t1)

    def _loop(self, st: dict, step, on_tokens, advance: Callable[[int], None] | None = None) -> int:
        """Steps 2..max_new_tokens; the host reads the device every check_every steps. -> tokens generated."""
        c = self.config
        n, streamed = 1, 0
        while n < c.max_new_tokens:
            step()
            if advance is not None:
                advance(1)
            n += 1
            if n % c.check_every == 0:
                if on_tokens is not None:
                    on_tokens(st["out"][:, streamed:n].tolist())
                    streamed = n
                if c.eos_id is not None and bool(st["done"].all()):
                    break
        if on_tokens is not None and streamed < n:
            on_tokens(st["out"][:, streamed:n].tolist())
        return n

    def _finish(self, ids, pad, st, n, prefill_s, decode_s) -> Generation:
        if self.config.eos_id is not None and bool(st["done"].all()):
            n = min(n, int(st["first_eos"].max()) + 1)  # the step at which the last row stopped
        return Generation(torch.cat([ids, st["out"][:, :n]], 1), pad, ids.shape[1], prefill_s, decode_s,
                          self.model.mean_loops(), steps=n)


def capture(step: Callable[[], None], warmup: int = WARMUP - 1) -> Callable[[], None]:
    """step captured in one CUDA graph (warmed up on a side stream first); returns its replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stats_tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    """The FFN statistics' accumulators (``FFNStats``) of every layer that keeps them."""
    out = []
    for m in ffn_layers(model):
        s = getattr(m, "stats", None)
        if s is not None:
            out += [t for t in (s.n_tokens, s.loop_counts, s.expert_counts, s.lambda_sum) if t is not None]
    return out


def zero_ffn_stats(model: torch.nn.Module, device: torch.device) -> None:
    """Zero the FFN statistics in place, on ``device`` (a captured or compiled step keeps adding into the tensors it
    saw: they must be there before the capture and stay the same objects afterwards)."""
    for m in ffn_layers(model):
        s = getattr(m, "stats", None)
        if s is not None and s.n_tokens.device != device:
            m.stats = s.to(device)
    for t in stats_tensors(model):
        t.zero_()


def generate(model, prompts: torch.Tensor | Sequence[Sequence[int]], max_new_tokens: int = 32,
             attention_mask: torch.Tensor | None = None, on_tokens=None, use_cache: bool = True,
             **options) -> Generation:
    """One call: ``GenerationConfig(max_new_tokens, **options).build(model).generate(prompts, ...)``."""
    config = GenerationConfig(max_new_tokens=max_new_tokens, **options)
    return config.build(model).generate(prompts, attention_mask, use_cache=use_cache, on_tokens=on_tokens)


__all__ = ["GenerationConfig", "Decoder", "Generation", "generate", "sample", "restrict_logits", "MODES"]
