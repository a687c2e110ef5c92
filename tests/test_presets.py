"""The one preset system: YAML files inside the package, read by `--config NAME` and by model_config(NAME)."""
import tomllib
from pathlib import Path

import pytest

from versatileffn import model_config
from versatileffn.presets import PRESET_DIR, load_preset, model_preset, preset_names
from versatileffn.train import load_run_config

ROOT = Path(__file__).resolve().parents[1]


def test_every_run_preset_is_a_valid_run_config():
    assert {"tiny-cpu", "demo-cpu", "small-gpu", "paper-354m", "paper-720m", "micro", "tiny", "small"} <= set(
        preset_names())
    for name in preset_names():
        if "train" in load_preset(name):  # a run preset (micro, tiny, small hold only a model)
            assert load_run_config(name).model == model_config(name)


def test_model_presets_keep_their_shapes():
    shapes = {"paper-354m": (50304, 1024, 15, 16, 4096, 4096), "paper-720m": (50304, 1536, 15, 12, 6144, 4096),
              "small": (50304, 512, 8, 8, 2048, 1024), "tiny": (4096, 128, 4, 4, 512, 256),
              "micro": (256, 32, 2, 4, 64, 64)}
    for name, shape in shapes.items():
        c = model_config(name)
        assert (c.vocab_size, c.d_model, c.n_layers, c.n_heads, c.d_hidden, c.max_seq_len) == shape, name
    assert model_config("tiny-cpu") == model_config("tiny") and model_config("small-gpu") == model_config("small")


def test_a_section_may_name_a_preset(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("model: micro\ntrain:\n  max_steps: 3\n")
    cfg = load_run_config(f, ["model.ffn.kind=versatile", "model.ffn.max_loops=6", "data.seq_len=32"])
    assert cfg.model.d_model == 32 and cfg.model.ffn.max_loops == 6 and cfg.train.max_steps == 3
    f.write_text("model: tiny-cpu-typo\n")
    with pytest.raises(ValueError, match="unknown preset 'tiny-cpu-typo'"):
        load_preset(f)
    with pytest.raises(ValueError, match="neither a file nor a preset"):
        load_run_config("no-such-preset")
    with pytest.raises(ValueError, match="unknown model preset"):
        model_preset("paper-1b")


def test_presets_ship_as_package_data():
    assert PRESET_DIR == ROOT / "versatileffn" / "presets" and not (ROOT / "configs").exists()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "**/*.yaml" in package_data["versatileffn"]
