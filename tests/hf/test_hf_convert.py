"""Conversion of dense HF models: identity mode is the dense model, generation, training hooks, errors, export."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from versatileffn.ffn import VersatileFFN
from versatileffn.hf import PostNormVersatileFFN, convert_dense_model, export_dense, save_converted


def test_identity_mode_reproduces_dense_logits(arch, make_dense, ffn_options, input_ids):
    dense = make_dense(arch)
    model = convert_dense_model(dense, ffn_options)
    assert all(isinstance(m, PostNormVersatileFFN) == (arch == "olmo2") for m in model.versatile_layers())
    with torch.no_grad():
        ref = dense(input_ids).logits
        with model.identity_mode():
            same = model(input_ids).logits
        versatile = model(input_ids).logits
    assert torch.equal(same, ref)
    assert not torch.equal(versatile, ref)  # outside identity mode the loops and the width path are live
    assert model.config.model_type == f"versatileffn_{arch}" and model.config.base_model_type == arch
    assert model.versatile_layers()[0].mode == "gated" and model.versatile_layers()[0].runtime.loop_cap is None


def test_identity_mode_exact_in_bfloat16(norm_arch, make_dense, ffn_options, input_ids):
    dense = make_dense(norm_arch).to(torch.bfloat16)
    model = convert_dense_model(dense, ffn_options)
    assert next(model.parameters()).dtype == torch.bfloat16
    ffn = model.versatile_layers()[0]
    assert ffn.tau.dtype == torch.float32  # in bf16, 5.0 * 0.99984 would round back to 5.0
    model.set_temperature_step(1)
    model.to(torch.bfloat16)
    assert ffn.tau.dtype == torch.float32 and float(ffn.tau) == pytest.approx(5.0 * ffn.config.tau_decay, rel=1e-7)
    with torch.no_grad(), model.identity_mode():
        assert torch.equal(model(input_ids).logits, dense(input_ids).logits)


def test_generate_with_and_without_cache(arch, make_dense, ffn_options, input_ids):
    dense = make_dense(arch)
    model = convert_dense_model(dense, ffn_options)
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    cached = model.generate(input_ids[:1], use_cache=True, **kw)
    uncached = model.generate(input_ids[:1], use_cache=False, **kw)
    assert cached.shape == (1, input_ids.shape[1] + 6)
    assert torch.equal(cached, uncached)
    with model.identity_mode():
        assert torch.equal(model.generate(input_ids[:1], **kw), dense.generate(input_ids[:1], **kw))


def test_training_forward_loss_aux_and_driver_api(arch, make_dense, ffn_options, input_ids):
    model = convert_dense_model(make_dense(arch), ffn_options).train()
    out = model(input_ids, labels=input_ids)
    aux = model.aux_loss()
    assert out.loss.ndim == 0 and aux is not None and float(aux) > 0
    out.loss.backward()  # the balance loss is attached through autograd: the router gets its gradient
    ffn = model.versatile_layers()[0]
    assert ffn.router.weight.grad.abs().sum() > 0 and ffn.loop_predictor.weight.grad.abs().sum() > 0
    stats = model.ffn_stats()
    assert len(stats) == 2 and stats[0]["tokens"] == input_ids.numel()
    model.set_temperature_step(3)
    assert float(ffn.tau) == pytest.approx(5.0 * ffn.config.tau_decay ** 3)
    model.reset_ffn_stats()
    assert model.ffn_stats()[0]["tokens"] == 0
    model.eval()
    model.set_inference_loop_cap(1)
    with torch.no_grad():
        model(input_ids)
    assert model.ffn_stats()[0]["loop_histogram"][1:] == [0, 0]
    with pytest.raises(ValueError, match="loop cap"):
        model.set_inference_loop_cap(0)


def test_lm_forward_has_the_versatile_lm_contract(make_dense, ffn_options, input_ids):
    """targets aligned with logits (the trainer's convention) == HF labels shifted inside the model."""
    model = convert_dense_model(make_dense("llama"), ffn_options)
    targets = input_ids[:, 1:].clone()
    targets[0, :3] = -100
    with torch.no_grad(), model.identity_mode():
        out = model.lm_forward(input_ids[:, :-1], targets)
        labels = input_ids.clone()
        labels[0, 1:4] = -100
        hf = model(input_ids, labels=labels)
    assert out.logits.shape == (2, input_ids.shape[1] - 1, model.config.vocab_size)
    torch.testing.assert_close(out.loss, hf.loss)


def test_post_norm_width_path_matches_per_expert_reference():
    """OLMo2's F(h) = h + norm(mlp(h)): Y_width = sum_k g_k (h + norm(W_out^k phi(W_proj^k h))), overlapping experts."""
    from versatileffn.ffn import VersatileFFNConfig

    torch.manual_seed(0)
    cfg = VersatileFFNConfig(d_model=16, d_hidden=40, n_experts=4, top_k=2, d_expert=16, mode="width", init_std=0.3)
    ffn = PostNormVersatileFFN(cfg)
    with torch.no_grad():
        ffn.out_norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 5, 16)
    h = x.reshape(-1, 16)
    gates, experts = torch.topk(h @ ffn.router.weight.T, 2, dim=-1)
    gates = gates.softmax(-1)
    ref = torch.zeros_like(h)
    for n in range(h.shape[0]):
        for g, k in zip(gates[n], experts[n]):
            lo, hi = cfg.expert_slices()[int(k)]
            a = torch.nn.functional.silu(ffn.gate_proj.weight[lo:hi] @ h[n]) * (ffn.up_proj.weight[lo:hi] @ h[n])
            y = ffn.out_norm((ffn.down_proj.weight[:, lo:hi] @ a)[None])[0]
            ref[n] += g * (h[n] + y)
    for training in (True, False):
        with torch.no_grad():
            out = ffn.train(training)(x).reshape(-1, 16)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # the depth path repeats the post-norm F itself
    a_nh = torch.nn.functional.silu(h @ ffn.gate_proj.weight.T) * (h @ ffn.up_proj.weight.T)
    dense_step = h + ffn.out_norm(a_nh @ ffn.down_proj.weight.T)
    torch.testing.assert_close(ffn.step(h), dense_step, rtol=1e-5, atol=1e-5)


def test_pre_norm_layers_reuse_versatile_ffn(make_dense, ffn_options):
    model = convert_dense_model(make_dense("llama"), ffn_options)
    layer = model.model.layers[0]
    assert type(layer.versatile_ffn) is VersatileFFN
    assert isinstance(layer.post_attention_layernorm, torch.nn.Identity)
    assert type(layer.versatile_ffn.norm).__name__ == "LlamaRMSNorm"


def test_unsupported_architecture_names_it_and_lists_supported():
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2))
    with pytest.raises(ValueError, match=r"unsupported architecture 'gpt2'.*llama.*mistral.*olmo2.*qwen2"):
        convert_dense_model(gpt2)


def test_non_swiglu_mlp_is_rejected(make_dense):
    with pytest.raises(ValueError, match="non-SwiGLU MLP.*gelu"):
        convert_dense_model(make_dense("llama", hidden_act="gelu"))


@pytest.mark.parametrize("options, message", [
    ({"n_experts": 5}, r"intermediate_size=64.*divisible by n_experts=5"),
    ({"n_experts": 4, "d_expert": 65}, r"d_expert"),
    ({"top_k": 9}, r"top_k"),
    ({"d_model": 8}, r"unknown VersatileFFN option.*d_model"),
])
def test_options_that_do_not_fit_the_model(make_dense, options, message):
    with pytest.raises(ValueError, match=message):
        convert_dense_model(make_dense("qwen2"), options)


def test_mlp_bias_is_rejected(make_dense):
    with pytest.raises(ValueError, match="mlp_bias"):
        convert_dense_model(make_dense("llama", mlp_bias=True))


def test_export_dense_after_training_step_gives_the_shared_ffn(arch, make_dense, ffn_options, input_ids, tmp_path,
                                                               trained):
    dense = make_dense(arch)
    model = convert_dense_model(dense, ffn_options)
    export_dense(model, tmp_path / "dense")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "dense").eval()
    assert type(back) is type(dense)
    assert _same_weights(back, dense)
    with torch.no_grad():  # bit-exact weights; CPU GEMMs on mmap-loaded buffers may round differently (~1e-8)
        torch.testing.assert_close(back(input_ids).logits, dense(input_ids).logits, rtol=0, atol=1e-5)
    # after continued pre-training the exported FFN is the (updated) shared FFN: identity mode == exported dense
    trained(model, input_ids)
    save_converted(model, tmp_path / "conv")
    export_dense(tmp_path / "conv", tmp_path / "dense2")  # from a folder, too
    back2 = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "dense2").eval()
    assert not _same_weights(back2, dense)
    with torch.no_grad(), model.identity_mode():
        torch.testing.assert_close(back2(input_ids).logits, model(input_ids).logits, rtol=0, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(newest_arch, make_dense, ffn_options, input_ids):
    """The FFN runs inside transformers' checkpointed layer call; the recompute replays the same Gumbel noise."""
    results = []
    for checkpointing in (False, True):
        model = convert_dense_model(make_dense(newest_arch), ffn_options).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        torch.manual_seed(5)
        out = model(input_ids, labels=input_ids, use_cache=False)
        out.loss.backward()
        results.append((out.loss.detach(), [p.grad for p in model.parameters() if p.grad is not None]))
    assert torch.equal(results[0][0], results[1][0])
    assert len(results[0][1]) == len(results[1][1])
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))


def test_trainer_callback_sets_tau_from_the_step_and_logs_stats(make_dense, ffn_options, input_ids):
    from transformers.trainer_callback import TrainerControl, TrainerState

    from versatileffn.hf import TemperatureAnnealCallback

    model = convert_dense_model(make_dense("llama"), ffn_options).train()
    model(input_ids, labels=input_ids).loss.backward()
    cb, state, control = TemperatureAnnealCallback(), TrainerState(global_step=40), TrainerControl()
    cb.on_train_begin(None, state, control, model=model)  # a resumed run: the schedule at its step, no replay
    assert float(model.versatile_layers()[1].tau) == pytest.approx(model.versatile_layers()[1].temperature_at(40))
    state.global_step += 1
    cb.on_step_end(None, state, control, model=model)
    assert float(model.versatile_layers()[1].tau) == pytest.approx(5.0 * ffn_options.get("tau_decay", 0.99984) ** 41)
    logs = {}
    cb.on_log(None, state, control, model=model, logs=logs)
    assert 1.0 <= logs["ffn_mean_loops"] <= 3.0 and 0.0 <= logs["ffn_mean_lambda"] <= 1.0 and logs["aux_loss"] > 0
    assert model.ffn_stats()[0]["tokens"] == 0
    with pytest.raises(TypeError, match="converted VersatileFFN model"):
        cb.on_step_end(None, state, control, model=make_dense("llama"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_identity_and_fp32_cached_generation(newest_arch, make_dense, ffn_options, input_ids):
    dense = make_dense(newest_arch).to("cuda", torch.bfloat16)
    model = convert_dense_model(dense, ffn_options)
    ids = input_ids.cuda()
    assert next(model.parameters()).is_cuda and model.versatile_layers()[0].tau.dtype == torch.float32
    with torch.no_grad(), model.identity_mode():
        assert torch.equal(model(ids).logits, dense(ids).logits)
    model.float()  # greedy tokens of a random tiny model sit on near-ties: compare cache / no cache in fp32
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(ids[:1], use_cache=True, **kw), model.generate(ids[:1], use_cache=False, **kw))


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_converted_hf_model_starts_dense(norm_arch, make_dense, ffn_options, input_ids):
    """The dense-preserving start through the HF conversion (pre-norm and OLMo2's post-norm F)."""
    dense = make_dense(norm_arch)
    model = convert_dense_model(dense, {**ffn_options, "dense_preserving": True})
    with torch.no_grad():
        want = dense(input_ids).logits
        torch.testing.assert_close(model.eval()(input_ids).logits, want, rtol=0, atol=1e-6)
        torch.manual_seed(0)
        torch.testing.assert_close(model.train()(input_ids).logits, want, rtol=0, atol=1e-6)
