"""Transformers-native VersatileFFN models: a Hugging Face decoder whose FFN sublayers are VersatileFFN.

Design: keep the source architecture's module tree (``LlamaForCausalLM``, ``Qwen2ForCausalLM``, ...)
untouched except for each decoder layer's FFN sublayer, so attention, RoPE, the KV cache, ``generate()``,
gradient checkpointing and ``device_map`` work exactly as in transformers. Per decoder layer:

* ``layer.versatile_ffn`` holds the whole sublayer x -> F-based VersatileFFN(x), built from that layer's own
  gate/up/down weights and its own norm module (so the norm's numerics are the model's in every dtype);
* the layer's ``mlp`` slot returns a scalar zero and its FFN norm slot becomes ``nn.Identity``, so the
  layer's own code computes ``residual + 0 == residual`` exactly (no ``(Y - r) + r`` rounding);
* a forward hook replaces the layer output r by ``versatile_ffn(r)``. Registered in ``__init__``, so it is
  always the first hook (transformers' output-capturing hooks, installed later, see the final output).

Norm placement (the F that the depth loop repeats, Eq. 9):
* pre-norm (Llama, Qwen2, Mistral): F(h) = h + W_out phi(W_proj norm(h)) — ``VersatileFFN`` as is, with
  ``post_attention_layernorm`` as its norm;
* post-norm (OLMo2): F(h) = h + norm(W_out phi(W_proj h)) — ``PostNormVersatileFFN``; its width path cannot
  use the mask identity (the norm is nonlinear in the summed output), see ``PostNormVersatileFFN``.

The recursion touches only the FFN: attention runs once per layer per token, so the standard KV cache is
unchanged (unlike Mixture-of-Recursions / looped LMs, which need a cache per recursion).
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect

import torch
import torch.nn as nn
import torch.nn.functional as F
import transformers

from ..ffn import VersatileFFN, VersatileFFNConfig
from ..ffn.common import SHAPE_FIELDS, switch_balance_loss
from ..ffn.control import FFNControl
from ..model import LMOutput, ModelConfig
from .remote_code import MODELING_FILE, write_remote_code

# VersatileFFNConfig fields the HF config fixes (from hidden_size, intermediate_size, rms_norm_eps, initializer_range)
DERIVED_FIELDS = SHAPE_FIELDS
# a post-norm layer's norm was once reached through its projection (versatile_ffn.down_proj.norm.weight)
OLD_POST_NORM_KEYS = {r"versatile_ffn\.down_proj\.norm\.": "versatile_ffn.out_norm."}
FFN_OPTION_FIELDS = tuple(f.name for f in dataclasses.fields(VersatileFFNConfig)
                          if f.name not in (*DERIVED_FIELDS, "kind"))


# ------------------------------------------------------------------------------------------ FFN pieces

class PostNormVersatileFFN(VersatileFFN):
    """VersatileFFN around a post-norm FFN sublayer (OLMo2): F(h) = h + norm(W_out phi(W_proj h)).

    ``hidden`` skips the pre-norm (``self.norm`` is the identity) and ``output_norm`` applies the layer's own
    ``out_norm`` after the plain ``down_proj`` (``project_out``), so the depth path (loop 1 and ``step``) is
    inherited unchanged; the norm belongs to the layer, not to the projection, so a wrapped ``down_proj`` (a PEFT
    adapter: W_out a + B A a, then the norm) computes the same F as its merged weight. ``post_norm`` tells the width path that each
    expert's output is normalised on its own,
        Y_width = sum_k g_k (H + norm(W_out^(k) phi(W_proj^(k) H))) = H + sum_k g_k norm(W_out^(k) a[I_k])
    (gates sum to 1), and sum_k g_k norm(y_k) != norm(sum_k g_k y_k), so the masked single projection of the
    pre-norm layer would be wrong (``VersatileFFN._width``, and the engine's grouped width path).
    """

    post_norm = True

    def __init__(self, config: VersatileFFNConfig, norm: nn.Module | None = None):
        super().__init__(config)
        self.out_norm = norm if norm is not None else self.norm  # default: the RMSNorm VersatileFFN built
        self.norm = nn.Identity()

    @classmethod
    def from_dense(cls, config: VersatileFFNConfig, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor,
                   norm: nn.Module) -> "PostNormVersatileFFN":
        """Like ``VersatileFFN.from_dense``, but ``norm`` is the output norm module itself (moved, not copied)."""
        d, h = config.d_model, config.d_hidden
        for name, t, shape in (("w_gate", w_gate, (h, d)), ("w_up", w_up, (h, d)), ("w_down", w_down, (d, h))):
            if tuple(t.shape) != shape:
                raise ValueError(f"{name} has shape {tuple(t.shape)}; expected {shape} for d_model={d}, d_hidden={h}")
        module = cls(config, norm=norm).to(device=w_gate.device, dtype=w_gate.dtype)
        with torch.no_grad():
            module.gate_proj.weight.copy_(w_gate)
            module.up_proj.weight.copy_(w_up)
            module.down_proj.weight.copy_(w_down)
        return module

    def output_norm(self, y: torch.Tensor) -> torch.Tensor:
        return self.out_norm(y)


class ZeroBranch(nn.Module):
    """Occupies a decoder layer's ``mlp`` slot: returns 0, so the layer's own residual add yields r exactly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(())


@dataclasses.dataclass
class FFNCall:
    """What one model forward asks of every FFN sublayer (set on each decoder layer by the model's ``forward``):
    token_index: flat rows of the real tokens (the FFN runs on, and its statistics count, only those);
    router_logits: a list collecting each layer's router logits on those rows (``output_router_logits``)."""

    token_index: torch.Tensor | None = None
    router_logits: list | None = None


def _run_ffn(ffn: VersatileFFN, h: torch.Tensor, call: FFNCall | None) -> torch.Tensor:
    if call is None or (call.token_index is None and call.router_logits is None):
        return ffn(h)
    flat = h.reshape(-1, h.shape[-1])
    rows = flat if call.token_index is None else flat.index_select(0, call.token_index)
    if call.router_logits is not None and ffn.router is not None:
        call.router_logits.append(ffn.router(rows))
    if call.token_index is None:
        return ffn(h)
    # rows by index, as VersatileLM's blocks do: padding keeps the attention half's output and is never counted
    return flat.index_copy(0, call.token_index, ffn(rows[None])[0].to(h.dtype)).view_as(h)


def _apply_versatile_ffn(layer: nn.Module, args, output):
    """Forward hook: the decoder layer's output (attention half only) -> versatile_ffn(output)."""
    call = getattr(layer, "ffn_call", None)
    if isinstance(output, tuple):  # transformers < 4.54 returns (hidden_states, ...)
        return (_run_ffn(layer.versatile_ffn, output[0], call),) + tuple(output[1:])
    return _run_ffn(layer.versatile_ffn, output, call)


# ------------------------------------------------------------------------------------- architectures

@dataclasses.dataclass(frozen=True)
class Architecture:
    """What the converter needs to know about a supported source architecture."""

    model_type: str      # the source's config.model_type
    config_class: str    # transformers class names (resolved lazily: OLMo2 needs transformers >= 4.47)
    causal_lm_class: str
    norm_placement: str  # "pre": F(h) = h + mlp(norm(h));  "post": F(h) = h + norm(mlp(h))
    ffn_norm: str        # the decoder layer's attribute holding the FFN sublayer's norm

    @property
    def versatile_model_type(self) -> str:
        return f"versatileffn_{self.model_type}"


ARCHITECTURES: dict[str, Architecture] = {a.model_type: a for a in (
    Architecture("llama", "LlamaConfig", "LlamaForCausalLM", "pre", "post_attention_layernorm"),
    Architecture("qwen2", "Qwen2Config", "Qwen2ForCausalLM", "pre", "post_attention_layernorm"),
    Architecture("mistral", "MistralConfig", "MistralForCausalLM", "pre", "post_attention_layernorm"),
    Architecture("olmo2", "Olmo2Config", "Olmo2ForCausalLM", "post", "post_feedforward_layernorm"),
)}


def architecture(model_type: str) -> Architecture:
    if model_type not in ARCHITECTURES:
        raise ValueError(f"unsupported architecture {model_type!r}; VersatileFFN conversion supports model_type "
                         f"in {sorted(ARCHITECTURES)} (Llama family incl. SmolLM/TinyLlama, Qwen2, Mistral, OLMo2)")
    arch = ARCHITECTURES[model_type]
    if not hasattr(transformers, arch.causal_lm_class):
        raise ValueError(f"architecture {model_type!r} needs a newer transformers than {transformers.__version__} "
                         f"(no transformers.{arch.causal_lm_class})")
    return arch


def ffn_config_for(config, options: dict) -> VersatileFFNConfig:
    """The VersatileFFNConfig of one layer of an HF decoder config + user options (n_experts, top_k, ...)."""
    unknown = sorted(set(options) - set(FFN_OPTION_FIELDS))
    if unknown:
        raise ValueError(f"unknown VersatileFFN option(s) {unknown}; allowed: {list(FFN_OPTION_FIELDS)} "
                         f"({', '.join(DERIVED_FIELDS)} come from the model config)")
    act = getattr(config, "hidden_act", None)
    if act != "silu":
        raise ValueError(f"non-SwiGLU MLP: {config.model_type} has hidden_act={act!r}; VersatileFFN reuses a SwiGLU "
                         "FFN (hidden_act='silu', gate/up/down projections)")
    if getattr(config, "mlp_bias", False):
        raise ValueError(f"{config.model_type} has mlp_bias=True; VersatileFFN's FFN has no biases")
    try:
        return VersatileFFNConfig(d_model=config.hidden_size, d_hidden=config.intermediate_size,
                                  norm_eps=config.rms_norm_eps, init_std=config.initializer_range, **options)
    except ValueError as exc:
        raise ValueError(f"VersatileFFN options {options} do not fit {config.model_type} (hidden_size="
                         f"{config.hidden_size}, intermediate_size={config.intermediate_size} = d_hidden): {exc}"
                         ) from exc


# ------------------------------------------------------------------------------------------ the model

class VersatileCausalLMMixin(FFNControl):
    """Turns a transformers ``XForCausalLM`` into its VersatileFFN version; same driver API as ``VersatileLM``.

    ``forward(..., labels=...)``'s loss already contains the balance loss (attached through autograd by
    every VersatileFFN in training mode): back-propagate ``loss`` only; ``aux_loss()`` is for logging.
    """

    architecture: Architecture
    # folders saved while tau was an annealed buffer hold it; it comes from the schedule now
    _keys_to_ignore_on_load_unexpected = [r"versatile_ffn\.tau$"]

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        ffn_config = ffn_config_for(config, getattr(config, "versatile_ffn", None) or {})
        for layer in self.model.layers:
            mlp, norm = layer.mlp, getattr(layer, self.architecture.ffn_norm)
            if self.architecture.norm_placement == "pre":
                ffn = VersatileFFN.from_dense(ffn_config, mlp.gate_proj.weight, mlp.up_proj.weight,
                                              mlp.down_proj.weight, norm.weight)
                ffn.norm = norm  # the model's own norm module: identical numerics in every dtype
            else:
                ffn = PostNormVersatileFFN.from_dense(ffn_config, mlp.gate_proj.weight, mlp.up_proj.weight,
                                                      mlp.down_proj.weight, norm)
            layer.versatile_ffn = ffn
            layer.mlp = ZeroBranch()
            setattr(layer, self.architecture.ffn_norm, nn.Identity())
            layer.register_forward_hook(_apply_versatile_ffn)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        renames = cls.architecture.norm_placement == "post" and int(transformers.__version__.split(".")[0]) >= 5
        if renames:  # folders saved while the projection held the post-norm
            kwargs["key_mapping"] = {**OLD_POST_NORM_KEYS, **(kwargs.get("key_mapping") or {})}
        model = super().from_pretrained(*args, **kwargs)
        if renames:  # transformers would save with the loaded names again: new folders get the new names
            model._weight_conversions = [c for c in getattr(model, "_weight_conversions", None) or []
                                         if getattr(c, "source_patterns", None) != list(OLD_POST_NORM_KEYS)] or None
        model.refresh_ffn_buffers()
        return model

    @torch.no_grad()
    def refresh_ffn_buffers(self) -> None:
        """Rebuild what is not saved (loaders may leave such buffers uninitialised): expert membership, statistics
        and tau (fp32, the schedule's step 0; training sets it per step)."""
        for m in self.versatile_layers():
            m._buffers["tau"] = torch.full((), m.temperature_at(0), dtype=torch.float32, device=m.tau.device)
            m.expert_membership.zero_()
            for k, (lo, hi) in enumerate(m.config.expert_slices()):
                m.expert_membership[k, lo:hi] = 1.0
            m.reset_stats()

    def forward(self, *args, token_mask: torch.Tensor | None = None, output_router_logits: bool | None = None,
                **kwargs):
        """transformers' forward, plus:

        * token_mask [B, T] (bool, as ``VersatileLM.forward``'s): the FFN runs on, and the loop statistics count,
          only the marked tokens (padding left out); the other positions keep the attention half's output.
        * output_router_logits (default ``config.output_router_logits``): the MoE convention of Mixtral, Qwen2-MoE
          and OLMoE: a ``MoeCausalLMOutputWithPast`` with ``router_logits`` (per layer, [real tokens, N], fp32)
          and ``aux_loss`` = sum over layers of the Switch balance loss, which ``loss`` includes scaled by
          ``config.router_aux_loss_coef`` when labels are given (the training objective of every layer).
        """
        if output_router_logits is None:
            output_router_logits = bool(getattr(self.config, "output_router_logits", False))
        index = None
        if token_mask is not None:  # found once for all layers (one host read), as VersatileLM does
            index = token_mask.to(self.model.embed_tokens.weight.device).reshape(-1).nonzero()[:, 0]
        call = FFNCall(index, [] if output_router_logits else None)
        # kept after the call: activation checkpointing re-runs the layers in the backward with the same rows
        for layer in self.model.layers:
            layer.ffn_call = call
        if not output_router_logits:
            return super().forward(*args, **kwargs)
        return_dict = kwargs.pop("return_dict", None)
        out = super().forward(*args, return_dict=True, **kwargs)
        out = self._moe_output(out, call.router_logits)
        return out if return_dict is not False else out.to_tuple()

    def _moe_output(self, out, router_logits: list):
        aux = None
        if router_logits:
            k = self.config.num_experts_per_tok
            aux = sum(switch_balance_loss(lg, lg.topk(k, dim=-1).indices) for lg in router_logits)
        loss = out.loss
        if loss is not None and aux is not None:
            # in training, every layer already adds coef * aux to the gradient (attach_aux_loss): count its value
            attached = self.training and torch.is_grad_enabled()
            scaled = self.config.router_aux_loss_coef * aux
            loss = loss + (scaled.detach() if attached else scaled).to(loss.dtype)
        fields = {k: v for k, v in out.items() if k != "loss"}  # logits, the cache, hidden states, attentions
        return transformers.modeling_outputs.MoeCausalLMOutputWithPast(
            loss=loss, aux_loss=aux, router_logits=tuple(router_logits), **fields)

    # ------------------------------------------------------------------ VersatileLM-compatible driver API

    def lm_forward(self, input_ids: torch.Tensor, targets: torch.Tensor | None = None) -> LMOutput:
        """``VersatileLM.forward``'s contract for the project's trainer / evaluator: targets [B, T] aligned
        with the logits (no shift; -100 ignored), mean fp32 cross-entropy, aux_loss for logging."""
        logits = self(input_ids=input_ids, use_cache=False).logits
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        return LMOutput(logits=logits, loss=loss, aux_loss=self.aux_loss())

    def ffn_layers(self) -> list[VersatileFFN]:
        return [layer.versatile_ffn for layer in self.model.layers]

    def ffn_model_config(self) -> ModelConfig:
        """The equivalent ``ModelConfig`` for FFN accounting (``versatileffn.flops``, the evaluator's FLOP table):
        FFN shape, depth, vocabulary and VersatileFFN options. It does not describe the HF attention."""
        c, ffn = self.config, self.versatile_layers()[0].config
        common = dict(vocab_size=c.vocab_size, d_model=ffn.d_model, n_layers=c.num_hidden_layers, d_hidden=ffn.d_hidden,
                      max_seq_len=c.max_position_embeddings, norm_eps=ffn.norm_eps, init_std=ffn.init_std,
                      ffn=ffn.unshaped())
        try:
            return ModelConfig(n_heads=c.num_attention_heads, n_kv_heads=getattr(c, "num_key_value_heads", None),
                               **common)
        except ValueError:  # head layouts ModelConfig cannot express (odd head dims): irrelevant to FFN counts
            return ModelConfig(n_heads=1, **common)

    @contextlib.contextmanager
    def identity_mode(self):
        """Every FFN runs exactly one loop of the dense FFN and no width path: the dense model's function.

        Puts the model in eval mode (the loop cap is an inference knob) and restores mode, cap and training.
        """
        layers = self.versatile_layers()
        if any(not m.uses_depth for m in layers):
            raise ValueError("identity mode needs the depth path; mode='width' has none (use gated/depth/ungated)")
        saved = [(m.mode, m.runtime.loop_cap) for m in layers]
        was_training = self.training
        self.eval()
        try:
            for m in layers:
                m.mode, m.runtime.loop_cap = "depth", 1
            yield self
        finally:
            for m, (mode, cap) in zip(layers, saved):
                m.mode, m.runtime.loop_cap = mode, cap
            self.train(was_training)

    # --------------------------------------------------------------------------------------- saving

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' save plus the modeling file and ``auto_map`` for ``trust_remote_code=True``."""
        stem = MODELING_FILE[:-3]
        self.config.auto_map = {"AutoConfig": f"{stem}.{type(self.config).__name__}",
                                "AutoModelForCausalLM": f"{stem}.{type(self).__name__}"}
        # A trust_remote_code load marks the (shared) classes for transformers' own code copying, which
        # cannot copy a package with relative imports; our modeling file replaces it.
        classes = (type(self), type(self.config))
        saved = [c.__dict__.get("_auto_class") for c in classes]
        try:
            for c in classes:
                c._auto_class = None
            out = super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            for c, value in zip(classes, saved):
                if value is None:
                    del c._auto_class
                else:
                    c._auto_class = value
        write_remote_code(save_directory)
        return out


def _ffn_option(name: str):
    """A read-only config property: the VersatileFFN option ``name`` (its default where the config leaves it out)."""
    default = VersatileFFNConfig.__dataclass_fields__[name].default
    return property(lambda self: (getattr(self, "versatile_ffn", None) or {}).get(name, default),
                    doc=f"VersatileFFN's ``{name}`` (read-only; set it in ``versatile_ffn``)")


# the MoE names transformers users and tools read (Mixtral, Qwen2-MoE, OLMoE), over the nested VersatileFFN options
MOE_CONFIG_ALIASES = {"num_experts": "n_experts", "num_experts_per_tok": "top_k",
                      "router_aux_loss_coef": "balance_loss_coef", "max_loops": "max_loops"}


def tensor_parallel_plan(base_config: type) -> dict | None:
    """The source's tensor-parallel plan without its ``mlp.*`` entries: attention (and the LM head) are sharded, the
    VersatileFFN sublayer is replicated, each rank running it on the full hidden states that the row-wise
    ``o_proj`` all-reduces. The FFN is not split: its virtual experts are windows of the hidden units (Eq. 5), and
    the width path's mask, the post-norm experts and the engine's grouped GEMM read windows a column-wise split of
    gate/up would cut across ranks. (The inherited ``mlp.*`` entries would match nothing: the FFN lives in
    ``versatile_ffn``.)"""
    plan = getattr(base_config, "base_model_tp_plan", None)
    return None if plan is None else {k: v for k, v in plan.items() if ".mlp." not in k}


def _forward_for(base_model: type):
    """The mixin's forward under the source forward's signature plus its own options: the HF Trainer (unused
    dataset columns) and generation read the parameter names from the signature."""
    def forward(self, *args, **kwargs):
        return VersatileCausalLMMixin.forward(self, *args, **kwargs)

    params = list(inspect.signature(base_model.forward).parameters.values())
    ours = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for p in inspect.signature(VersatileCausalLMMixin.forward).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY]
    var_kw = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
    params = [p for p in params if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    forward.__signature__ = inspect.Signature(params + ours + var_kw)
    forward.__doc__ = VersatileCausalLMMixin.forward.__doc__
    return forward


def _make_classes(arch: Architecture) -> tuple[type, type]:
    base_config = getattr(transformers, arch.config_class)
    base_model = getattr(transformers, arch.causal_lm_class)
    name = "Versatile" + arch.causal_lm_class.replace("ForCausalLM", "")
    config_cls = type(f"{name}Config", (base_config,), {
        **{alias: _ffn_option(option) for alias, option in MOE_CONFIG_ALIASES.items()},
        "base_model_tp_plan": tensor_parallel_plan(base_config),
        "model_type": arch.versatile_model_type, "__module__": __name__,
        "__doc__": f"{arch.config_class} + ``versatile_ffn`` (VersatileFFN options) and ``base_model_type``."})
    model_cls = type(f"{name}ForCausalLM", (VersatileCausalLMMixin, base_model), {
        "config_class": config_cls, "architecture": arch, "__module__": __name__,
        "forward": _forward_for(base_model),
        "__doc__": f"{arch.causal_lm_class} whose FFN sublayers are VersatileFFN ({arch.norm_placement}-norm F)."})
    return config_cls, model_cls


# model_type ("versatileffn_llama") -> (config class, model class), for the architectures this transformers has
CLASSES: dict[str, tuple[type, type]] = {}
for _arch in ARCHITECTURES.values():
    if hasattr(transformers, _arch.causal_lm_class):
        _cfg, _model = _make_classes(_arch)
        globals()[_cfg.__name__], globals()[_model.__name__] = _cfg, _model  # importable by name (remote code)
        CLASSES[_arch.versatile_model_type] = (_cfg, _model)


def classes_for(model_type: str) -> tuple[type, type]:
    """(config class, model class) for a source model_type ("llama") or a converted one ("versatileffn_llama")."""
    source = model_type.removeprefix("versatileffn_")
    return CLASSES[architecture(source).versatile_model_type]


def register() -> None:
    """Make ``AutoConfig`` / ``AutoModelForCausalLM.from_pretrained(DIR)`` resolve converted models."""
    for config_cls, model_cls in CLASSES.values():
        transformers.AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
        transformers.AutoModelForCausalLM.register(config_cls, model_cls, exist_ok=True)


register()
