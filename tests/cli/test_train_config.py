"""`versatileffn train`'s config: preset + --ffn (the whole FFN section) + --set (adjusts it)."""
import argparse

import pytest

from versatileffn.cli.train import build_config


def args(*overrides, ffn=None, config="tiny-cpu"):
    return argparse.Namespace(config=config, overrides=list(overrides), ffn=ffn, data=None, out=None, init_from=None,
                              hf_model=None, resume=False)


def test_ffn_replaces_the_section_and_set_adjusts_it():
    cfg = build_config(args("model.ffn.max_loops=6", "train.lr=6e-4", ffn="versatile"))
    assert cfg.model.ffn.kind == "versatile" and cfg.model.ffn.max_loops == 6 and cfg.train.lr == 6e-4
    assert build_config(args(ffn="versatile-width")).model.ffn.mode == "width"
    assert build_config(args("model.ffn.n_loops=6", ffn="loop4")).model.ffn.n_loops == 6
    assert build_config(args("model.ffn.kind=moe", "model.ffn.top_k=1")).model.ffn.top_k == 1


def test_a_key_of_another_kind_is_an_error():
    with pytest.raises(ValueError, match="max_loops.*'dense'"):
        build_config(args("model.ffn.max_loops=6"))
