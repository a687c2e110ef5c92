"""Every saved Hugging Face folder has a model card, and its tokenizer loads without a trust-remote-code prompt."""
import pytest

transformers = pytest.importorskip("transformers")


def _with_tokenizer(folder):
    import tokenizers
    from tokenizers import models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "<eos>": 2, **{w: i + 3 for i, w in enumerate("the river bends north".split())}}
    tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>").save_pretrained(folder)
    return folder


def test_converted_and_dense_folders_have_a_card_and_load_the_tokenizer_without_asking(tmp_path, make_dense,
                                                                                        monkeypatch):
    from versatileffn.hf import convert_dense_model, export_dense, save_converted

    dense = make_dense("llama")
    dense.save_pretrained(tmp_path / "dense")
    _with_tokenizer(tmp_path / "dense")
    model = convert_dense_model(tmp_path / "dense", {"n_experts": 4, "top_k": 2, "max_loops": 3})
    save_converted(model, tmp_path / "conv", tokenizer_source=tmp_path / "dense")
    card = (tmp_path / "conv" / "README.md").read_text()
    n_params = sum(p.numel() for p in model.parameters())
    assert card.startswith("---\nlibrary_name: transformers") and "VersatileLlamaForCausalLM" in card
    assert f"| parameters | {n_params:,} |" in card and "| virtual experts N / top-K / expert width | 4 / 2 / 16 |" in card
    assert "| max loops L_max | 3 |" in card and "| layers | 2 |" in card and str(tmp_path / "dense") in card

    export_dense(tmp_path / "conv", tmp_path / "back")
    back = (tmp_path / "back" / "README.md").read_text()
    assert "A dense llama decoder" in back and "L_max" not in back
    assert f"| parameters | {sum(p.numel() for p in dense.parameters()):,} |" in back

    # the model types are registered (versatileffn is imported): transformers must not ask, stdin closed or not
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail(f"prompted: {a}"))
    monkeypatch.setattr("sys.stdin", None)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "conv")
    assert tok("the river").input_ids == [3, 4] and tok.eos_token == "<eos>"
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "conv")
    assert type(loaded) is type(model)


def test_card_reports_evaluation_results_when_given(make_dense):
    from versatileffn.hf import convert_dense_model, model_card

    model = convert_dense_model(make_dense("llama"), {"n_experts": 4, "top_k": 2})
    card = model_card(model, meta={"val": {"val_loss": 2.345678}}, evals={"arc_easy acc": 0.61})
    assert "| arc_easy acc | 0.61 |" in card and "| validation loss (training run) | 2.3457 |" in card
    assert "Not recorded" in card


def test_card_rows_from_an_eval_results_file():
    from versatileffn.hf.card import evals_from_record

    record = {"limit": 50, "tasks": {"sciq": {"primary_metric": "acc_raw", "primary": 0.61234}}, "average": 0.61234,
              "validation": {"data": "data/demo", "split": "val", "loss": 3.21}}
    assert evals_from_record(record) == {"sciq acc_raw (first 50 per task)": 0.6123,
                                         "average (first 50 per task)": 0.6123,
                                         "validation loss (data/demo, val)": 3.21}
