import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny nets: one thread is faster, and far faster on a loaded machine (no spinning thread pool)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
