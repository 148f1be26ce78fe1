"""Training and evaluation data that stays where it is (on disk, in a Dataset) and reaches the device
one batch at a time.

`as_rows` turns what a caller passes to ``ppl_dgm.fit`` or ``ppl_dgm.log_likelihood`` into a `Rows`
object: tensors (or a mapping of them) are checked and moved to the device once, as before; a
map-style ``torch.utils.data.Dataset`` (items are rows, or dicts with ``"x"`` and context), a numpy
array or ``np.memmap`` (anything with ``shape`` and fancy ``__getitem__``) are read only for the rows a
batch asks for; a ``DataLoader`` is iterated as it is (its own order, batch size and workers).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ppl_dgm.sites import X
from ppl_dgm.validation import prepare_data

HEAD_ROWS = 10_000
"""Rows of a streamed data set that ``model.setup`` (data-dependent initialization) sees."""


class Rows:
    """A data set of ``len(self)`` rows whose batches come back as dicts of tensors on ``device``
    (key ``"x"`` plus context), checked by the model. Subclasses say how rows are read."""

    streamed: bool = True
    """Whether rows are read on demand (False: the whole data set is already on the device)."""
    indexable: bool = True
    """Whether `take` works (False for a DataLoader: iterate it with `loader_batches`)."""

    def __init__(self, model: Any, name: str, device: torch.device, dtype: torch.dtype) -> None:
        self.model, self.name, self.device, self.dtype = model, name, device, dtype

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, index: np.ndarray) -> torch.Tensor | Mapping[str, torch.Tensor]:
        """The rows ``index`` (``(B,)`` row numbers) as a CPU tensor or a mapping of them."""
        raise NotImplementedError

    def take(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The rows ``index`` (``(B,)`` row numbers), checked and on the device."""
        return prepare_data(self.read(index.cpu().numpy()), self.model, self.name, self.device, self.dtype)

    def head(self, rows: int = HEAD_ROWS) -> dict[str, torch.Tensor]:
        """The first ``min(rows, len(self))`` rows, on the device (for ``model.setup`` and the first batch)."""
        return self.take(torch.arange(min(rows, len(self))))

    def chunks(self, size: int, index: torch.Tensor | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """The rows ``index`` (default: all, in order) in consecutive batches of ``size`` rows, on the device."""
        index = torch.arange(len(self)) if index is None else index
        for part in index.split(size):
            yield self.take(part)


class TensorRows(Rows):
    """Tensors already checked and moved to the device in one piece (the in-memory path)."""

    streamed = False

    def __init__(self, batch: dict[str, torch.Tensor]) -> None:
        """``batch``: checked tensors on the device (`ppl_dgm.validation.prepare_data`'s output)."""
        super().__init__(None, "data", batch[X].device, batch[X].dtype)
        self.batch = batch

    def __len__(self) -> int:
        return self.batch[X].shape[0]

    def take(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        index = index.to(self.batch[X].device)
        return {k: v[index] for k, v in self.batch.items()}

    def head(self, rows: int | None = None) -> dict[str, torch.Tensor]:
        return self.batch if rows is None else {k: v[:rows] for k, v in self.batch.items()}


class ArrayRows(Rows):
    """A numpy array or ``np.memmap`` of shape ``(N, *event_shape)``: only the rows asked for are read."""

    def __init__(self, array: Any, model: Any, name: str, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(model, name, device, dtype)
        if len(getattr(array, "shape", ())) == 0:
            raise ValueError(f"{name} must have a leading batch dimension, got shape {getattr(array, 'shape', ())}")
        self.array = array

    def __len__(self) -> int:
        return self.array.shape[0]

    def read(self, index: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.array[index]))


class DatasetRows(Rows):
    """A map-style ``Dataset`` whose items are rows (tensors, arrays, numbers) or dicts with ``"x"`` and context."""

    def __init__(self, dataset: Dataset, model: Any, name: str, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(model, name, device, dtype)
        try:
            self.size = len(dataset)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(f"{name} is a Dataset without a length (an IterableDataset?); pass a map-style Dataset "
                            "or wrap it in a DataLoader") from None
        self.dataset = dataset

    def __len__(self) -> int:
        return self.size

    def read(self, index: np.ndarray) -> torch.Tensor | dict[str, torch.Tensor]:
        items = [self.dataset[int(i)] for i in index]
        if isinstance(items[0], Mapping):
            return {key: torch.stack([torch.as_tensor(item[key]) for item in items]) for key in items[0]}
        return torch.stack([torch.as_tensor(item) for item in items])


class LoaderRows(Rows):
    """A ``DataLoader`` iterated as it is; its batches are tensors or dicts with ``"x"`` and context."""

    indexable = False

    def __init__(self, loader: DataLoader, model: Any, name: str, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(model, name, device, dtype)
        self.loader = loader
        try:
            self.size = len(loader.dataset)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(f"{name} is a DataLoader over a Dataset without a length; give its Dataset a __len__ "
                            "(the data-plate scaling needs the number of rows)") from None

    def __len__(self) -> int:
        return self.size

    def loader_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """One pass over the loader, each batch checked and on the device."""
        for batch in self.loader:
            yield prepare_data(batch if isinstance(batch, Mapping) else torch.as_tensor(batch), self.model,
                               self.name, self.device, self.dtype)

    def head(self, rows: int = HEAD_ROWS) -> dict[str, torch.Tensor]:
        parts, total = [], 0
        for batch in self.loader_batches():
            parts.append(batch)
            total += batch[X].shape[0]
            if total >= rows:
                break
        return {k: torch.cat([p[k] for p in parts])[:rows] for k in parts[0]}

    def chunks(self, size: int, index: torch.Tensor | None = None) -> Iterator[dict[str, torch.Tensor]]:
        if index is not None:
            raise ValueError(f"{self.name} is a DataLoader, which cannot be split into shares of rows; pass its "
                             "Dataset (loader.dataset) instead")
        return self.loader_batches()


def as_rows(data: Any, model: Any, name: str, device: torch.device, dtype: torch.dtype) -> Rows:
    """Wrap ``data`` (tensor or mapping of tensors; ``DataLoader``; map-style ``Dataset``; numpy array or
    ``np.memmap`` or anything with ``shape`` and row indexing) for batch-by-batch access on ``device``.

    Raises:
        TypeError: ``data`` is none of these (the message lists what works).
    """
    if isinstance(data, (torch.Tensor, Mapping)):
        return TensorRows(prepare_data(data, model, name, device, dtype))
    if isinstance(data, DataLoader):
        return LoaderRows(data, model, name, device, dtype)
    if isinstance(data, Dataset):
        return DatasetRows(data, model, name, device, dtype)
    if hasattr(data, "shape") and hasattr(data, "__getitem__"):
        return ArrayRows(data, model, name, device, dtype)
    raise TypeError(f"{name} must be a torch.Tensor (e.g. torch.tensor({name})), a mapping with key {X!r}, a torch "
                    f"Dataset or DataLoader, or a numpy array / np.memmap, got {type(data).__name__}")
