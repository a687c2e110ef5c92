"""A native versatileffn model (``io.save_model``'s folder: what ``versatileffn train`` writes to ``final/``) -> a
Hugging Face folder that ``AutoModelForCausalLM`` loads, lm-eval's ``hf`` model scores and ``generate`` /
``pipeline`` run.

The native LM (``model.py``) has the Llama layout exactly: pre-norm blocks (``attn_norm`` -> attention, the FFN's
own norm -> SwiGLU), RMSNorm computed in fp32, rotate-half RoPE with ``rope_theta``, no biases, an untied output
head, a final RMSNorm. So a dense model becomes a ``LlamaForCausalLM`` and a VersatileFFN model the converted
``VersatileLlamaForCausalLM`` (``hf/modeling.py``: Llama with each FFN sublayer a ``VersatileFFN`` whose norm is
the layer's ``post_attention_layernorm``); the weights are renamed, never changed. (HF's OLMo2 is post-norm, so it
is not the match despite the name of the native model's style.) What Llama cannot express is refused: QK-norm and
the k-Loop / MoE baselines' FFNs.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import torch
import transformers

from ..config import to_dict
from ..errors import UserError
from ..io import load_model, require_finite
from ..model import ModelConfig, VersatileLM
from ..tokenizer import load_tokenizer
from .convert import _save_atomically, write_hf_folder
from .modeling import FFN_OPTION_FIELDS, classes_for

# native name -> Llama name (the decoder layer's part); the FFN's norm goes to post_attention_layernorm when dense
_BLOCK_RENAMES = {"attn_norm.": "input_layernorm.", "attn.": "self_attn."}
_DENSE_FFN_RENAMES = {"norm.weight": "post_attention_layernorm.weight", "gate_proj.weight": "mlp.gate_proj.weight",
                      "up_proj.weight": "mlp.up_proj.weight", "down_proj.weight": "mlp.down_proj.weight"}
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
EXPORTABLE_FFNS = ("dense", "versatile")


def check_exportable(config: ModelConfig) -> None:
    if config.qk_norm:
        raise UserError("the model uses QK-norm (model.qk_norm=true), which the Hugging Face Llama layout has no place "
                        "for; only models trained with qk_norm=false export")
    if config.ffn.kind not in EXPORTABLE_FFNS:
        raise UserError(f"the model's FFN is {config.ffn.kind!r}; Hugging Face export covers {list(EXPORTABLE_FFNS)} "
                        "(the k-Loop and MoE baselines have no transformers class)")


def hf_config(config: ModelConfig, eos_id: int | None = None):
    """The transformers config of the native ``config``: ``LlamaConfig``, or the converted VersatileFFN one."""
    check_exportable(config)
    fields = dict(vocab_size=config.vocab_size, hidden_size=config.d_model, intermediate_size=config.d_hidden,
                  num_hidden_layers=config.n_layers, num_attention_heads=config.n_heads,
                  num_key_value_heads=config.kv_heads, head_dim=config.head_dim,
                  max_position_embeddings=config.max_seq_len, rope_theta=config.rope_theta,
                  rms_norm_eps=config.norm_eps, initializer_range=config.init_std, hidden_act="silu",
                  attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
                  bos_token_id=eos_id, eos_token_id=eos_id)
    if config.ffn.kind == "dense":
        out = transformers.LlamaConfig(**fields)
        out.architectures = ["LlamaForCausalLM"]
        return out
    config_cls, model_cls = classes_for("llama")
    options = {k: v for k, v in to_dict(config.ffn).items() if k in FFN_OPTION_FIELDS}
    out = config_cls(**fields, versatile_ffn=options, base_model_type="llama")
    out.architectures = [model_cls.__name__]
    return out


def hf_state_dict(model: VersatileLM) -> dict[str, torch.Tensor]:
    """The native weights under the Llama names (the same tensors)."""
    dense = model.config.ffn.kind == "dense"
    out = {}
    for key, value in model.state_dict().items():
        m = _BLOCK.match(key)
        if m is None:
            name = {"embed.weight": "model.embed_tokens.weight", "final_norm.weight": "model.norm.weight"}.get(key, key)
            out[name] = value
            continue
        layer, rest = f"model.layers.{m.group(1)}.", m.group(2)
        if rest.startswith("ffn."):
            rest = rest[len("ffn."):]
            out[layer + (_DENSE_FFN_RENAMES[rest] if dense else "versatile_ffn." + rest)] = value
            continue
        for old, new in _BLOCK_RENAMES.items():
            if rest.startswith(old):
                rest = new + rest[len(old):]
                break
        out[layer + rest] = value
    return out


def to_hf_model(model: VersatileLM, eos_id: int | None = None) -> torch.nn.Module:
    """The transformers model computing the native ``model``'s function (fp32, eval mode)."""
    config = hf_config(model.config, eos_id)
    cls = transformers.LlamaForCausalLM if model.config.ffn.kind == "dense" else classes_for("llama")[1]
    with torch.random.fork_rng(devices=[]):  # the fresh init is overwritten; the caller's RNG stays as it was
        hf = cls(config)
    hf.load_state_dict({k: v.detach().to("cpu", torch.float32) for k, v in hf_state_dict(model).items()}, strict=True)
    if hasattr(hf, "refresh_ffn_buffers"):
        hf.refresh_ffn_buffers()
    return hf.eval()


def _tokenizer_files(native_dir: Path, tmp: Path) -> tuple[Path | None, int | None]:
    """The native folder's ``tokenizer.json`` saved as a transformers tokenizer (with its EOS token) in ``tmp``."""
    if not (native_dir / "tokenizer.json").is_file():
        return None, None
    tok = load_tokenizer(native_dir / "tokenizer.json")
    eos = tok.tok.id_to_token(tok.eos_id)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok.tok, eos_token=eos, bos_token=eos).save_pretrained(tmp)
    return tmp, tok.eos_id


@torch.no_grad()
def max_logit_diff(native: VersatileLM, hf: torch.nn.Module, n_tokens: int = 32) -> float:
    """Max |logits difference| between the native model and its export on a random batch (0 up to fp32 rounding)."""
    n = min(n_tokens, native.config.max_seq_len)
    ids = torch.randint(0, native.config.vocab_size, (2, n), generator=torch.Generator().manual_seed(0))
    return float((native.eval()(ids).logits.float() - hf(input_ids=ids).logits.float()).abs().max())


def native_folder(source: str | Path) -> Path:
    """``source`` itself, or the ``final/`` folder of a training run folder."""
    source = Path(source)
    if not (source / "config.json").is_file() and (source / "final" / "config.json").is_file():
        return source / "final"
    return source


def export_native(source: str | Path, out_dir: str | Path, check: bool = True) -> tuple[Path, dict]:
    """Write the native model folder ``source`` (``io.save_model``; a run folder means its ``final/``) as a Hugging
    Face folder: weights, config (+ the self-contained modeling code for a VersatileFFN model), tokenizer, model
    card. ``check``: the export's logits must equal the native model's on a random batch (fp32 rounding), else
    nothing is written. Returns (the folder, a report)."""
    source = native_folder(source)
    model, meta = load_model(source)
    check_exportable(model.config)
    require_finite(model.state_dict(), f"the model in {source}")  # nothing is written from NaN/Inf weights
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir, eos_id = _tokenizer_files(source, Path(tmp))
        hf = to_hf_model(model, eos_id)
        report = {"from": str(source), "out": str(out_dir), "architecture": hf.config.architectures[0],
                  "params": sum(p.numel() for p in hf.parameters())}
        if check:
            report["max_abs_logit_diff"] = diff = max_logit_diff(model, hf)
            if not diff <= 1e-4:
                raise UserError(f"the exported model's logits differ from the native model's by {diff:.3g}; not "
                                "writing it (please report this)")

        path = _save_atomically(lambda folder: write_hf_folder(hf, folder, tok_dir, source=source, meta=meta), out_dir)
    return path, report


__all__ = ["export_native", "native_folder", "max_logit_diff", "to_hf_model", "hf_config", "hf_state_dict", "check_exportable"]
