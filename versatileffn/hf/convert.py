"""Dense Hugging Face causal LM <-> VersatileFFN model: ``convert_dense_model``, ``save_converted``, ``export_dense``.

The conversion is a renaming of the dense weights (each layer's gate/up/down + FFN norm become that
layer's ``versatile_ffn``) plus freshly initialised router / loop-head weights; the export is its inverse
(router and loop head dropped), so a converted-then-exported model is the dense model it came from.
"""
from __future__ import annotations

import contextlib
import copy
import os
import re
import shutil
from pathlib import Path

import torch
import transformers

from ..ffn.common import FRESH_AFTER_CONVERSION
from ..folders import atomic_folder
from .folders import is_converted_hf_dir
from .modeling import ARCHITECTURES, Architecture, VersatileCausalLMMixin, architecture, classes_for, ffn_config_for

# files a Hugging Face model folder may carry besides weights and config; copied verbatim on save/export
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "generation_config.json")
_LAYER_FFN = re.compile(r"^(model\.layers\.\d+\.)versatile_ffn\.(.+)$")


def _weight_renames(arch: Architecture) -> dict[str, str]:
    """versatile_ffn.<name> -> dense decoder-layer <name>, for one layer."""
    norm = "out_norm.weight" if arch.norm_placement == "post" else "norm.weight"
    return {"gate_proj.weight": "mlp.gate_proj.weight", "up_proj.weight": "mlp.up_proj.weight",
            "down_proj.weight": "mlp.down_proj.weight", norm: f"{arch.ffn_norm}.weight"}


def dense_state_dict(model: VersatileCausalLMMixin) -> dict[str, torch.Tensor]:
    """The converted model's weights under the dense model's names (router and loop head dropped)."""
    renames = _weight_renames(model.architecture)
    out = {}
    for key, value in model.state_dict().items():
        m = _LAYER_FFN.match(key)
        if m is None:
            out[key] = value
        elif m.group(2) in renames:
            out[m.group(1) + renames[m.group(2)]] = value
    return out


def versatile_state_dict(dense_sd: dict[str, torch.Tensor], arch: Architecture) -> dict[str, torch.Tensor]:
    """Inverse of ``dense_state_dict`` for the weights the dense model has."""
    to_versatile = {v: k for k, v in _weight_renames(arch).items()}
    layer_key = re.compile(r"^(model\.layers\.\d+\.)(.+)$")
    out = {}
    for key, value in dense_sd.items():
        m = layer_key.match(key)
        if m is not None and m.group(2) in to_versatile:
            out[f"{m.group(1)}versatile_ffn.{to_versatile[m.group(2)]}"] = value
        else:
            out[key] = value
    return out


def load_dense_model(model_or_path, dtype: torch.dtype | None = None, **from_pretrained_kwargs):
    """A dense HF causal LM from a hub id or a local folder (or pass a loaded model through)."""
    if isinstance(model_or_path, torch.nn.Module):
        return model_or_path
    path = str(model_or_path)
    if path.startswith((".", "/", "~")) and not Path(path).expanduser().is_dir():
        raise FileNotFoundError(f"model folder not found: {path}")
    try:
        config = transformers.AutoConfig.from_pretrained(path, **from_pretrained_kwargs)
        _check_dense(config.model_type)  # a clear error before downloading/reading the weights
        if dtype is not None:
            from_pretrained_kwargs["dtype" if _transformers_major() >= 5 else "torch_dtype"] = dtype
        return transformers.AutoModelForCausalLM.from_pretrained(path, **from_pretrained_kwargs)
    except OSError as exc:  # not a local folder, unknown hub id, no network, missing weights
        raise FileNotFoundError(f"could not load the dense model {path!r}: {exc}") from exc


def _check_dense(model_type: str) -> Architecture:
    if model_type.startswith("versatileffn_"):
        raise ValueError(f"the model is already a VersatileFFN model ({model_type}); convert its dense source, or "
                         "use export_dense / --export-dense to get the dense model back")
    return architecture(model_type)


def _transformers_major() -> int:
    return int(transformers.__version__.split(".")[0])


def convert_dense_model(model_or_path, ffn_options: dict | None = None, dtype: torch.dtype | None = None,
                        seed: int | None = 0, **from_pretrained_kwargs) -> VersatileCausalLMMixin:
    """Dense causal LM (hub id, local folder or loaded model) -> its VersatileFFN version.

    ffn_options: VersatileFFN hyper-parameters (n_experts, top_k, d_expert, max_loops, mode, tau_start,
    tau_end, tau_decay, balance_loss_coef); the defaults are the paper's. The router and loop head are
    initialised under ``torch.manual_seed(seed)`` (normal, std = the model's initializer_range; the caller's RNG
    state is restored); every other weight is a copy of the dense model's. Returns the model in eval mode, on
    the dense model's device, in its dtype (the Gumbel temperature stays fp32).
    """
    dense = load_dense_model(model_or_path, dtype=dtype, **from_pretrained_kwargs)
    src = dense.config
    arch = _check_dense(getattr(src, "model_type", type(dense).__name__))
    if type(dense).__name__ != arch.causal_lm_class:
        raise ValueError(f"expected a {arch.causal_lm_class}; got {type(dense).__name__}")
    options = dict(ffn_options or {})
    ffn_config_for(src, options)  # validate options against the model's width before building anything
    config_cls, model_cls = classes_for(arch.model_type)
    fields = {k: v for k, v in src.to_dict().items() if k not in ("model_type", "architectures", "auto_map")}
    config = config_cls.from_dict({**fields, "versatile_ffn": options, "base_model_type": arch.model_type})
    config.architectures = [model_cls.__name__]
    ref_param = next(dense.parameters())
    if not ref_param.dtype.is_floating_point:
        raise ValueError(f"the dense model's weights are {ref_param.dtype} (quantized?); load it in a float dtype")
    with torch.random.fork_rng(devices=[]), _default_dtype(ref_param.dtype):  # seeded, in the dense dtype
        if seed is not None:
            torch.manual_seed(seed)
        model = model_cls(config)
    model.to(device=ref_param.device, dtype=ref_param.dtype)
    missing, unexpected = model.load_state_dict(versatile_state_dict(dense.state_dict(), arch), strict=False)
    own_buffers = dict(model.named_buffers())
    for name, buf in dense.named_buffers():  # RoPE tables etc. (not in state_dict) exactly as the dense model's
        if name in own_buffers:
            owner, _, leaf = name.rpartition(".")
            model.get_submodule(owner)._buffers[leaf] = buf.detach().clone()
    fresh = re.compile(rf"^model\.layers\.\d+\.versatile_ffn\.{FRESH_AFTER_CONVERSION}$")
    missing = [k for k in missing if not fresh.match(k)]
    if missing or unexpected:
        raise ValueError(f"dense -> VersatileFFN weight mapping failed: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}")
    if getattr(dense, "generation_config", None) is not None:
        model.generation_config = copy.deepcopy(dense.generation_config)
    model.refresh_ffn_buffers()
    return model.eval()


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    """Build in the dense model's dtype: no fp32 copy of a bf16 model on the way (peak = 2x the model)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def copy_tokenizer_files(source, out_dir: str | Path) -> list[str]:
    """Copy a local model folder's tokenizer files, or fetch and save the hub tokenizer. Returns what was written."""
    out_dir = Path(out_dir)
    if source is None:
        return []
    src = Path(str(source)).expanduser()
    if src.is_dir():
        written = []
        for name in TOKENIZER_FILES:
            if (src / name).is_file() and not (out_dir / name).exists():
                shutil.copyfile(src / name, out_dir / name)
                written.append(name)
        return written
    try:  # a hub id (users online)
        tok = transformers.AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError):
        return []
    return [Path(p).name for p in tok.save_pretrained(str(out_dir))]


def _save_atomically(write, out_dir: str | Path) -> Path:
    """A temporary sibling swapped in (``folders.atomic_folder``); never replaces a folder versatileffn did not
    write."""
    with atomic_folder(out_dir, "model") as tmp:
        write(tmp)
    return Path(out_dir)


def write_hf_folder(model, folder: Path, tokenizer_source=None, source=None, meta: dict | None = None) -> None:
    """What every saved Hugging Face folder holds: ``save_pretrained``'s files, the self-contained modeling code of a
    VersatileFFN model (``remote_code.py``), the tokenizer files of ``tokenizer_source`` and a model card."""
    from .card import write_model_card
    from .remote_code import write_remote_code

    model.save_pretrained(folder, safe_serialization=True)
    if isinstance(model, VersatileCausalLMMixin):
        write_remote_code(folder)
    copy_tokenizer_files(tokenizer_source, folder)
    write_model_card(folder, model, source=source, meta=meta)


def save_converted(model: VersatileCausalLMMixin, out_dir: str | Path, tokenizer_source=None) -> Path:
    """``save_pretrained`` (safetensors + config + modeling code), the source's tokenizer files and a model card,
    atomically."""
    return _save_atomically(lambda tmp: write_hf_folder(model, tmp, tokenizer_source, source=tokenizer_source),
                            out_dir)


def load_converted(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    """A converted model folder -> the model in eval mode (what the trainer / evaluator use for an HF --model)."""
    if not is_converted_hf_dir(path):
        raise FileNotFoundError(f"{path} is not a converted VersatileFFN model folder (config.json with model_type "
                                "versatileffn_*)")
    config = transformers.AutoConfig.from_pretrained(str(path))
    kwargs = {} if dtype is None else {"dtype" if _transformers_major() >= 5 else "torch_dtype": dtype}
    return classes_for(config.model_type)[1].from_pretrained(str(path), **kwargs).to(device).eval()


def export_dense(model: VersatileCausalLMMixin | str | os.PathLike, out_dir: str | Path) -> Path:
    """Write a converted model (object or folder) back as the dense model it came from.

    The FFN weights are the shared dense FFN's (continued pre-training updated them); the router and loop
    head are dropped. Loadable by plain ``AutoModelForCausalLM.from_pretrained(out_dir)``.
    """
    source_dir = None
    if not isinstance(model, torch.nn.Module):
        source_dir = Path(model)
        if not (source_dir / "config.json").is_file():
            raise FileNotFoundError(f"{source_dir} is not a converted model folder (no config.json)")
        if not is_converted_hf_dir(source_dir):
            raise ValueError(f"{source_dir} is not a converted VersatileFFN model (config.json with model_type "
                             "versatileffn_*); there is nothing to export")
        model = load_converted(source_dir)
    if not isinstance(model, VersatileCausalLMMixin):
        raise TypeError(f"export_dense expects a converted VersatileFFN model; got {type(model).__name__}")
    arch = model.architecture
    fields = {k: v for k, v in model.config.to_dict().items()
              if k not in ("model_type", "architectures", "auto_map", "versatile_ffn", "base_model_type")}
    dense_config = getattr(transformers, arch.config_class).from_dict(fields)
    dense_config.architectures = [arch.causal_lm_class]
    ref_param = next(model.parameters())
    dense = getattr(transformers, arch.causal_lm_class)(dense_config).to(dtype=ref_param.dtype)
    dense.load_state_dict({k: v.to("cpu") for k, v in dense_state_dict(model).items()}, strict=True)
    if getattr(model, "generation_config", None) is not None:
        dense.generation_config = copy.deepcopy(model.generation_config)

    return _save_atomically(lambda tmp: write_hf_folder(dense, tmp, source_dir, source=source_dir), out_dir)


__all__ = ["ARCHITECTURES", "convert_dense_model", "save_converted", "export_dense", "dense_state_dict",
           "versatile_state_dict", "copy_tokenizer_files", "load_dense_model", "load_converted"]
