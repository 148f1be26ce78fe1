"""Uniform dequantization: scoring a continuous density on integer-valued data."""

from __future__ import annotations

from typing import Any

import torch

from ppl_dgm.lazy import trace_story
from ppl_dgm.sites import X


def needs_dequantization(model: Any, x: torch.Tensor, context: dict[str, torch.Tensor] | None = None) -> bool:
    """True when ``model`` is a continuous density and every value of ``x`` is an integer.

    Such data are then modelled as ``x + u``, ``u ~ U[0, 1)^D``, which turns the density's
    log-likelihood into a lower bound on the log-probability of the discrete data. A model that
    does not declare ``capabilities.data`` is a density unless its observed site's distribution
    has a discrete support (one run of the story on ``x`` tells).
    """
    if not bool((x == torch.round(x)).all()):
        return False
    declared = model.capabilities.data
    if declared is not None:
        return declared == "continuous"
    return not observed_support_is_discrete(model, x, context)


def observed_support_is_discrete(model: Any, x: torch.Tensor, context: dict[str, torch.Tensor] | None = None) -> bool:
    """Whether the distribution at the story's observed site ``"x"`` has a discrete support (one run of
    the model alone, its latents drawn from the prior)."""
    _, trace = trace_story(model, {X: x, **(context or {})}, use_guide=False)
    return bool(trace.nodes[X]["fn"].support.is_discrete)


def dequantize(x: torch.Tensor) -> torch.Tensor:
    """``x + u`` with ``u ~ U[0, 1)`` drawn afresh for every entry (same shape and dtype)."""
    return x + torch.rand_like(x)
