import pytest
import torch

from kwsearch.nn.path_cache import CACHE_ENV
from kwsearch.nn.path_choice import MEASURE_ENV


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One intra-op thread: the tests' tiny tensors gain nothing from more, and with another
    process on the same two cores OpenMP threads spin against each other (measured 10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True, scope="session")
def _paths_by_cost_model(tmp_path_factory):
    """Layers take the cost model's paths unless a test turns timing on: runs that time their
    paths could pick different exact paths, whose results differ in the last bits. Timings a test
    asks for go to a private cache file, never the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MEASURE_ENV, "0")
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("path-cache") / "paths.json"))
        yield
