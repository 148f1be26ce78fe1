"""Uniform dequantization: scoring a continuous density on integer-valued data."""

from __future__ import annotations

from typing import Any

import torch


def needs_dequantization(model: Any, x: torch.Tensor) -> bool:
    """True when ``model`` is a continuous density and every value of ``x`` is an integer.

    Such data are then modelled as ``x + u``, ``u ~ U[0, 1)^D``, which turns the density's
    log-likelihood into a lower bound on the log-probability of the discrete data.
    """
    return model.capabilities.data == "continuous" and bool((x == torch.round(x)).all())


def dequantize(x: torch.Tensor) -> torch.Tensor:
    """``x + u`` with ``u ~ U[0, 1)`` drawn afresh for every entry (same shape and dtype)."""
    return x + torch.rand_like(x)
