"""An OLMo2-style decoder LM whose FFN sublayer is chosen by config (dense, k-loop, MoE, VersatileFFN).

Token embedding (untied output head), pre-norm blocks of causal self-attention (RoPE, optional QK-norm,
optional grouped KV heads, ``scaled_dot_product_attention``) and the FFN sublayer, final RMSNorm.
Only the FFN changes between the paper's variants; attention and its KV cache are untouched, so
generation with a cache works for every FFN kind (the recursion lives inside the FFN sublayer).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from .config import FFNConfig, ModelConfig
from .ffn import DenseFFN, MoEFFN, RMSNorm, VersatileFFN
from .ffn.fast import checkpoint_contexts

MODEL_PRESETS: dict[str, dict] = {
    # The paper's models (FACTS.md): 15 layers, vocab 50,280 padded to 50,304, untied embeddings.
    "paper-354m": dict(vocab_size=50304, d_model=1024, n_layers=15, n_heads=16, d_hidden=4096, max_seq_len=4096),
    "paper-720m": dict(vocab_size=50304, d_model=1536, n_layers=15, n_heads=12, d_hidden=6144, max_seq_len=4096),
    # Small GPU model for the reproduction on the 14.8M-token corpus (d 512, 8 layers, SwiGLU 2048).
    "small": dict(vocab_size=50304, d_model=512, n_layers=8, n_heads=8, d_hidden=2048, max_seq_len=1024),
    # CPU sizes for tests and `make demo`.
    "tiny": dict(vocab_size=4096, d_model=128, n_layers=4, n_heads=4, d_hidden=512, max_seq_len=256),
    "micro": dict(vocab_size=256, d_model=32, n_layers=2, n_heads=4, d_hidden=64, max_seq_len=64),
}


def model_config(preset: str, ffn: FFNConfig | None = None, **overrides) -> ModelConfig:
    if preset not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {sorted(MODEL_PRESETS)}")
    kwargs = {**MODEL_PRESETS[preset], **overrides}
    return ModelConfig(ffn=ffn if ffn is not None else FFNConfig(), **kwargs)


@dataclass
class LMOutput:
    """logits [B, T, V]; loss: mean cross-entropy (None without targets); aux_loss: the sum of the FFNs'
    scaled auxiliary losses (detached, for logging — its gradient is already attached to the forward)."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None


class KVCache:
    """Pre-allocated per-layer key/value buffers [B, kv_heads, max_len, head_dim] and a fill position."""

    def __init__(self, config: ModelConfig, batch: int, max_len: int, device, dtype):
        shape = (batch, config.kv_heads, max_len, config.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.pos = 0
        self.max_len = max_len


def rope_tables(head_dim: int, max_len: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(max_len, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x_bhtd: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE (the Llama/OLMo convention) on [B, H, T, D]; cos/sin are [T, D/2] (positions shared
    by the batch) or [B, T, D/2] (per-row positions, e.g. packed sequences)."""
    x1, x2 = x_bhtd.float().chunk(2, dim=-1)
    cos, sin = (cos[None, None], sin[None, None]) if cos.dim() == 2 else (cos[:, None], sin[:, None])
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x_bhtd.dtype)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads, self.kv_heads, self.head_dim = config.n_heads, config.kv_heads, config.head_dim
        d = config.d_model
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=False)
        self.q_norm = RMSNorm(self.n_heads * self.head_dim, config.norm_eps) if config.qk_norm else None
        self.k_norm = RMSNorm(self.kv_heads * self.head_dim, config.norm_eps) if config.qk_norm else None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None = None,
                layer: int = 0, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """attn_mask (optional, no cache): an explicit boolean mask [B, 1, T, T] replacing the causal one,
        e.g. for several sequences packed into one row."""
        B, T, _ = x.shape
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        past = 0
        if cache is not None:
            past = cache.pos
            cache.k[layer][:, :, past:past + T] = k
            cache.v[layer][:, :, past:past + T] = v
            k, v = cache.k[layer][:, :, :past + T], cache.v[layer][:, :, :past + T]
        if self.kv_heads != self.n_heads:
            rep = self.n_heads // self.kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        if attn_mask is not None:
            if cache is not None:
                raise ValueError("an explicit attn_mask cannot be combined with a KV cache")
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        elif past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif T == 1:
            y = F.scaled_dot_product_attention(q, k, v)
        else:  # a chunk after a non-empty cache: causal within the chunk, everything before it visible
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class Block(nn.Module):
    """Pre-norm block: H = X + Attention(RMSNorm(X)) (Eq. 1); Y = FFN sublayer(H), residual inside (Eq. 2)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attn = Attention(config)
        self.ffn = config.ffn.build(config.d_model, config.d_hidden, config.norm_eps, config.init_std)

    def forward(self, x, cos, sin, cache=None, layer=0):
        h = x + self.attn(self.attn_norm(x), cos, sin, cache, layer)
        return self.ffn(h)


class FFNControl:
    """The FFN driver API shared by ``VersatileLM`` and the converted Hugging Face models: the trainer, the
    evaluator and the analysis call only these. A subclass provides ``ffn_layers()``."""

    def ffn_layers(self) -> list[nn.Module]:
        raise NotImplementedError

    def aux_loss(self) -> torch.Tensor | None:
        """Sum of the scaled auxiliary losses of the last training forward (detached), or None."""
        vals = [m.last_aux_loss for m in self.ffn_layers() if getattr(m, "last_aux_loss", None) is not None]
        return torch.stack(vals).sum() if vals else None

    def versatile_layers(self) -> list[VersatileFFN]:
        return [m for m in self.ffn_layers() if isinstance(m, VersatileFFN)]

    def anneal_temperature(self) -> None:
        """Advance the Gumbel temperature schedule of every VersatileFFN by one optimizer step."""
        for m in self.versatile_layers():
            m.anneal_temperature()

    def set_inference_loop_cap(self, cap: int | None) -> None:
        """Clip every token's predicted loop count at inference (None: no cap) — trades quality for compute."""
        if cap is not None and (not isinstance(cap, int) or cap < 1):
            raise ValueError(f"inference loop cap must be None or an integer >= 1; got {cap!r}")
        for m in self.versatile_layers():
            m.runtime.loop_cap = cap

    def reset_ffn_stats(self) -> None:
        for m in self.ffn_layers():
            if hasattr(m, "reset_stats"):
                m.reset_stats()
            if hasattr(m, "last_aux_loss"):
                m.last_aux_loss = None

    def ffn_stats(self) -> list[dict]:
        """Per-layer statistics since the last reset (loop histogram, mean loops/lambda, expert load)."""
        return [m.stats.summary() if hasattr(m, "stats") else {} for m in self.ffn_layers()]


class VersatileLM(FFNControl, nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = copy.deepcopy(config)
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.final_norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        cos, sin = rope_tables(config.head_dim, config.max_seq_len, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        std = self.config.init_std
        nn.init.normal_(self.embed.weight, std=std)
        nn.init.normal_(self.lm_head.weight, std=std)
        for block in self.blocks:
            for lin in (block.attn.q_proj, block.attn.k_proj, block.attn.v_proj, block.attn.o_proj):
                nn.init.normal_(lin.weight, std=std)

    # ------------------------------------------------------------------------------------ forward

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | None = None) -> LMOutput:
        """input_ids [B, T] -> logits [B, T, V]; targets [B, T] aligned with logits (-100 = ignore)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape [batch, seq]; got {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        start = cache.pos if cache is not None else 0
        if start + T > self.config.max_seq_len:
            raise ValueError(f"sequence length {start + T} exceeds max_seq_len={self.config.max_seq_len}")
        if cache is not None and start + T > cache.max_len:
            raise ValueError(f"KV cache holds {cache.max_len} positions; {start + T} needed")
        cos, sin = self.rope_cos[start:start + T], self.rope_sin[start:start + T]
        x = self.embed(input_ids)
        checkpointing = self.config.activation_checkpointing and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            if checkpointing and cache is None:
                # RNG state restored on recompute (same Gumbel sample); statistics not counted twice
                x = torch.utils.checkpoint.checkpoint(block, x, cos, sin, None, i, use_reentrant=False,
                                                      preserve_rng_state=True, context_fn=checkpoint_contexts)
            else:
                x = block(x, cos, sin, cache, i)
        if cache is not None:
            cache.pos += T
        logits = self.lm_head(self.final_norm(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        return LMOutput(logits=logits, loss=loss, aux_loss=self.aux_loss())

    def ffn_layers(self) -> list[nn.Module]:
        return [b.ffn for b in self.blocks]

    # ------------------------------------------------------------------------------------ counting

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def ffn_params(self) -> int:
        return sum(p.numel() for m in self.ffn_layers() for p in m.parameters())

    # ------------------------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, use_cache: bool = True, eos_id: int | None = None) -> torch.Tensor:
        """Greedy (temperature 0) or sampled continuation of input_ids [B, T]; returns [B, T + new]."""
        was_training = self.training
        self.eval()
        B, T = input_ids.shape
        total = T + max_new_tokens
        if total > self.config.max_seq_len:
            raise ValueError(f"prompt + new tokens = {total} exceeds max_seq_len={self.config.max_seq_len}")
        cache = None
        if use_cache:
            p = self.lm_head.weight
            cache = KVCache(self.config, B, total, p.device, p.dtype)
        out = input_ids
        step_input = input_ids
        done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
        for _ in range(max_new_tokens):
            logits = self(step_input if use_cache else out, cache=cache).logits[:, -1].float()
            if temperature <= 0:
                nxt = logits.argmax(-1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(torch.softmax(logits, -1), 1).squeeze(-1)
            if eos_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
                done |= nxt == eos_id
            out = torch.cat([out, nxt[:, None]], dim=1)
            step_input = nxt[:, None]
            if eos_id is not None and bool(done.all()):
                break
        self.train(was_training)
        return out


def build_model(config: ModelConfig) -> VersatileLM:
    return VersatileLM(config)


__all__ = ["VersatileLM", "LMOutput", "KVCache", "MODEL_PRESETS", "model_config", "build_model",
           "DenseFFN", "MoEFFN"]
