import pytest

from versatileffn import FFNConfig, ModelConfig, VersatileFFNConfig, apply_overrides, ffn_config_from_name, from_dict


def test_from_dict_builds_nested_and_rejects_unknown_keys():
    cfg = from_dict(ModelConfig, {"d_model": 64, "n_heads": 4, "d_hidden": 128, "ffn": {"kind": "versatile"}})
    assert isinstance(cfg.ffn, FFNConfig) and cfg.ffn.kind == "versatile"
    with pytest.raises(ValueError, match="unknown config key.*ffn.*bogus"):
        from_dict(ModelConfig, {"ffn": {"bogus": 1}})


def test_overrides_parse_yaml_scalars():
    data = apply_overrides({"model": {"d_model": 8}}, ["model.d_model=64", "model.ffn.kind=moe", "train.lr=3e-4",
                                                       "flag=true"])
    assert data == {"model": {"d_model": 64, "ffn": {"kind": "moe"}}, "train": {"lr": 3e-4}, "flag": True}
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides({}, ["nonsense"])


def test_from_dict_coerces_yaml_scalars():
    cfg = from_dict(ModelConfig, {"rope_theta": "1e4", "d_model": "64", "n_heads": 4, "d_hidden": 128})
    assert cfg.rope_theta == 1e4 and cfg.d_model == 64
    with pytest.raises(ValueError, match="norm_eps must be a number"):
        from_dict(ModelConfig, {"norm_eps": "tiny"})


def test_model_config_validation():
    with pytest.raises(ValueError, match="n_heads"):
        ModelConfig(d_model=64, n_heads=5)
    with pytest.raises(ValueError, match="n_kv_heads"):
        ModelConfig(d_model=64, n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match="d_hidden"):  # versatile layout checked at model-config time
        ModelConfig(d_model=64, n_heads=4, d_hidden=100, ffn=FFNConfig(kind="versatile"))
    with pytest.raises(ValueError, match="ffn.kind"):
        FFNConfig(kind="transformer")


def test_ffn_names():
    assert ffn_config_from_name("loop6").n_loops == 6
    assert ffn_config_from_name("versatile-ungated").mode == "ungated"
    with pytest.raises(ValueError, match="unknown FFN kind"):
        ffn_config_from_name("loop3")


def test_versatile_config_build():
    layer = VersatileFFNConfig(d_model=8, d_hidden=16).build()
    assert layer.router.weight.shape == (8, 8)
