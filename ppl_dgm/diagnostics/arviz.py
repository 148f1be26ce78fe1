"""ArviZ InferenceData from a NUTS or SVI fit: posterior, posterior predictive, pointwise
marginal log-likelihood and observed data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import arviz as az
import numpy as np
import torch
from pyro import poutine

from ppl_dgm.core import GenerativeModel, X
from ppl_dgm.infer.mcmc import MCMCResult, global_site_values
from ppl_dgm.validation import prepare_data

DRAWS_PER_PASS = 256


def _numpy(value: torch.Tensor) -> np.ndarray:
    return value.detach().cpu().numpy()


def _posterior_draws(model: GenerativeModel, batch: dict[str, torch.Tensor], fit: MCMCResult | None,
                     num_draws: int) -> dict[str, torch.Tensor]:
    """Global sites with shape ``(chains, draws, ...)``: from NUTS, or drawn from the guide (one chain)."""
    if fit is not None:
        return {name: value.to(model.device) for name, value in fit.samples.items()}
    draws = [global_site_values(model, batch) for _ in range(num_draws)]
    return {name: torch.stack([d[name] for d in draws]).unsqueeze(0) for name in draws[0]}


def pointwise_log_likelihood(model: GenerativeModel, batch: dict[str, torch.Tensor],
                             draws: dict[str, torch.Tensor]) -> torch.Tensor:
    """Marginal ``log p(x_n | theta_s)`` (discrete latents summed out) for every draw: ``(chains, draws, N)``."""
    if not callable(getattr(model, "log_prob_at", None)):
        raise TypeError(f"{type(model).__name__} has no log_prob_at(x, sites); it cannot give a pointwise "
                        "marginal log-likelihood")
    context = {k: v for k, v in batch.items() if k != X}
    chains, per_chain = next(iter(draws.values())).shape[:2]
    flat = {name: value.reshape(chains * per_chain, *value.shape[2:]) for name, value in draws.items()}
    parts = []
    with torch.no_grad():
        for start in range(0, chains * per_chain, DRAWS_PER_PASS):
            part = {name: value[start : start + DRAWS_PER_PASS] for name, value in flat.items()}
            parts.append(model.log_prob_at(batch[X], part, **context))
    return torch.cat(parts).reshape(chains, per_chain, -1)


def posterior_predictive(model: GenerativeModel, batch: dict[str, torch.Tensor],
                         draws: dict[str, torch.Tensor]) -> torch.Tensor:
    """Replicated data sets, one per draw: the model run forward with the global sites fixed."""
    context = {k: v for k, v in batch.items() if k != X}
    n = batch[X].shape[0]
    chains, per_chain = next(iter(draws.values())).shape[:2]
    replicas = []
    with torch.no_grad():
        for c in range(chains):
            for s in range(per_chain):
                fixed = poutine.condition(model.model, data={name: value[c, s] for name, value in draws.items()})
                replicas.append(poutine.trace(fixed).get_trace(None, n=n, **context).nodes[X]["value"])
    return torch.stack(replicas).reshape(chains, per_chain, *replicas[0].shape)


def to_inference_data(
    model: GenerativeModel,
    data: torch.Tensor | Mapping[str, torch.Tensor],
    fit: MCMCResult | None = None,
    *,
    num_draws: int = 500,
    predictive: bool = True,
    seed: int = 0,
) -> az.InferenceData:
    """Turn a NUTS run (``fit``) or an SVI fit (``fit=None``: draws from the model's guide)
    into ``arviz.InferenceData``.

    Groups: ``posterior`` (the global sites, ``(chain, draw, ...)``), ``log_likelihood``
    (``x``: the pointwise *marginal* log-likelihood of each observation, discrete latents
    summed out, from ``model.log_prob_at``), ``posterior_predictive`` (``x``: one replicated
    data set per draw) and ``observed_data``. Use it with ``az.summary``, ``az.loo``,
    ``az.compare`` and ``az.plot_ppc``.

    Args:
        model: the fitted model.
        data: the observations the fit saw, ``(N, *event_shape)`` or a mapping with ``"x"``.
        fit: the result of `ppl_dgm.infer.mcmc.nuts`; ``None`` for SVI.
        num_draws: guide draws for an SVI fit.
        predictive: compute the posterior predictive group (one model run per draw).
        seed: seed of the guide draws and the replicated data.
    """
    batch = prepare_data(data, model, "data", model.device, model.dtype)
    with torch.random.fork_rng(devices=[batch[X].device] if batch[X].is_cuda else []):
        torch.manual_seed(seed)
        draws = _posterior_draws(model, batch, fit, num_draws)
        groups: dict[str, Any] = {
            "posterior": {name: _numpy(value) for name, value in draws.items()},
            "log_likelihood": {X: _numpy(pointwise_log_likelihood(model, batch, draws))},
            "observed_data": {X: _numpy(batch[X])},
        }
        if predictive:
            groups["posterior_predictive"] = {X: _numpy(posterior_predictive(model, batch, draws))}
    return az.from_dict(**groups)
