"""``versatileffn export`` / ``export_native``: a native model (a training run's final/) -> a Hugging Face folder with
the native logits, which transformers loads and generates with, and lm-eval's ``hf`` model scores."""
import json
import sys
from pathlib import Path

import pytest
import torch

from versatileffn.errors import UserError
from versatileffn.ffn import ffn_config_from_name
from versatileffn.io import load_model, save_model
from versatileffn.model import VersatileLM, model_config

transformers = pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).parents[1] / "train"))  # train_helpers (pytest runs with --import-mode=importlib)


def _native(tmp_path, kind, **overrides):
    """A micro model with every weight perturbed (norm weights != 1: a wrong mapping shows) and a BPE tokenizer."""
    from versatileffn.data.prepare import train_bpe

    torch.manual_seed(0)
    model = VersatileLM(model_config("micro", ffn_config_from_name(kind), vocab_size=320, n_kv_heads=2,
                                     rope_theta=10_000.0, **overrides))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    words = "the river bends north past the old mill where children swim in summer".split()
    tok = train_bpe([" ".join(words[i:] + words[:i]) for i in range(len(words))] * 4, 300)
    return save_model(model.eval(), tmp_path / kind, tokenizer=tok)


@pytest.mark.parametrize("kind", ["versatile", "dense", "versatile-depth"])
def test_export_has_the_native_logits_and_generates(tmp_path, kind):
    from versatileffn.hf import export_native

    native_dir = _native(tmp_path, kind)
    out, report = export_native(native_dir, tmp_path / "hf")
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(model).__name__ == ("LlamaForCausalLM" if kind == "dense" else "VersatileLlamaForCausalLM")
    native, _ = load_model(native_dir)
    ids = torch.randint(0, 320, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (native(ids).logits - model(input_ids=ids).logits).abs().max().item()
    assert diff <= 1e-5 and report["max_abs_logit_diff"] <= 1e-5
    tok = transformers.AutoTokenizer.from_pretrained(out)
    from versatileffn.tokenizer import load_tokenizer

    assert tok("the river bends").input_ids == load_tokenizer(native_dir).encode("the river bends")
    prompt = tok("the river bends", return_tensors="pt")
    new = model.generate(**prompt, max_new_tokens=6, do_sample=False)[0, prompt.input_ids.shape[1]:]
    ref = native.generate(prompt.input_ids, max_new_tokens=6)[0, prompt.input_ids.shape[1]:]
    assert new.tolist() == ref[:len(new)].tolist()
    text = transformers.pipeline("text-generation", model=model, tokenizer=tok)("the river", max_new_tokens=4,
                                                                               do_sample=False)
    assert text[0]["generated_text"].startswith("the river")
    card = (out / "README.md").read_text()
    assert model.config.architectures[0] in card and f"{sum(p.numel() for p in model.parameters()):,}" in card


def test_export_refuses_what_llama_cannot_express(tmp_path):
    from versatileffn.hf import export_native

    with pytest.raises(UserError, match="QK-norm"):
        export_native(_native(tmp_path, "versatile", qk_norm=True), tmp_path / "a")
    with pytest.raises(UserError, match="'loop'"):
        export_native(_native(tmp_path, "loop2"), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_export_of_a_trained_run_scores_in_lm_eval(tmp_path, token_dir, capsys):
    """A run trained by the project's Trainer, exported by the CLI: lm-eval's own ``hf`` model on the export gives
    the adapter's scores on the native folder, and the card names the run's data."""
    from train_helpers import micro_config

    from versatileffn.cli import main
    from versatileffn.train import Trainer

    Trainer(micro_config(token_dir, tmp_path / "run", "versatile", "train.max_steps=2")).train()
    assert main(["export", "--from", str(tmp_path / "run"), "--out", str(tmp_path / "hf"), "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["from"] == str(tmp_path / "run" / "final") and report["max_abs_logit_diff"] <= 1e-5
    card = (tmp_path / "hf" / "README.md").read_text()
    assert str(token_dir) in card and "tokens seen: 256" in card and "validation loss" in card
    assert main(["export", "--from", str(tmp_path / "run"), "--out", str(token_dir)]) == 2  # not a model folder

    try:
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        pytest.skip('lm-evaluation-harness is not installed: pip install "lm_eval==0.4.*"')
    from versatileffn.eval import harness

    pairs = [("the river bends", " north"), ("children learn to", " swim in summer")]
    ref = HFLM(pretrained=str(tmp_path / "hf"), device="cpu", batch_size=2).loglikelihood(
        [Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)], disable_tqdm=True)
    ours = harness.harness_lm(str(tmp_path / "run" / "final"), device="cpu").loglikelihood(
        [Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)], disable_tqdm=True)
    assert [g for _, g in ref] == [g for _, g in ours]
    assert [lp for lp, _ in ref] == pytest.approx([lp for lp, _ in ours], abs=1e-4)
