"""What the trainer needs to know about the model it trains, behind one small interface.

``NativeModel``: ``VersatileLM`` built from the run config's ``model:`` section. ``ConvertedHFModel``: a converted
Hugging Face folder (``train.hf_model``, ``versatileffn convert``). Both are driven through ``FFNControl``; what
differs (where the limits come from, what is wrapped for DDP / FSDP2, the checkpoint's config.json, the final
folder) lives here, so the trainer's loop has no branch on the model's origin.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from ..config import to_dict
from ..io import FORMAT, check_weights, save_model
from ..tokenizer import load_tokenizer
from .config import RunConfig


class NativeModel:
    """``VersatileLM`` from ``model:``; ``final/`` is ``io.save_model``'s folder."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg

    def limits(self) -> dict:
        """Vocabulary and window with the names an error message should cite (read before building the model)."""
        m = self.cfg.model
        return {"vocab_size": m.vocab_size, "vocab_name": "model.vocab_size", "max_len": m.max_seq_len,
                "max_len_name": "model.max_seq_len", "vocab_fix": "set model.vocab_size >= {}"}

    def build(self, device: torch.device) -> torch.nn.Module:
        return self.cfg.model.build().to(device)

    def forward_module(self, model: torch.nn.Module) -> torch.nn.Module:
        """What DDP / FSDP2 / torch.compile wrap: a module whose forward is (input_ids, targets) -> LMOutput."""
        return model

    def config_json(self, model: torch.nn.Module) -> str:
        return json.dumps({"format": FORMAT, "model": to_dict(model.config)}, indent=2)

    def save_final(self, model: torch.nn.Module, state: dict, path: Path, tokenizer_file: Path, extra: dict) -> None:
        clone = model.config.build()
        clone.load_state_dict(state)
        tok = load_tokenizer(tokenizer_file) if tokenizer_file.is_file() else None
        save_model(clone, path, tokenizer=tok, extra=extra)


class LMForward(torch.nn.Module):
    """Calls a converted HF model's ``lm_forward(input_ids, targets)``: its ``forward`` is transformers'
    (input_ids, attention_mask, ...), and DDP / FSDP2 / torch.compile wrap a module's ``forward``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor | None = None):
        return self.model.lm_forward(input_ids, targets)


class ConvertedHFModel:
    """A converted Hugging Face folder in place of ``model:``; ``final/`` is ``save_converted``'s folder."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.source = Path(cfg.train.hf_model)

    def limits(self) -> dict:
        from ..hf.folders import read_converted_hf_config

        hf, where = read_converted_hf_config(self.source), f"{self.source}/config.json: "
        return {"vocab_size": hf["vocab_size"], "vocab_name": where + "vocab_size",
                "max_len": hf["max_position_embeddings"], "max_len_name": where + "max_position_embeddings",
                "vocab_fix": "prepare the data with the model's own tokenizer"}

    def build(self, device: torch.device) -> torch.nn.Module:
        from ..hf import load_converted

        check_weights(self.source)  # a truncated safetensors file: one message, not transformers' traceback
        return load_converted(self.source, device, torch.float32)  # fp32 master weights; bf16 from autocast

    def forward_module(self, model: torch.nn.Module) -> torch.nn.Module:
        return LMForward(model)

    def config_json(self, model: torch.nn.Module) -> str:
        return model.config.to_json_string()

    def save_final(self, model: torch.nn.Module, state: dict, path: Path, tokenizer_file: Path, extra: dict) -> None:
        """Reloads with ``AutoModelForCausalLM.from_pretrained``. Tokenizer: the source folder's files, else the
        data's tokenizer (what the model was trained on) saved as a transformers tokenizer with its EOS token."""
        import copy

        from transformers import PreTrainedTokenizerFast

        from ..hf import save_converted
        from ..hf.convert import TOKENIZER_FILES
        from ..hf.modeling import classes_for

        clone = classes_for(model.config.model_type)[1](copy.deepcopy(model.config))
        clone.load_state_dict(state)
        clone.refresh_ffn_buffers()
        source = self.source
        with tempfile.TemporaryDirectory() as tmp:
            has_tokenizer = any((source / n).is_file() for n in TOKENIZER_FILES if n.startswith("tokenizer"))
            if not has_tokenizer and tokenizer_file.is_file():
                tok = load_tokenizer(tokenizer_file)
                PreTrainedTokenizerFast(tokenizer_object=tok.tok, eos_token=tok.tok.id_to_token(tok.eos_id)
                                        ).save_pretrained(tmp)
                source = Path(tmp)
            save_converted(clone, path, tokenizer_source=source)


def model_for(cfg: RunConfig) -> NativeModel | ConvertedHFModel:
    return ConvertedHFModel(cfg) if cfg.train.hf_model else NativeModel(cfg)
