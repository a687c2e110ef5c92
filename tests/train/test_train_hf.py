"""The trainer continues pre-training a converted Hugging Face model (train.hf_model / --hf-model)."""
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from train_helpers import micro_config

from versatileffn.cli import main as cli_main
from versatileffn.hf import convert_dense_model, save_converted
from versatileffn.io import load_state
from versatileffn.train import Trainer
from versatileffn.train.optim import param_groups

FFN = {"n_experts": 4, "top_k": 2, "max_loops": 3, "tau_decay": 0.5}  # tau 5 -> 0.1 floor within 6 steps


def records(out_dir, kind="train"):
    return [r for r in map(json.loads, (out_dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def tiny_llama(vocab_size=320, max_position_embeddings=64):
    """A random dense Llama whose vocabulary covers the 300-entry BPE of the token_dir fixture."""
    cfg = transformers.LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=max_position_embeddings)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg)


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """(dense folder, converted folder) of the tiny Llama; no tokenizer files: the run uses the data's."""
    root = tmp_path_factory.mktemp("hf")
    dense = tiny_llama()
    dense.save_pretrained(root / "dense")
    save_converted(convert_dense_model(dense, FFN), root / "versatile")
    return root / "dense", root / "versatile"


def hf_config(token_dir, out_dir, hf_dir, *extra):
    return micro_config(token_dir, out_dir, "dense", f"train.hf_model={hf_dir}", *extra)


def test_cli_trains_a_converted_model(token_dir, hf_dirs, tmp_path):
    out = tmp_path / "run"
    assert cli_main(["train", "--hf-model", str(hf_dirs[1]), "--data", str(token_dir), "--out", str(out),
                     "--set", "data.seq_len=32", "--set", "train.max_steps=12", "--set", "train.global_batch_tokens=128",
                     "--set", "train.micro_batch_size=2", "--set", "train.lr=1e-2", "--set", "train.log_every=1",
                     "--set", "train.eval_tokens=512", "--set", "train.progress=false",
                     "--set", "train.tensorboard=false"]) == 0
    recs = records(out)
    assert len(recs) == 12 and recs[-1]["loss"] < recs[0]["loss"] - 1.0
    assert [r["tau"] for r in recs[:6]] == pytest.approx([max(0.1, 5.0 * 0.5 ** s) for s in range(1, 7)])
    assert recs[-1]["tau"] == pytest.approx(0.1)
    assert 1 <= recs[-1]["loops"] <= 3 and 0 <= recs[-1]["lambda"] < 1 and recs[-1]["expert_imbalance"] >= 1
    val = records(out, "val")[-1]

    # final/ is a converted HF folder: plain from_pretrained (classes registered by `import versatileffn`)
    model = transformers.AutoModelForCausalLM.from_pretrained(out / "final")
    assert type(model).__name__ == "VersatileLlamaForCausalLM"
    model.set_temperature_step(12)  # tau is not saved: the schedule gives it for any step
    assert float(model.versatile_layers()[0].tau) == pytest.approx(recs[-1]["tau"])
    ckpt = load_state(out / "checkpoints" / "step_0000012" / "model.safetensors")
    assert all(torch.equal(ckpt[k], v) for k, v in model.state_dict().items() if k in ckpt)
    tok = transformers.AutoTokenizer.from_pretrained(out / "final")  # the data's (the source folder had none)
    assert tok.eos_token == "<|endoftext|>" and tok.convert_tokens_to_ids("<|endoftext|>") == 0

    # ... and `versatileffn eval` reads it: same validation windows, same loss as the trainer measured
    res = tmp_path / "eval.json"
    assert cli_main(["eval", "--model", str(out / "final"), "--tasks", "none", "--data", str(token_dir), "--seq-len", "32", "--val-tokens", "512",
                     "--device", "cpu", "--quiet", "--out", str(res)]) == 0
    assert json.loads(res.read_text())["validation"]["loss"] == pytest.approx(val["val_loss"], rel=1e-4)


def test_resume_is_exact(token_dir, hf_dirs, tmp_path):
    full = Trainer(hf_config(token_dir, tmp_path / "full", hf_dirs[1])).train()
    part = Trainer(hf_config(token_dir, tmp_path / "part", hf_dirs[1]))
    part.train(until_step=3)  # "interrupted" after step 3
    del part
    resumed = Trainer(hf_config(token_dir, tmp_path / "part", hf_dirs[1]), resume=True)
    assert resumed.step == 3
    result = resumed.train()
    assert result["loss"] == full["loss"] and result["val"]["val_loss"] == full["val"]["val_loss"]
    assert [r["loss"] for r in records(tmp_path / "full")][3:] == [r["loss"] for r in records(tmp_path / "part")][3:]
    a = load_state(tmp_path / "full" / "final" / "model.safetensors")
    b = load_state(tmp_path / "part" / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_optimizer_groups_of_the_hf_model(token_dir, hf_dirs, tmp_path):
    trainer = Trainer(hf_config(token_dir, tmp_path / "run", hf_dirs[1]))
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    decay, no_decay = param_groups(trainer.model, trainer.cfg.train)
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert "model.embed_tokens.weight" in no_decay_names
    assert all(p.dim() >= 2 and "norm" not in names[id(p)] for p in decay["params"])
    assert any("versatile_ffn.router" in names[id(p)] for p in decay["params"])
    assert {n for n in names.values() if "norm" in n} <= no_decay_names


def test_clear_errors(token_dir, hf_dirs, tmp_path, capsys):
    dense, converted = hf_dirs
    with pytest.raises(ValueError, match="dense Hugging Face model .*versatileffn convert --from"):
        Trainer(hf_config(token_dir, tmp_path / "a", dense))
    with pytest.raises(ValueError, match="train.hf_model=.*--hf-model"):  # a converted folder given as init_from
        Trainer(micro_config(token_dir, tmp_path / "b", "versatile", f"train.init_from={converted}"))
    with pytest.raises(ValueError, match="exclude each other"):
        hf_config(token_dir, tmp_path / "c", converted, f"train.init_from={converted}")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        Trainer(hf_config(token_dir, tmp_path / "d", tmp_path))
    small = tmp_path / "small-vocab"  # the data's 300-entry tokenizer does not fit a 256-entry model
    save_converted(convert_dense_model(tiny_llama(vocab_size=256), FFN), small)
    with pytest.raises(ValueError, match="300 entries .*config.json: vocab_size=256: prepare the data with the model's own"):
        Trainer(hf_config(token_dir, tmp_path / "e", small))
    with pytest.raises(ValueError, match="data.seq_len=128 exceeds .*max_position_embeddings=64"):
        Trainer(hf_config(token_dir, tmp_path / "f", converted, "data.seq_len=128"))
    assert cli_main(["train", "--hf-model", str(dense), "--data", str(token_dir), "--out", str(tmp_path / "g")]) == 2
    assert cli_main(["train", "--hf-model", str(converted), "--ffn", "moe", "--data", str(token_dir),
                     "--out", str(tmp_path / "h")]) == 2
    assert "--ffn cannot be combined with --hf-model" in capsys.readouterr().err


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not available")
def test_ddp_and_fsdp2_agree(token_dir, hf_dirs, tmp_path):
    """2-process gloo: DDP and FSDP2 (sharding the HF decoder layers) train the converted model identically
    (same per-rank Gumbel streams), and the FSDP2 final folder is a complete converted model."""
    import torch.multiprocessing as mp
    from train_helpers import free_port, gloo_hf_worker

    mp.spawn(gloo_hf_worker, args=(2, free_port(), token_dir, hf_dirs[1], tmp_path), nprocs=2, join=True)
    ddp, fsdp = (load_state(tmp_path / m / "final" / "model.safetensors") for m in ("ddp", "fsdp"))
    assert ddp.keys() == fsdp.keys()
    for k in ddp:
        torch.testing.assert_close(fsdp[k], ddp[k], atol=2e-5, rtol=1e-4, msg=k)
    vals = [records(tmp_path / m, "val")[-1]["val_loss"] for m in ("ddp", "fsdp")]
    assert vals[0] == pytest.approx(vals[1], abs=1e-4)
    assert transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp" / "final").num_parameters() > 0
