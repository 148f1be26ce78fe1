"""Posterior predictive replicas: the story run forward at many posterior draws in one batched pass."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import pyro
import torch
from pyro import poutine

from ppl_dgm.evaluation.traces import plate_nesting
from ppl_dgm.sites import X

DRAWS_PER_PASS = 256
"""Posterior draws pushed through the story at once."""
DRAWS_PLATE = "_posterior_draws"


def _replicas_one_by_one(model: Any, draws: dict[str, torch.Tensor], n: int, context: Mapping[str, Any]
                         ) -> torch.Tensor:
    """``(S, n, *event_shape)``: one forward run of the story per draw (the fallback)."""
    replicas = []
    for s in range(len(next(iter(draws.values())))):
        fixed = poutine.condition(model.model, data={name: value[s] for name, value in draws.items()})
        replicas.append(poutine.trace(fixed).get_trace(None, n=n, **context).nodes[X]["value"])
    return torch.stack(replicas)


def _replicas_batched(model: Any, draws: dict[str, torch.Tensor], n: int, context: Mapping[str, Any]
                      ) -> torch.Tensor:
    """``(S, n, *event_shape)``: the story run once inside a plate over the ``S`` draws, each site's
    draws reshaped so that the draw dimension lies left of the story's own plates."""
    first = poutine.trace(poutine.condition(model.model, data={k: v[0] for k, v in draws.items()})
                          ).get_trace(None, n=n, **context)
    nesting = getattr(model, "max_plate_nesting", None) or plate_nesting(first)
    count = len(next(iter(draws.values())))
    shaped = {}
    for name, value in draws.items():
        batch_dims = len(first.nodes[name]["fn"].batch_shape)
        shaped[name] = value.reshape(count, *([1] * (nesting - batch_dims)), *value.shape[1:])
    with pyro.plate(DRAWS_PLATE, count, dim=-nesting - 1):
        x = poutine.trace(poutine.condition(model.model, data=shaped)).get_trace(None, n=n, **context).nodes[X]["value"]
    event_shape = first.nodes[X]["value"].shape[1:]
    if x.numel() != count * first.nodes[X]["value"].numel():
        raise ValueError(f"the batched run gave x of shape {tuple(x.shape)}")
    return x.reshape(count, n, *event_shape)


@torch.no_grad()
def posterior_predictive(model: Any, batch: Mapping[str, torch.Tensor], draws: Mapping[str, torch.Tensor],
                         *, vectorize: bool = True) -> torch.Tensor:
    """Replicated data sets, one per posterior draw: ``(chains, draws, N, *event_shape)``.

    The story runs forward (``x=None``, ``n=N``, with the batch's context) with its global sites
    held at each draw and its local latents drawn from their prior. With ``vectorize`` the draws go
    through in chunks of `DRAWS_PER_PASS`, each one batched run inside a plate over the draws; a story
    that does not broadcast over that extra dimension falls back, with a warning, to one run per draw.

    Args:
        model: the fitted model.
        batch: ``{"x": (N, ...), **context}``; only the number of rows and the context are used.
        draws: site name -> ``(chains, draws, *site_shape)``.
        vectorize: batch the draws (``False``: one run per draw).
    """
    context = {k: v for k, v in batch.items() if k != X}
    n = batch[X].shape[0]
    chains, per_chain = next(iter(draws.values())).shape[:2]
    flat = {name: value.reshape(chains * per_chain, *value.shape[2:]) for name, value in draws.items()}
    parts = []
    for start in range(0, chains * per_chain, DRAWS_PER_PASS):
        chunk = {name: value[start : start + DRAWS_PER_PASS] for name, value in flat.items()}
        if vectorize:
            try:
                parts.append(_replicas_batched(model, chunk, n, context))
                continue
            except (RuntimeError, ValueError, IndexError) as error:
                warnings.warn(f"{type(model).__name__} does not broadcast over a plate of posterior draws "
                              f"({str(error).splitlines()[0]}); drawing replicas one draw at a time", stacklevel=2)
                vectorize = False
        parts.append(_replicas_one_by_one(model, chunk, n, context))
    replicas = torch.cat(parts)
    return replicas.reshape(chains, per_chain, *replicas.shape[1:])
