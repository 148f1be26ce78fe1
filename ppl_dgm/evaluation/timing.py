"""Wall time of a piece of work on a device, for the speed figures of examples and benchmarks."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from statistics import median
from typing import Any

import torch


def _timed(work: Callable[[], Any], device: torch.device) -> float:
    """Seconds one call of ``work()`` takes, with the device synchronized before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def median_seconds(work: Callable[[], Any], device: torch.device, repeats: int = 3,
                   slow_seconds: float = math.inf) -> float:
    """Median wall time of ``work()`` over ``repeats`` calls after one warm-up call, in seconds; the
    warm-up's own time when it took longer than ``slow_seconds`` (already far beyond warm-up effects)."""
    first = _timed(work, device)
    if first > slow_seconds:
        return first
    return median(_timed(work, device) for _ in range(repeats))
