"""scikit-learn's bundled 8x8 digits (integers 0..16), flat and as 8-row sequences."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from sklearn.datasets import load_digits

from ppl_dgm.datasets.registry import DatasetInfo, register_dataset

DIGITS_BOUNDS = (1000, 1350)


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    bunch = load_digits()
    return bunch.data.astype(np.float64), bunch.target.astype(np.int64)


register_dataset(DatasetInfo(
    name="digits",
    description="sklearn 8x8 digits, 64 integer pixels 0..16; train 1000 / val 350 / test 447",
    event_shape=(64,),
    bounds=DIGITS_BOUNDS,
    loader=_digits,
    num_levels=17,
    image_shape=(8, 8),
))

register_dataset(DatasetInfo(
    name="digits_sequence",
    description="the digits as sequences of 8 rows of 8 pixels, shape (N, 8, 8); same split",
    event_shape=(8, 8),
    bounds=DIGITS_BOUNDS,
    loader=_digits,
    num_levels=17,
    image_shape=(8, 8),
))
