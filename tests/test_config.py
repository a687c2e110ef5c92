import json

import pytest

from versatileffn import (ModelConfig, MoEFFNConfig, VersatileFFNConfig, apply_overrides, ffn_config_from_name,
                          from_dict, to_dict)
from versatileffn.ffn import FFN_KINDS, FFNBaseConfig, ffn_config_from_dict


def test_from_dict_builds_nested_and_rejects_unknown_keys():
    cfg = from_dict(ModelConfig, {"d_model": 64, "n_heads": 4, "d_hidden": 128, "ffn": {"kind": "versatile"}})
    assert isinstance(cfg.ffn, VersatileFFNConfig) and cfg.ffn.kind == "versatile"
    with pytest.raises(ValueError, match="unknown config key.*ffn.*bogus"):
        from_dict(ModelConfig, {"ffn": {"bogus": 1}})
    with pytest.raises(ValueError, match="unknown config key.*n_loops.*'versatile'"):  # each kind has its own keys
        from_dict(ModelConfig, {"d_model": 64, "n_heads": 4, "d_hidden": 128,
                                "ffn": {"kind": "versatile", "n_loops": 2}})


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
        ModelConfig(d_model=64, n_heads=4, d_hidden=100, ffn=VersatileFFNConfig())
    with pytest.raises(ValueError, match="ffn.kind"):
        ffn_config_from_dict({"kind": "transformer"})
    with pytest.raises(ValueError, match="shape comes from the model"):
        ffn_config_from_dict({"kind": "versatile", "d_model": 64})
    with pytest.raises(ValueError, match="shape is the model's"):
        ModelConfig(d_model=64, n_heads=4, d_hidden=128, ffn=VersatileFFNConfig(d_model=64, d_hidden=128))


def test_the_model_fills_the_ffn_shape_and_saves_only_the_options():
    cfg = ModelConfig(d_model=64, n_heads=4, d_hidden=128, norm_eps=1e-5, init_std=0.01,
                      ffn=VersatileFFNConfig(max_loops=6, depth_grad="exact"))
    layer = cfg.ffn_layer_config()
    assert (layer.d_model, layer.d_hidden, layer.norm_eps, layer.init_std) == (64, 128, 1e-5, 0.01)
    assert (layer.max_loops, layer.depth_grad) == (6, "exact")
    saved = to_dict(cfg)["ffn"]
    assert saved["kind"] == "versatile" and saved["depth_grad"] == "exact" and "d_model" not in saved
    assert from_dict(ModelConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg


def test_configs_saved_with_the_flat_ffn_config_still_load():
    """Before each FFN kind had its own config, model.ffn held every kind's fields."""
    old = {"kind": "moe", "n_loops": 2, "n_experts": 4, "top_k": 1, "d_expert": None, "max_loops": 4, "mode": "gated",
           "tau_start": 5.0, "tau_end": 0.1, "tau_decay": 0.99984, "balance_loss_coef": 1e-4, "depth_grad": "auto"}
    cfg = from_dict(ModelConfig, {"d_model": 64, "n_heads": 4, "d_hidden": 128, "ffn": old})
    assert cfg.ffn == MoEFFNConfig(n_experts=4, top_k=1, balance_loss_coef=1e-4)


def test_ffn_names():
    assert ffn_config_from_name("loop6").n_loops == 6
    assert ffn_config_from_name("versatile-ungated").mode == "ungated"
    assert ffn_config_from_name("versatile-16c4").n_experts == 16
    with pytest.raises(ValueError, match="unknown FFN kind"):
        ffn_config_from_name("loop3")


def test_registry_kinds_build_their_modules():
    for kind, entry in FFN_KINDS.items():
        cfg = entry.config()
        assert isinstance(cfg, FFNBaseConfig) and cfg.kind == kind
        with pytest.raises(ValueError, match="no shape"):
            cfg.build()
        layer = cfg.shaped(16, 32, 1e-6, 0.02).build()
        assert type(layer) is entry.module and layer.d_model == 16


def test_versatile_config_build():
    layer = VersatileFFNConfig(d_model=8, d_hidden=16).build()
    assert layer.router.weight.shape == (8, 8)


def test_one_table_of_tasks_and_one_of_variants():
    """The demo, the evaluator and the data module read versatileffn.paper (experiments/ too)."""
    from versatileffn import demo, paper
    from versatileffn.data import demo_corpus
    from versatileffn.eval import tasks

    assert tasks.TASKS is paper.TASKS and tasks.TASK_LABELS is paper.TASK_LABELS
    assert demo_corpus.EVAL_TASKS is paper.TASKS and len(paper.TASKS) == 8
    assert set(demo.DEMO_VARIANTS) <= set(paper.VARIANTS)
    assert len({v.run for v in paper.VARIANTS.values()}) == len(paper.VARIANTS)
    for name, variant in paper.VARIANTS.items():
        assert variant.name == name and ffn_config_from_name(name).kind == variant.ffn["kind"]
