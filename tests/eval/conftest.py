import pytest
import torch

from versatileffn.ffn import ffn_config_from_name
from versatileffn.model import VersatileLM, model_config


class ByteTokenizer:
    """UTF-8 bytes as token ids (vocab 256, EOS 0): a real tokenizer for tests with tiny models."""

    name = "bytes"
    vocab_size = 256
    eos_id = 0

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(i for i in ids if i).decode("utf-8", errors="replace")


@pytest.fixture
def byte_tok():
    return ByteTokenizer()


def micro_lm(ffn: str = "versatile", **overrides) -> VersatileLM:
    torch.manual_seed(0)
    return VersatileLM(model_config("micro", ffn_config_from_name(ffn), **overrides)).eval()


def brute_logprob(model, ctx: list[int], cont: list[int]) -> float:
    """log p(cont | ctx) from one plain forward of ctx + cont[:-1] (left-truncated to the model window)."""
    L = model.config.max_seq_len
    seq = (ctx + cont)[-(L + 1):]
    n = min(len(cont), L)
    with torch.no_grad():
        lp = model(torch.tensor([seq[:-1]])).logits[0].float().log_softmax(-1)
    T = len(seq) - 1
    return sum(lp[T - n + j, t].item() for j, t in enumerate(seq[-n:]))
