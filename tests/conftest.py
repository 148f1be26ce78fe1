import pytest
import torch

DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")])]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Each test using it runs on the CPU and, where present, on CUDA."""
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    """The digits classifier of the sample-quality metrics is trained once per test session, into a temporary
    cache (never the user's)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("PPL_DGM_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    patch.undo()
