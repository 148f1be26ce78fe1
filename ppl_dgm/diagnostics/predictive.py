"""Posterior predictive replicas: the story run forward at many posterior draws in one batched pass."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import pyro
import torch
from pyro import poutine

from ppl_dgm.posterior import draw_at
from ppl_dgm.sites import X, context_of
from ppl_dgm.traces import is_latent, plate_nesting

DRAWS_PER_PASS = 256
"""Posterior draws pushed through the story at once."""
DRAWS_PLATE = "_posterior_draws"


def _replicas_one_by_one(model: Any, draws: dict[str, torch.Tensor], n: int, context: Mapping[str, Any]
                         ) -> torch.Tensor:
    """``(S, n, *event_shape)``: one forward run of the story per draw (the fallback)."""
    replicas = []
    for s in range(len(next(iter(draws.values())))):
        fixed = poutine.condition(model.model, data=draw_at(draws, s))
        replicas.append(poutine.trace(fixed).get_trace(None, n=n, **context).nodes[X]["value"])
    return torch.stack(replicas)


def _replicas_batched(model: Any, draws: dict[str, torch.Tensor], n: int, context: Mapping[str, Any]
                      ) -> torch.Tensor:
    """``(S, n, *event_shape)``: the story run once inside a plate over the ``S`` draws, each site's
    draws reshaped so that the draw dimension lies left of the story's own plates."""
    first = poutine.trace(poutine.condition(model.model, data=draw_at(draws, 0))
                          ).get_trace(None, n=n, **context)
    nesting = getattr(model, "max_plate_nesting", None) or plate_nesting(first)
    count = len(next(iter(draws.values())))
    shaped = {}
    for name, value in draws.items():
        batch_dims = len(first.nodes[name]["fn"].batch_shape)
        shaped[name] = value.reshape(count, *([1] * (nesting - batch_dims)), *value.shape[1:])
    with pyro.plate(DRAWS_PLATE, count, dim=-nesting - 1):
        batched = poutine.trace(poutine.condition(model.model, data=shaped)).get_trace(None, n=n, **context)
    for s in sorted({0, count - 1}):
        _check_one_draw(model, batched, first, draw_at(draws, s), s, count, context)
    return batched.nodes[X]["value"].reshape(count, *first.nodes[X]["value"].shape)


def _per_draw(value: torch.Tensor, single: torch.Tensor, count: int, what: str) -> torch.Tensor:
    """``value`` of a batched run as ``(count, *single.shape)``; ``ValueError`` if it cannot be."""
    if value.numel() != count * single.numel():
        raise ValueError(f"the batched run gave {what} of shape {tuple(value.shape)}")
    return value.reshape(count, *single.shape)


def _check_one_draw(model: Any, batched: Any, first: Any, draw: dict[str, torch.Tensor], s: int, count: int,
                    context: Mapping[str, Any]) -> None:
    """``ValueError`` unless draw ``s`` of the batched run is what the story gives one draw at a time:
    the replica's log-density, given that draw and the batched run's local values for it, must agree
    (a story that reduces over a global site's leading dimension mixes the draws)."""
    local = {name: _per_draw(site["value"], first.nodes[name]["value"], count, name)[s]
             for name, site in batched.nodes.items()
             if is_latent(site) and name in first.nodes and name not in draw}
    x = _per_draw(batched.nodes[X]["value"], first.nodes[X]["value"], count, X)[s]
    alone = poutine.trace(poutine.condition(model.model, data={**draw, **local})).get_trace(x, **context)
    expected = alone.nodes[X]["fn"].log_prob(x).sum()
    got = _per_draw(batched.nodes[X]["fn"].log_prob(batched.nodes[X]["value"]).expand(
        batched.nodes[X]["fn"].batch_shape), first.nodes[X]["fn"].log_prob(first.nodes[X]["value"]), count,
        "log-densities")[s].sum()
    if not torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * max(1, x.numel())):
        raise ValueError(f"draw {s} of the batched run does not match a run at that draw alone")


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
    context = context_of(batch)
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
    if replicas.shape[1] != n:
        raise ValueError(f"{type(model).__name__} drew {replicas.shape[1]} examples when asked for n={n}; its "
                         "model must draw n examples when x is None (for ppl_dgm.story: pass size_arg=)")
    return replicas.reshape(chains, per_chain, *replicas.shape[1:])
