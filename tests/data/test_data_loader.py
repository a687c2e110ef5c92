"""Step-addressed batches: deterministic, resumable, identical global batches for any world size."""
import numpy as np
import torch

from versatileffn.data.loader import PackedTrainData, val_windows
from versatileffn.data.tokens import write_index, write_split


def make_data(tmp_path, n=1000):
    index = {"tokenizer": "test", "vocab_size": 500, "eos_id": 0, "dtype": "uint16"}
    write_split(tmp_path, "train", np.arange(n) % 500, documents=1, n_bytes=n, index=index)
    write_split(tmp_path, "val", np.arange(300) % 500, documents=1, n_bytes=300, index=index)
    write_index(tmp_path, index)
    return tmp_path


def test_global_batch_is_independent_of_world_and_micro(tmp_path):
    data = PackedTrainData(make_data(tmp_path), seq_len=16, seed=3)
    x_all, y_all = data.micro_batch(step=5, global_batch=8, rank=0, world=1, micro=0, micro_size=8)
    assert torch.equal(x_all[:, 1:], y_all[:, :-1])
    parts = [data.micro_batch(5, 8, rank, 2, micro, 2)[0] for rank in range(2) for micro in range(2)]
    assert torch.equal(torch.cat(parts), x_all)
    again = PackedTrainData(tmp_path, seq_len=16, seed=3).micro_batch(5, 8, 0, 1, 0, 8)[0]
    assert torch.equal(again, x_all)


def test_epochs_cover_every_window_once(tmp_path):
    data = PackedTrainData(make_data(tmp_path), seq_len=16, seed=0)
    n = data.n_windows
    x, _ = data.samples(0, n)
    assert sorted(x[:, 0].tolist()) == sorted((np.arange(n) * 16 % 500).tolist())
    x2, _ = data.samples(n, n)  # second epoch: a different order of the same windows
    assert sorted(x2[:, 0].tolist()) == sorted(x[:, 0].tolist()) and not torch.equal(x, x2)


def test_val_windows_are_ordered_prefix(tmp_path):
    w = val_windows(make_data(tmp_path), seq_len=10, max_tokens=50)
    assert w.shape == (5, 11) and w[1, 0].item() == 10
