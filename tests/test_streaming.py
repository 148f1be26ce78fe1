"""Data streamed to the device batch by batch (`ppl_dgm.datasets.streaming`): a memory-mapped file of a
million rows is fitted and scored without ever being read whole; streamed and in-memory fits agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import ppl_dgm
from ppl_dgm.datasets.streaming import HEAD_ROWS
from ppl_dgm.models.classical.gmm import GaussianMixture

ROWS, DIMS = 10**6, 4


class CountingArray:
    """An array-like on disk that records how many rows each read asks for."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.shape, self.reads = array, array.shape, []

    def __getitem__(self, index):
        self.reads.append(len(index))
        return self.array[index]


class Rows(Dataset):
    """A map-style Dataset whose items are dicts with ``"x"``."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i]}


def _gmm() -> GaussianMixture:
    return GaussianMixture(2, covariance_type="diag", random_state=0, init_params="random")


def _blobs(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, DIMS)) + 3.0 * rng.integers(0, 2, size=(n, 1))).astype(np.float32)


def test_a_million_row_memmap_is_fitted_and_scored_without_being_read_whole(tmp_path):
    path = tmp_path / "rows.f32"
    array = np.memmap(path, dtype=np.float32, mode="w+", shape=(ROWS, DIMS))
    for start in range(0, ROWS, 100_000):
        array[start:start + 100_000] = _blobs(100_000, start)
    array.flush()
    data = CountingArray(np.memmap(path, dtype=np.float32, mode="r", shape=(ROWS, DIMS)))
    model = _gmm()
    result = ppl_dgm.fit(model, data, engine="svi", epochs=1, batch_size=20_000, lr=0.05, seed=0, progress=False)
    assert np.isfinite(result.train_loss[0])
    assert max(data.reads) <= HEAD_ROWS * 2 and sum(data.reads) <= ROWS + 2 * HEAD_ROWS  # one pass, in batches
    data.reads.clear()
    scored = ppl_dgm.log_likelihood(model, data, batch_size=50_000)
    assert scored.per_sample.shape == (ROWS,) and scored.kind == "exact"
    assert max(data.reads) <= 50_000
    first = torch.from_numpy(np.array(data.array[:1000]))
    assert scored.per_sample[:1000] == pytest.approx(ppl_dgm.log_likelihood(model, first).per_sample, rel=1e-5)
    # the two-blob mixture that drew the rows scores about -6.4 nats per example, one diagonal Gaussian -8.0
    assert scored.mean > -7.0


def test_streamed_and_in_memory_fits_agree():
    x, val = _blobs(300), _blobs(100, 1)
    streamed, in_memory = _gmm(), _gmm()
    settings = {"engine": "svi", "epochs": 3, "batch_size": 64, "lr": 0.05, "seed": 0, "progress": False}
    a = ppl_dgm.fit(streamed, x, val=Rows(torch.from_numpy(val)), **settings)
    b = ppl_dgm.fit(in_memory, torch.from_numpy(x), val=torch.from_numpy(val), **settings)
    assert a.train_loss == b.train_loss and a.val_loss == pytest.approx(b.val_loss, rel=1e-6)
    for name, value in in_memory.state_dict().items():
        torch.testing.assert_close(streamed.state_dict()[name], value)


def test_a_data_loader_is_iterated_and_an_em_fit_asks_for_tensors():
    x = torch.from_numpy(_blobs(200))
    loader = DataLoader(Rows(x), batch_size=50, shuffle=True, generator=torch.Generator().manual_seed(0))
    model = _gmm()
    result = ppl_dgm.fit(model, loader, val=loader, engine="svi", epochs=2, lr=0.05, seed=0, progress=False)
    assert len(result.val_loss) == 2 and all(np.isfinite(result.train_loss))
    assert ppl_dgm.log_likelihood(model, loader).per_sample.shape == (200,)
    with pytest.raises(ValueError, match="needs all its data in memory"):
        ppl_dgm.fit(_gmm(), x.numpy(), engine="em")
