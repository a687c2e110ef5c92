"""An OLMo2-style decoder LM whose FFN sublayer is chosen by config (dense, k-loop, MoE, VersatileFFN).

Token embedding (untied output head), pre-norm blocks of causal self-attention (RoPE, optional QK-norm,
optional grouped KV heads, ``scaled_dot_product_attention``) and the FFN sublayer, final RMSNorm.
Only the FFN changes between the paper's variants; attention and its KV cache are untouched, so
generation with a cache works for every FFN kind (the recursion lives inside the FFN sublayer).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from .config import from_dict, require
from .ffn import AnyFFNConfig, DenseFFNConfig, RMSNorm, ffn_config_from_dict
from .ffn.control import FFNControl
from .ffn.fast import checkpoint_contexts
from .kvcache import KVCache
from .presets import model_preset

@dataclass
class ModelConfig:
    """An OLMo2-style decoder: RMSNorm, RoPE, SwiGLU, no biases, untied embeddings, pre-norm blocks.

    ``ffn`` is the chosen FFN kind's own config (``ffn/registry.py``) holding its options only; the blocks get
    it with the model's shape filled in (``ffn_layer_config()``). In YAML: ``ffn: {kind: versatile, ...}``.
    """

    vocab_size: int = 50304
    d_model: int = 1024
    n_layers: int = 15
    n_heads: int = 16
    n_kv_heads: int | None = None
    d_hidden: int = 4096
    max_seq_len: int = 4096
    rope_theta: float = 500_000.0
    norm_eps: float = 1e-6
    qk_norm: bool = False
    init_std: float = 0.02
    # recompute each block's activations in the backward pass (torch.utils.checkpoint; the RNG state is
    # restored, so VersatileFFN's Gumbel sample is the same in the recomputation)
    activation_checkpointing: bool = False
    ffn: AnyFFNConfig = field(default_factory=DenseFFNConfig)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_hidden", "max_seq_len"):
            v = getattr(self, name)
            require(isinstance(v, int) and v >= 1, name, "an integer >= 1", v)
        require(self.d_model % self.n_heads == 0, "n_heads", f"a divisor of d_model={self.d_model}", self.n_heads)
        require((self.d_model // self.n_heads) % 2 == 0, "n_heads", "such that the head dim is even (RoPE)",
                self.n_heads)
        kv = self.kv_heads
        require(1 <= kv <= self.n_heads and self.n_heads % kv == 0, "n_kv_heads",
                f"a divisor of n_heads={self.n_heads}", self.n_kv_heads)
        if isinstance(self.ffn, dict):
            self.ffn = ffn_config_from_dict(self.ffn)
        if self.ffn.has_shape:
            raise ValueError("model.ffn must not set d_model / d_hidden / norm_eps / init_std: the FFN's shape is "
                             "the model's (pass the config's options only, e.g. VersatileFFNConfig(n_experts=8))")
        self.ffn_layer_config()  # validate the layer config now, with its own field names

    def ffn_layer_config(self) -> AnyFFNConfig:
        """The FFN config every block builds: ``ffn`` with the model's d_model, d_hidden, norm_eps, init_std."""
        return self.ffn.shaped(self.d_model, self.d_hidden, self.norm_eps, self.init_std)

    def build(self) -> "VersatileLM":
        return VersatileLM(self)

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def model_config(preset: str, ffn: AnyFFNConfig | None = None, **overrides) -> ModelConfig:
    """The ``model:`` section of a preset (``versatileffn/presets/``: paper-354m, paper-720m, small, tiny, micro,
    or any run preset), with ``ffn`` (default: the preset's, else dense) and field overrides."""
    config = from_dict(ModelConfig, model_preset(preset), "model")
    return dataclasses.replace(config, **overrides, **({} if ffn is None else {"ffn": ffn}))


@dataclass
class LMOutput:
    """logits [B, T, V]; loss: mean cross-entropy (None without targets); aux_loss: the sum of the FFNs'
    scaled auxiliary losses (detached, for logging — its gradient is already attached to the forward)."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None


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


def packed_attention_mask(group_bt: torch.Tensor, branch_bt: torch.Tensor) -> torch.Tensor:
    """[B, 1, T, T] True where query q may attend key k: k <= q in q's group (>= 0) and on branch 0 (the shared
    prefix) or q's own branch; padding (group -1) attends to itself only."""
    T = group_bt.shape[1]
    idx = torch.arange(T, device=group_bt.device)
    causal = idx[None, :] <= idx[:, None]
    same_group = (group_bt[:, :, None] == group_bt[:, None, :]) & (group_bt[:, :, None] >= 0)
    same_branch = (branch_bt[:, None, :] == 0) | (branch_bt[:, None, :] == branch_bt[:, :, None])
    return ((same_group & same_branch & causal) | (idx[None, :] == idx[:, None]))[:, None]


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor copied without waiting for the device (through pinned memory); others as they are."""
    if t.device == device:
        return t
    if t.device.type == "cpu" and device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


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
        e.g. for several sequences packed into one row. With a cache, the cache's columns, padding and mask."""
        B, T, _ = x.shape
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:  # written in place at the device-side columns, read through a static window
            cols = cache.columns(T)
            cache.k[layer].index_copy_(2, cols, k)
            cache.v[layer].index_copy_(2, cols, v)
            width = cache.window(T)
            k, v = cache.k[layer][:, :, :width], cache.v[layer][:, :, :width]
            attn_mask = cache.attention_mask(cols, width)
        if self.kv_heads != self.n_heads:
            rep = self.n_heads // self.kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        if attn_mask is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class Block(nn.Module):
    """Pre-norm block: H = X + Attention(RMSNorm(X)) (Eq. 1); Y = FFN sublayer(H), residual inside (Eq. 2)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attn = Attention(config)
        self.ffn = config.ffn_layer_config().build()

    def forward(self, x, cos, sin, cache=None, layer=0, attn_mask=None, token_index=None):
        h = x + self.attn(self.attn_norm(x), cos, sin, cache, layer, attn_mask)
        if token_index is None:
            return self.ffn(h)
        # the FFN is token-wise: run it on the real tokens only (its statistics count exactly those); rows by
        # index, not by a boolean mask, whose indexing would read its size on the host in every layer
        flat = h.reshape(-1, h.shape[-1])
        y = self.ffn(flat.index_select(0, token_index)[None])[0].to(h.dtype)
        return flat.index_copy(0, token_index, y).view_as(h)


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

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None,
                *, positions: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                packing: tuple[torch.Tensor, torch.Tensor] | None = None, token_mask: torch.Tensor | None = None,
                logits_at: tuple[torch.Tensor, torch.Tensor] | None = None) -> LMOutput:
        """input_ids [B, T] -> logits [B, T, V]; targets [B, T] aligned with logits (-100 = ignore).

        Several sequences packed into one row (e.g. a context scored once for all its continuations) take:
        positions [B, T], each token's RoPE position; attn_mask [B, 1, T, T], True where a token may attend
        (replaces the causal mask); or instead packing = (group [B, T], branch [B, T]), the layout from which the
        mask is built on the model's device (``packed_attention_mask``: a token sees the earlier tokens of its
        group on branch 0, the shared prefix, or on its own branch; group -1 = padding); token_mask [B, T], the
        real tokens: the FFN runs on these only, so its statistics count exactly them, and padding passes the FFN
        unchanged; logits_at (rows [N], columns [N]): logits only at those tokens, [N, V] (no [B, T, V] tensor
        when a few positions are scored; targets then [N]). positions and token_mask given on the CPU are
        checked there and copied without waiting for the device (on the device they cost one host sync each).
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape [batch, seq]; got {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        start = cache.pos if cache is not None else 0
        # packed rows may be longer than the window; their positions may not
        last = start + T if positions is None else int(positions.max()) + 1
        if last > self.config.max_seq_len:
            raise ValueError(f"sequence length {last} exceeds max_seq_len={self.config.max_seq_len}")
        if cache is not None and start + T > cache.max_len:
            raise ValueError(f"KV cache holds {cache.max_len} positions; {start + T} needed")
        if cache is not None and (positions is not None or attn_mask is not None or packing is not None):
            raise ValueError("positions / attn_mask / packing (packed sequences) cannot be combined with a KV cache")
        if attn_mask is not None and packing is not None:
            raise ValueError("give attn_mask or packing, not both")
        dev = input_ids.device
        if packing is not None:
            attn_mask = packed_attention_mask(*(_to_device(t, dev) for t in packing))
        token_index = None
        if token_mask is not None:  # flat rows of the real tokens, found once for all layers
            token_index = _to_device(token_mask.reshape(-1).nonzero()[:, 0], dev)
        if cache is not None:
            cos, sin = self._cache_rope(cache, T)
        elif positions is None:
            cos, sin = self.rope_cos[start:start + T], self.rope_sin[start:start + T]
        else:  # [B, T, D/2]: each packed token at its own position
            positions = _to_device(positions, dev)
            cos, sin = self.rope_cos[positions], self.rope_sin[positions]
        x = self.embed(input_ids)
        checkpointing = self.config.activation_checkpointing and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            if checkpointing and cache is None:
                # RNG state restored on recompute (same Gumbel sample); statistics not counted twice
                x = torch.utils.checkpoint.checkpoint(block, x, cos, sin, None, i, attn_mask, token_index,
                                                      use_reentrant=False, preserve_rng_state=True,
                                                      context_fn=checkpoint_contexts)
            else:
                x = block(x, cos, sin, cache, i, attn_mask, token_index)
        if cache is not None:
            cache.pos += T
            cache.slot += T
        if logits_at is not None:
            x = x[logits_at]
        logits = self.lm_head(self.final_norm(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        return LMOutput(logits=logits, loss=loss, aux_loss=self.aux_loss())

    def _cache_rope(self, cache: KVCache, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [B, T, D/2] at the cache's device-side columns (no host position)."""
        positions = cache.rope_positions(cache.columns(T))
        return self.rope_cos[positions], self.rope_sin[positions]

    def decode_step(self, input_ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One token per sequence (input_ids [B, 1]) through every layer with the static cache -> logits [B, V].
        Nothing here reads the host: the column and positions come from ``cache.slot`` (advanced on the device),
        so one CUDA graph (or ``torch.compile``) captures the whole step; the caller counts ``cache.advance(1)``
        and keeps within ``cache.max_len`` (no check here: a check would read the device)."""
        cos, sin = self._cache_rope(cache, 1)
        x = self.embed(input_ids)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, cache, i)
        cache.slot += 1
        return self.lm_head(self.final_norm(x[:, -1]))

    def ffn_layers(self) -> list[nn.Module]:
        return [b.ffn for b in self.blocks]

    def ffn_model_config(self) -> ModelConfig:
        return self.config

    def get_output_embeddings(self) -> nn.Linear:
        """The output head (transformers' name, so evaluation code reads every causal LM alike)."""
        return self.lm_head

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------------------------ generation

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, use_cache: bool = True, eos_id: int | None = None, *,
                 top_p: float | None = None, mode: str = "eager", attention_mask: torch.Tensor | None = None,
                 seed: int | None = None) -> torch.Tensor:
        """Greedy (temperature 0) or sampled (top_k / top_p) continuation of input_ids [B, T] -> [B, T + new]
        (``generation.py``): a static KV cache, decode steps eager, in one CUDA graph (mode "graph") or
        compiled ("compile"); rows stop at eos_id (EOS after it; generation ends when every row has stopped);
        attention_mask [B, T]: left padding of prompts of different lengths."""
        from .generation import generate

        return generate(self, input_ids, max_new_tokens, attention_mask, use_cache=use_cache,
                        temperature=temperature, top_k=top_k, top_p=top_p, eos_id=eos_id, mode=mode,
                        seed=seed).tokens


def build_model(config: ModelConfig) -> VersatileLM:
    return VersatileLM(config)


__all__ = ["ModelConfig", "VersatileLM", "LMOutput", "KVCache", "model_config", "build_model", "packed_attention_mask"]
