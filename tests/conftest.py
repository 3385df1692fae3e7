"""Shared test set-up."""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """In-process runs use one thread, like every process the tests launch with OMP_NUM_THREADS=1:
    exact comparisons between them need the same thread count, and on a shared 2-core machine two
    threads make a tiny model several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
