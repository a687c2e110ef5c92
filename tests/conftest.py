import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Seeded tests; one intra-op thread: the suite's tiny matmuls run far slower with OpenMP spin-waits on a
    busy 2-core machine (measured ~100x on some tests)."""
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
