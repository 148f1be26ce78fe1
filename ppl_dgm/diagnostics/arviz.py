"""ArviZ InferenceData for any story fitted by NUTS or SVI: posterior, pointwise log-likelihood,
posterior predictive, observed and constant data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import arviz as az
import numpy as np
import torch

from ppl_dgm.core import GenerativeModel, X
from ppl_dgm.diagnostics.predictive import DRAWS_PER_PASS, posterior_predictive
from ppl_dgm.evaluation.likelihood import importance_weighted
from ppl_dgm.posterior import draw_at, per_example_guide_sites, posterior_draws
from ppl_dgm.sites import context_of
from ppl_dgm.traces import log_importance_weights
from ppl_dgm.validation import prepare_data

EXAMPLE_DIM = "example"


def _numpy(value: torch.Tensor) -> np.ndarray:
    return value.detach().cpu().numpy()


def _estimator(proposals: frozenset[str], num_particles: int) -> str:
    """How the pointwise values were computed, for the group's attributes."""
    sampled = sorted(proposals - {"enumerated"})
    if not sampled:
        return "exact (discrete local latents summed out)" if proposals else "exact"
    return f"importance sampling from the {' and '.join(sampled)}, {num_particles} samples per draw"


@torch.no_grad()
def pointwise_log_likelihood(model: GenerativeModel, batch: Mapping[str, torch.Tensor],
                             draws: Mapping[str, torch.Tensor], num_particles: int = 100
                             ) -> tuple[torch.Tensor, str]:
    """``log p(x_n | theta_s)`` for every draw ``theta_s`` of the global sites: ``(chains, draws, N)``, nats.

    The local latents are integrated out: by the model's closed form ``log_prob_at(x, sites)`` when it
    has one; else from the traces, discrete local sites marked for enumeration summed out exactly and
    continuous ones by importance sampling (``num_particles`` samples per draw from the guide, or from
    the prior for sites the guide lacks or covers with per-training-example parameters). Returns the
    values and a one-line name of the estimator.
    """
    context = context_of(batch)
    chains, per_chain = next(iter(draws.values())).shape[:2] if draws else (1, 1)
    flat = {name: value.reshape(chains * per_chain, *value.shape[2:]) for name, value in draws.items()}
    if callable(getattr(model, "log_prob_at", None)):
        parts = [model.log_prob_at(batch[X], {name: value[start : start + DRAWS_PER_PASS]
                                              for name, value in flat.items()}, **context)
                 for start in range(0, chains * per_chain, DRAWS_PER_PASS)]
        return torch.cat(parts).reshape(chains, per_chain, -1), "exact (closed-form marginal)"
    use_guide = not per_example_guide_sites(model)  # a per-example guide cannot propose for other draws' rows
    one = {k: v[:1] for k, v in batch.items()}
    proposals = log_importance_weights(model, one[X], 1, context_of(one), given=draw_at(flat, 0),
                                       use_guide=use_guide).proposals
    particles = num_particles if proposals - {"enumerated"} else 1  # nothing sampled: one particle is exact
    values = [importance_weighted(model, batch, particles, draw_at(flat, s), use_guide)[0]
              for s in range(chains * per_chain)]
    return torch.stack(values).reshape(chains, per_chain, -1), _estimator(proposals, particles)


def _dims(name: str, value: torch.Tensor, leading: int) -> list[str]:
    """ArviZ dims of a per-example tensor: the example axis, then one named axis per event dim."""
    return [EXAMPLE_DIM] + [f"{name}_dim_{i}" for i in range(value.dim() - 1 - leading)]


def to_inference_data(
    model: GenerativeModel,
    data: torch.Tensor | Mapping[str, torch.Tensor],
    fit: Any = None,
    *,
    num_draws: int = 500,
    predictive: bool = True,
    num_particles: int = 100,
    seed: int = 0,
) -> az.InferenceData:
    """Turn a NUTS run (``fit``) or an SVI fit (``fit=None``: draws from the model's guide) of any
    story into ``arviz.InferenceData``.

    Groups: ``posterior`` (the global latent sites, ``(chain, draw, ...)``, and a NUTS run's local
    ones with an ``example`` axis), ``log_likelihood``
    (``x``: the pointwise log-likelihood ``log p(x_n | theta_s)`` of each example at each draw, local
    latents integrated out as `pointwise_log_likelihood` says; the estimator is in the group's
    ``estimator`` attribute), ``posterior_predictive`` (``x``: one replicated data set per draw,
    drawn in batches of draws), ``observed_data`` and ``constant_data`` (the per-example context),
    with an ``example`` coordinate. Use it with ``az.summary``, ``az.loo``, ``az.compare``,
    ``az.plot_trace`` and ``az.plot_ppc``.

    Args:
        model: the fitted model.
        data: the observations the fit saw, ``(N, *event_shape)`` or a mapping with ``"x"`` and context.
        fit: the result of `ppl_dgm.infer.mcmc.nuts` on this model; ``None`` for SVI.
        num_draws: guide draws for an SVI fit.
        predictive: compute the posterior predictive group.
        num_particles: importance samples per draw for continuous local latents.
        seed: seed of the guide draws, the importance samples and the replicated data.

    Raises:
        ValueError: the model has no global latent sites, or ``fit`` is a run of another model.
    """
    batch = prepare_data(data, model, "data", model.device, model.dtype)
    context = context_of(batch)
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[batch[X].device] if batch[X].is_cuda else []):
        torch.manual_seed(seed)
        draws = posterior_draws(model, batch, fit, num_draws)
        if not draws:
            raise ValueError(f"{type(model).__name__} has no global latent sites (only per-example ones); "
                             "ArviZ's posterior needs parameters drawn as sample sites")
        log_lik, estimator = pointwise_log_likelihood(model, batch, draws, num_particles)
        local_draws = {name: value for name, value in (fit.samples.items() if fit is not None else ())
                       if name not in draws}
        groups: dict[str, Any] = {
            "posterior": {name: _numpy(value) for name, value in {**draws, **local_draws}.items()},
            "log_likelihood": {X: _numpy(log_lik)},
            "observed_data": {X: _numpy(batch[X])},
        }
        dims = {X: _dims(X, batch[X], 0), **{k: _dims(k, v, 0) for k, v in context.items()},
                **{k: _dims(k, v, 2) for k, v in local_draws.items() if v.shape[2] == batch[X].shape[0]}}
        if context:
            groups["constant_data"] = {k: _numpy(v) for k, v in context.items()}
        if predictive:
            groups["posterior_predictive"] = {X: _numpy(posterior_predictive(model, batch, draws))}
    model.train(was_training)
    idata = az.from_dict(**groups, coords={EXAMPLE_DIM: np.arange(batch[X].shape[0])}, dims=dims)
    idata.log_likelihood.attrs["estimator"] = estimator
    if fit is not None:
        idata.posterior.attrs["inference"] = "NUTS"
        idata.posterior.attrs["divergences"] = list(fit.divergences)
    else:
        idata.posterior.attrs["inference"] = f"draws from the guide of {type(model).__name__}"
    return idata
