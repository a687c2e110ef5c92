"""Wrappers that act on module calls give the same function as the plain model: accelerate's disk offload
(issue 15, item 1) and PEFT adapters (items 2, 3)."""
import pytest
import torch

transformers = pytest.importorskip("transformers")

from versatileffn.hf import convert_dense_model, save_converted

from .conftest import ARCHS


def _offload_map(model) -> dict:
    """Everything on the CPU except the last decoder layer, which lives on disk."""
    last = len(model.model.layers) - 1
    names = [n for n, _ in model.named_children() if n != "model"]
    names += [f"model.{n}" for n, _ in model.model.named_children() if n != "layers"]
    names += [f"model.layers.{i}" for i in range(last + 1)]
    return {n: "disk" if n == f"model.layers.{last}" else "cpu" for n in names}


def test_disk_offload_gives_the_plain_logits(norm_arch, make_dense, ffn_options, input_ids, trained, tmp_path):
    pytest.importorskip("accelerate", reason="pip install accelerate (or: pip install 'versatileffn[test]')")
    model = trained(convert_dense_model(make_dense(norm_arch), ffn_options), input_ids)
    save_converted(model, tmp_path / "m")
    plain = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    offloaded = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "m", device_map=_offload_map(plain), offload_folder=str(tmp_path / "offload")).eval()
    layer = offloaded.model.layers[-1].versatile_ffn
    assert layer.router.weight.is_meta and layer.loop_predictor.weight.is_meta  # really offloaded
    with torch.no_grad():
        torch.testing.assert_close(offloaded(input_ids).logits, plain(input_ids).logits, rtol=0, atol=1e-5)


def _peft():
    return pytest.importorskip("peft", reason="pip install peft (or: pip install 'versatileffn[test]')")


def _lora(model, **options):
    """LoRA with random (non-zero) adapters, so every adapter changes the function from the first step."""
    peft = _peft()
    return peft.get_peft_model(model, peft.LoraConfig(r=4, init_lora_weights=False, **options))


def _check_adapted(model, input_ids):
    """Adapters change the logits, every trainable parameter gets a gradient, merge_and_unload keeps them."""
    model.train()
    model(input_ids=input_ids, labels=input_ids).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing, f"trainable parameters without a gradient: {missing}"
    model.eval()
    with torch.no_grad():
        adapted = model(input_ids=input_ids).logits
        with model.disable_adapter():
            base = model(input_ids=input_ids).logits
    assert (adapted - base).abs().max() > 1e-3  # the adapters take part in the forward
    merged = model.merge_and_unload()
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=input_ids).logits, adapted, rtol=0, atol=1e-5)
    return merged


def test_lora_on_router_and_loop_head_changes_the_model_and_merges(norm_arch, make_dense, ffn_options, input_ids):
    model = convert_dense_model(make_dense(norm_arch), ffn_options)
    merged = _check_adapted(_lora(model, target_modules=["router", "loop_predictor"]), input_ids)
    assert type(merged.model.layers[0].versatile_ffn.router).__name__ == "LogitHead"


def test_lora_all_linear_with_heads_in_modules_to_save(norm_arch, make_dense, ffn_options, input_ids):
    """The README's recipe: adapters on every linear map, the fresh router and loop head trained in full."""
    model = convert_dense_model(make_dense(norm_arch), ffn_options)
    adapted = _lora(model, target_modules="all-linear", modules_to_save=["router", "loop_predictor"])
    names = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert any("router.modules_to_save" in n for n in names) and any("down_proj.lora_A" in n for n in names)
    _check_adapted(adapted, input_ids)


def test_lora_on_olmo2_down_proj_applies_the_post_norm_after_the_adapter(make_dense, ffn_options, input_ids):
    """The post-norm F(h) = h + norm(W_out a): the norm belongs to the layer, so LoRA on down_proj gives
    norm((W_out + BA) a), which merging reproduces exactly."""
    if "olmo2" not in ARCHS:
        pytest.skip("this transformers has no OLMo2")
    model = convert_dense_model(make_dense("olmo2"), ffn_options)
    _check_adapted(_lora(model, target_modules=["down_proj"]), input_ids)


def test_olmo2_folders_with_the_norm_under_the_projection_still_load(make_dense, ffn_options, input_ids, tmp_path):
    if "olmo2" not in ARCHS:
        pytest.skip("this transformers has no OLMo2")
    from safetensors.torch import load_file, save_file

    model = convert_dense_model(make_dense("olmo2"), ffn_options)
    save_converted(model, tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    state = load_file(weights)
    old = {k.replace("versatile_ffn.out_norm.", "versatile_ffn.down_proj.norm."): v for k, v in state.items()}
    assert old.keys() != state.keys()
    save_file(old, weights, metadata={"format": "pt"})
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    save_converted(loaded, tmp_path / "again")
    assert load_file(tmp_path / "again" / "model.safetensors").keys() == state.keys()
