"""``versatileffn generate`` on the CPU with a micro model folder (native, with a BPE tokenizer.json)."""
import pytest
import torch

from versatileffn import VersatileLM, ffn_config_from_name, model_config
from versatileffn.cli import main
from versatileffn.data.prepare import train_bpe
from versatileffn.io import save_model

TEXT = ["the river bends north past the old mill", "children learn to swim in summer and skate in winter"] * 20


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = VersatileLM(model_config("micro", ffn_config_from_name("versatile"), vocab_size=300)).eval()
    return save_model(model, tmp_path_factory.mktemp("gen") / "final", tokenizer=train_bpe(TEXT, 300))


def test_generate_streams_text_and_logs_speed_and_loops(model_dir, capsys):
    argv = ["generate", "--model", str(model_dir), "--prompt", "the river", "--max-new-tokens", "10",
            "--device", "cpu"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.endswith("\n") and len(out.strip()) > 0
    assert "tokens/s" in err and "mean executed loops" in err
    assert main(argv + ["-q"]) == 0
    again, quiet_err = capsys.readouterr()
    assert again == out and quiet_err == ""  # greedy: the same text; --quiet: no message
    sampled = argv + ["--temperature", "1.0", "--top-k", "40", "--top-p", "0.9", "--seed", "1", "-q"]
    assert main(sampled) == 0 and main(sampled) == 0
    a, b = capsys.readouterr().out.split("\n")[:2]
    assert a == b


def test_generate_user_errors(model_dir, capsys):
    base = ["generate", "--model", str(model_dir), "--device", "cpu"]
    assert main(base + ["--prompt", "the", "--mode", "graph"]) == 2
    assert "CUDA" in capsys.readouterr().err
    assert main(base + ["--prompt", "the", "--top-p", "2"]) == 2
    assert "top_p" in capsys.readouterr().err
    assert main(base + ["--prompt", ""]) == 2
    assert "empty" in capsys.readouterr().err
