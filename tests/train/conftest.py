import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The CI box has 2 shared cores: with 2 OpenMP threads an elementwise op can stall for
    # milliseconds waiting on a descheduled thread. One thread per test worker is faster here.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
