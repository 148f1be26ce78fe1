"""Dataset registry: name -> generator of a fixed train/val/test split; nothing is downloaded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

SplitName = Literal["train", "val", "test", "all"]


@dataclass(frozen=True)
class Split:
    """One split of a data set: examples ``x`` of shape ``(N, *event_shape)`` and labels ``y`` ``(N,)``."""

    x: torch.Tensor
    y: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass(frozen=True)
class DatasetInfo:
    """What a data set is.

    Attributes:
        name: registry name.
        description: one line.
        event_shape: shape of one example.
        bounds: ``(train_end, val_end)``: train ``[:train_end]``, val ``[train_end:val_end]``,
            test ``[val_end:]`` of the arrays the loader returns.
        num_levels: integer data in ``0..num_levels-1``, or ``None`` for real-valued data.
        image_shape: ``(H, W)`` to draw an example as an image, or ``None`` for points.
    """

    name: str
    description: str
    event_shape: tuple[int, ...]
    bounds: tuple[int, int]
    loader: Callable[[], tuple[np.ndarray, np.ndarray | None]]
    num_levels: int | None = None
    image_shape: tuple[int, int] | None = None


_DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add a data set to the registry (names are unique, case-insensitive)."""
    key = info.name.lower()
    if key in _DATASETS:
        raise ValueError(f"a dataset named {key!r} is already registered")
    _DATASETS[key] = info
    return info


def dataset_info(name: str) -> DatasetInfo:
    """The `DatasetInfo` registered as ``name``; ``ValueError`` if unknown."""
    try:
        return _DATASETS[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(_DATASETS))}") from None


def list_datasets() -> list[str]:
    """Names of the registered data sets, sorted."""
    return sorted(_DATASETS)


def load_dataset(
    name: str,
    split: SplitName = "train",
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Split:
    """Load one split of a registered data set as tensors on ``device`` with ``dtype``.

    Splits are fixed (no shuffling): see `DatasetInfo` ``bounds``.
    """
    info = dataset_info(name)
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    train_end, val_end = info.bounds
    rows = {"train": slice(0, train_end), "val": slice(train_end, val_end), "test": slice(val_end, None),
            "all": slice(None)}
    if split not in rows:
        raise ValueError(f"split must be one of {', '.join(rows)}, got {split!r}")
    x, y = info.loader()
    x_t = torch.as_tensor(np.ascontiguousarray(x[rows[split]]), dtype=dtype, device=device)
    x_t = x_t.reshape(x_t.shape[0], *info.event_shape)
    y_t = None if y is None else torch.as_tensor(y[rows[split]], dtype=torch.long, device=device)
    return Split(x_t, y_t)
