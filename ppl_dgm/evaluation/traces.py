"""Importance log-weights from a model trace replayed against a guide trace."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from pyro import poutine
from pyro.distributions import Delta
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample

from ppl_dgm.core import DATA


def repeat_batch(value: Any, times: int, batch_size: int) -> Any:
    """Tile a per-example tensor ``times`` over its first dim (``(N, ...) -> (times*N, ...)``).

    Anything that is not a tensor with ``batch_size`` rows is passed through unchanged.
    """
    if times == 1 or not (isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == batch_size):
        return value
    return value.repeat(times, *([1] * (value.dim() - 1)))


class LogWeights(NamedTuple):
    """Log importance weights split by the data plate (nats).

    Attributes:
        local: shape ``(K, N)``: per particle and example, the sites inside plate ``"data"``.
        global_: shape ``()``: the sites outside the plate (global latents and their priors).
        global_latents: names of guide sites outside the plate that are not point masses.
        not_reparameterized: names of guide sites drawn without a reparameterized sampler.
    """

    local: torch.Tensor
    global_: torch.Tensor | float
    global_latents: tuple[str, ...]
    not_reparameterized: tuple[str, ...]


def site_log_probs(trace: Trace, batch_size: int, scaled: bool = False
                   ) -> tuple[torch.Tensor | float, torch.Tensor | float]:
    """Sum the log-densities of a trace's sample sites, split by the data plate.

    Returns ``(local, global_)``: ``local`` of shape ``(batch_size,)`` sums every site inside
    plate ``"data"`` per example, ``global_`` (a scalar) sums the sites outside it. Masks are
    applied, and with ``scaled`` the sites' ``poutine.scale`` factors too (a training
    objective's choice, e.g. a beta-VAE; a likelihood is unscaled); ``pyro.deterministic``
    sites contribute nothing. Units: nats.
    """
    local: torch.Tensor | float = 0.0
    global_: torch.Tensor | float = 0.0
    for site in trace.nodes.values():
        if site["type"] != "sample" or site["infer"].get("_deterministic") or site_is_subsample(site):
            continue
        log_p = site["fn"].log_prob(site["value"])
        if site["mask"] is not None:
            log_p = log_p * site["mask"]
        if scaled:
            log_p = log_p * site["scale"]
        frame = next((f for f in site["cond_indep_stack"] if f.name == DATA), None)
        if frame is None:
            global_ = global_ + log_p.sum()
            continue
        log_p = log_p.movedim(frame.dim, 0)
        local = local + log_p.reshape(batch_size, -1).sum(-1)
    return local, global_


def _global_latents(guide_trace: Trace) -> tuple[str, ...]:
    """Guide sample sites outside plate ``"data"`` that are not point masses."""
    return tuple(
        name
        for name, site in guide_trace.nodes.items()
        if site["type"] == "sample"
        and not site_is_subsample(site)
        and not any(f.name == DATA for f in site["cond_indep_stack"])
        and not isinstance(site["fn"], Delta)
    )


def log_importance_weights(
    model: Any,
    x: torch.Tensor,
    num_particles: int = 1,
    context: Mapping[str, Any] | None = None,
    scaled: bool = False,
) -> LogWeights:
    """Log importance weights ``log p(x, z) - log q(z | x)`` of a model/guide pair (nats).

    Draws ``num_particles`` guide traces per example by tiling the batch (the model's plate
    ``"data"`` sees ``K * N`` rows) and replays the model against them, so any model whose
    latents are local to plate ``"data"`` needs no particle dimension of its own.

    Args:
        model: a `GenerativeModel`.
        x: data, shape ``(N, *event_shape)``.
        num_particles: samples ``K`` per example.
        context: extra per-example keyword arguments of model and guide (tiled too).
        scaled: apply the sites' ``poutine.scale`` factors (training objectives do).

    Returns:
        `LogWeights` with ``local`` of shape ``(K, N)``.
    """
    n = x.shape[0]
    xs = repeat_batch(x, num_particles, n)
    ctx = {k: repeat_batch(v, num_particles, n) for k, v in (context or {}).items()}
    guide_trace = poutine.trace(model.guide).get_trace(xs, **ctx)
    model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(xs, **ctx)
    rows = num_particles * n
    model_local, model_global = site_log_probs(model_trace, rows, scaled)
    guide_local, guide_global = site_log_probs(guide_trace, rows, scaled)
    local = torch.as_tensor(model_local - guide_local, device=x.device)
    return LogWeights(
        local.expand(rows).reshape(num_particles, n),
        model_global - guide_global,
        _global_latents(guide_trace),
        tuple(
            name
            for name, site in guide_trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site) and not site["fn"].has_rsample
        ),
    )
