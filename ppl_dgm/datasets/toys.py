"""Two-dimensional toy densities, generated from a fixed seed (10,000 / 2,000 / 2,000 points)."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
from sklearn.datasets import make_circles, make_moons

from ppl_dgm.datasets.registry import DatasetInfo, register_dataset

NUM_POINTS = 14_000
TOY_BOUNDS = (10_000, 12_000)
SEED = 0


def _moons(rng: np.random.Generator) -> np.ndarray:
    x, _ = make_moons(NUM_POINTS, noise=0.05, random_state=int(rng.integers(2**31)))
    return (x - [0.5, 0.25]) * 2.0


def _circles(rng: np.random.Generator) -> np.ndarray:
    x, _ = make_circles(NUM_POINTS, noise=0.04, factor=0.5, random_state=int(rng.integers(2**31)))
    return x * 3.0


def _eight_gaussians(rng: np.random.Generator) -> np.ndarray:
    angles = 2 * np.pi * rng.integers(8, size=NUM_POINTS) / 8
    centres = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return centres + 0.2 * rng.standard_normal((NUM_POINTS, 2))


def _checkerboard(rng: np.random.Generator) -> np.ndarray:
    # 4x4 board on [-2, 2]^2; points fall uniformly in the squares whose row + column is even.
    col = rng.uniform(-2, 2, NUM_POINTS)
    row = rng.uniform(0, 1, NUM_POINTS) + rng.integers(-2, 2, NUM_POINTS)
    row = row + ((np.floor(col) + np.floor(row)) % 2)
    row = np.where(row >= 2, row - 4, row)
    return np.stack([col, row], axis=1)


def _pinwheel(rng: np.random.Generator, arms: int = 5, radial_sd: float = 0.3, tangential_sd: float = 0.1,
              rate: float = 0.25) -> np.ndarray:
    arm = rng.integers(arms, size=NUM_POINTS)
    radial = 1.0 + radial_sd * rng.standard_normal(NUM_POINTS)
    tangential = tangential_sd * rng.standard_normal(NUM_POINTS)
    angle = 2 * np.pi * arm / arms + rate * np.exp(radial)
    cos, sin = np.cos(angle), np.sin(angle)
    return 1.5 * np.stack([cos * radial - sin * tangential, sin * radial + cos * tangential], axis=1)


def _register(name: str, description: str, make: Callable[[np.random.Generator], np.ndarray]) -> None:
    @lru_cache(maxsize=1)
    def loader() -> tuple[np.ndarray, None]:
        return make(np.random.default_rng(SEED)), None

    register_dataset(DatasetInfo(name=name, description=description, event_shape=(2,), bounds=TOY_BOUNDS,
                                 loader=loader))


_register("moons", "two interleaved half circles in 2-D", _moons)
_register("circles", "two concentric circles in 2-D", _circles)
_register("8gaussians", "eight Gaussians on a circle of radius 2", _eight_gaussians)
_register("checkerboard", "uniform on the dark squares of a 4x4 board on [-2, 2]^2", _checkerboard)
_register("pinwheel", "five curved arms of a pinwheel", _pinwheel)
