import pytest
import torch

from versatileffn.eval import harness
from versatileffn.io import save_model

from .conftest import ByteTokenizer, brute_logprob, micro_lm


def test_loglikelihood_moves_trailing_space_and_flags_greedy(byte_tok):
    model = micro_lm()
    out = harness.loglikelihood(model, byte_tok, [("Question: sky? ", "blue"), ("", "hello")])
    # lm-eval's encoding: "Question: sky?" | " blue"; an empty context conditions on EOS
    assert out[0][0] == pytest.approx(brute_logprob(model, byte_tok.encode("Question: sky?"),
                                                    byte_tok.encode(" blue")), abs=1e-4)
    assert out[1][0] == pytest.approx(brute_logprob(model, [0], byte_tok.encode("hello")), abs=1e-4)
    assert all(isinstance(g, bool) for _, g in out)


def test_greedy_flag_marks_the_models_own_continuation():
    from versatileffn.eval.scoring import score_token_requests

    model = micro_lm()
    ctx = [97, 98, 99]
    gen = model.generate(torch.tensor([ctx]), max_new_tokens=4)[0, 3:].tolist()
    with torch.no_grad():
        worst = model(torch.tensor([ctx])).logits[0, -1].argmin().item()
    greedy, other = score_token_requests(model, [(ctx, gen), (ctx, [worst] + gen[1:])])
    assert greedy.is_greedy and not other.is_greedy and greedy.logprob > other.logprob


def test_loglikelihood_rolling_is_the_whole_sequence_likelihood(byte_tok):
    model = micro_lm(max_seq_len=16)
    text = "rolling windows over a text longer than the window"
    ids = byte_tok.encode(text)
    got, = harness.loglikelihood_rolling(model, byte_tok, [text])
    # window k predicts ids[16k:16k+16] conditioned on the preceding text (left-truncated to fit)
    want = sum(brute_logprob(model, [0] + ids[:s], ids[s:s + 16]) for s in range(0, len(ids), 16))
    assert got == pytest.approx(want, abs=1e-3)


def test_generate_until_stops(byte_tok):
    model = micro_lm()
    full, = harness.generate_until(model, byte_tok, [("Hello", {"max_gen_toks": 6})])
    assert 2 < len(full.encode("utf-8")) <= 6 * 3  # (U+FFFD replacements are 3 bytes)
    stop = full[1]
    cut, = harness.generate_until(model, byte_tok, [("Hello", {"until": [stop], "max_gen_toks": 6})])
    assert cut == full[:full.index(stop)]


@pytest.mark.olmo_eval
def test_adapter_class_without_lm_eval(tmp_path):
    class FakeLM:  # stands in for lm_eval.api.model.LM
        def __init__(self):
            pass

    class Inst:
        def __init__(self, *args):
            self.args = args

    tok_dir = tmp_path / "m"
    model = micro_lm(vocab_size=50304)
    from versatileffn.tokenizer import load_tokenizer
    save_model(model, tok_dir, tokenizer=load_tokenizer("olmo"))
    lm = harness.make_harness_class(FakeLM)(pretrained=str(tok_dir), device="cpu", batch_size="4")
    (lp, greedy), = lm.loglikelihood([Inst("Question: sky?\nAnswer:", " blue")], disable_tqdm=True)
    assert lp < 0 and lm.batch_size == 4


def test_registers_with_lm_eval_when_installed():
    pytest.importorskip("lm_eval.api.registry")
    from lm_eval.api.registry import get_model

    cls = harness.register()
    assert get_model(harness.MODEL_NAME) is cls and harness.register() is cls


def test_matches_lm_eval_hf_reference_when_installed(tmp_path):
    """Cross-check against lm-evaluation-harness's own HF scorer on a tiny Llama (skipped without lm_eval)."""
    pytest.importorskip("lm_eval.models.huggingface")
    transformers = pytest.importorskip("transformers")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from versatileffn.eval import load_task, score_requests
    from versatileffn.eval.report import load_for_eval
    from versatileffn.tokenizer import load_tokenizer

    olmo = load_tokenizer("olmo")
    cfg = transformers.LlamaConfig(vocab_size=50304, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, max_position_embeddings=128)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    transformers.PreTrainedTokenizerFast(tokenizer_object=olmo.tok, eos_token="<|endoftext|>").save_pretrained(tmp_path)
    pairs = [p for t in ("arc_easy", "winogrande") for d in load_task(t, limit=2).docs
             for p in zip(d.contexts, d.continuations)]
    ref = HFLM(pretrained=str(tmp_path), device="cpu", batch_size=4).loglikelihood(
        [Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)])
    model, tok, _ = load_for_eval(tmp_path)
    ours = harness.loglikelihood(model, tok, pairs)
    olmes = score_requests(model, tok, pairs)
    for (r_lp, r_greedy), (o_lp, o_greedy), s in zip(ref, ours, olmes):
        assert o_lp == pytest.approx(r_lp, abs=1e-4) and o_greedy == r_greedy
        assert s.logprob == pytest.approx(r_lp, abs=1e-4)


LM_EVAL_MISSING = 'lm-evaluation-harness is not installed: pip install "lm_eval==0.4.*"'


@pytest.fixture(scope="module")
def micro_folder(tmp_path_factory):
    """A micro VersatileFFN model saved by the project (save_model) with a small BPE tokenizer of its own."""
    from versatileffn.data.prepare import train_bpe

    words = "the river bends north past the old mill where children swim in summer".split()
    tok = train_bpe([" ".join(words[i:] + words[:i]) for i in range(len(words))] * 4, 300)
    out = tmp_path_factory.mktemp("harness") / "model"
    save_model(micro_lm(vocab_size=320), out, tokenizer=tok)
    return out


def _lm_eval_or_skip():
    try:
        import lm_eval.api.registry  # noqa: F401
    except ImportError:
        pytest.skip(LM_EVAL_MISSING)


def test_builtin_models_still_resolve_after_registering():
    """lm_eval loads its own models only into an empty registry: in a fresh process, registering first must not hide
    them (``--model hf``)."""
    _lm_eval_or_skip()
    import subprocess
    import sys

    code = ("from versatileffn.eval import harness; cls = harness.register()\n"
            "from lm_eval.api.registry import get_model, model_registry\n"
            "assert get_model('versatileffn') is cls\n"
            "assert {'hf', 'vllm', 'dummy'} <= set(model_registry.keys()), sorted(model_registry.keys())\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


def test_model_args_from_lm_eval(micro_folder):
    """lm_eval's own way in (create_from_arg_string + the batch_size/device it adds): unknown model_args are a
    UserError, batch_size=auto gives a usable batch size, and the scores are the plain functions'."""
    _lm_eval_or_skip()
    from lm_eval.api.instance import Instance

    from versatileffn.errors import UserError

    cls = harness.register()
    extra = {"batch_size": "auto", "max_batch_size": 8, "device": "cpu"}
    with pytest.raises(UserError, match="unknown model_args.*dtyp"):
        cls.create_from_arg_string(f"pretrained={micro_folder},dtyp=bfloat16", extra)
    with pytest.raises(UserError, match="batch_size"):
        cls.create_from_arg_string(f"pretrained={micro_folder}", {**extra, "batch_size": "big"})
    lm = cls.create_from_arg_string(f"pretrained={micro_folder}", extra)
    assert lm.batch_size == 8
    pairs = [("the river bends", " north"), ("children swim in", " summer"), ("", "the old mill")]
    got = lm.loglikelihood([Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)], disable_tqdm=True)
    want = harness.loglikelihood(lm.model, lm.tok, pairs, batch_size=1)
    assert [g for _, g in got] == [g for _, g in want]
    assert [lp for lp, _ in got] == pytest.approx([lp for lp, _ in want], abs=1e-5)


def test_auto_batch_size_halves_on_out_of_memory():
    tried = []

    def fits(b):
        tried.append(b)
        if b > 12:
            raise torch.OutOfMemoryError("CUDA out of memory")

    assert harness.largest_batch(fits, 64) == 8 and tried == [64, 32, 16, 8]
    with pytest.raises(torch.OutOfMemoryError):
        harness.largest_batch(lambda b: fits(99), 2)
