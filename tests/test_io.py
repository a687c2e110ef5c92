import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from versatileffn import VersatileLM, ffn_config_from_name, model_config
from versatileffn.io import load_model, save_model


def test_save_load_round_trip_is_exact(tmp_path):
    model = VersatileLM(model_config("micro", ffn_config_from_name("versatile")))
    model.set_temperature_step(7)
    save_model(model, tmp_path / "m", extra={"note": "x"})
    loaded, meta = load_model(tmp_path / "m")
    assert meta["note"] == "x" and loaded.config == model.config
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    save_model(model, tmp_path / "m")  # overwriting keeps a valid folder
    assert load_model(tmp_path / "m")[0] is not None


def test_models_saved_with_a_tau_buffer_still_load(tmp_path):
    """Before tau became a schedule, every VersatileFFN saved its annealed tau."""
    model = VersatileLM(model_config("micro", ffn_config_from_name("versatile")))
    save_model(model, tmp_path / "m")
    state = load_file(tmp_path / "m" / "model.safetensors")
    save_file({**state, **{f"blocks.{i}.ffn.tau": torch.tensor(0.3) for i in range(2)}},
              tmp_path / "m" / "model.safetensors")
    loaded, _ = load_model(tmp_path / "m")
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path)
    model = VersatileLM(model_config("micro"))
    save_model(model, tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        load_model(tmp_path / "m")
    save_model(model, tmp_path / "d")
    cfg = json.loads((tmp_path / "d" / "config.json").read_text())
    cfg["model"]["ffn"]["kind"] = "versatile"
    (tmp_path / "d" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="missing"):
        load_model(tmp_path / "d")
