"""NUTS over a model's global parameters, several chains, started near the fitted point."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.distributions.transforms import biject_to
from pyro.infer import MCMC, NUTS
from pyro.infer.autoguide.initialization import init_to_median, init_to_value

from ppl_dgm.core import GenerativeModel, X
from ppl_dgm.lazy import initialize_parameters
from ppl_dgm.posterior import global_latent_sites, guide_global_values
from ppl_dgm.sites import context_of
from ppl_dgm.validation import prepare_data


@dataclass
class MCMCResult:
    """Posterior draws from NUTS.

    Attributes:
        samples: site name -> tensor of shape ``(chains, draws, *site_shape)``.
        divergences: number of divergent transitions in each chain.
        seconds: wall time of all chains.
    """

    samples: dict[str, torch.Tensor]
    divergences: list[int]
    seconds: float

    @property
    def num_chains(self) -> int:
        return next(iter(self.samples.values())).shape[0]

    @property
    def num_draws(self) -> int:
        return next(iter(self.samples.values())).shape[1]


def _start(model: GenerativeModel, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The guide's point for the global latents: the model's `point_estimate` (autoguide medians,
    an estimator's fit), else one draw of a guide that samples them; empty without a guide."""
    sites = global_latent_sites(model, batch)
    start = {name: value for name, value in model.point_estimate().items() if name in sites}
    drawn = guide_global_values(model, batch)
    return {**{name: value for name, value in drawn.items() if name in sites}, **start}


def _jittered(model: GenerativeModel, batch: Mapping[str, torch.Tensor], start: dict[str, torch.Tensor],
              jitter: float) -> dict[str, torch.Tensor]:
    """``start`` moved by ``N(0, jitter^2)`` in each site's unconstrained space."""
    context = context_of(batch)
    trace = poutine.trace(poutine.condition(model.model, data=start)).get_trace(batch[X], **context)
    moved = {}
    for name, value in start.items():
        transform = biject_to(trace.nodes[name]["fn"].support)
        unconstrained = transform.inv(value)
        moved[name] = transform(unconstrained + jitter * torch.randn_like(unconstrained))
    return moved


def nuts(
    model: GenerativeModel,
    data: torch.Tensor | Mapping[str, torch.Tensor],
    *,
    num_samples: int = 500,
    warmup_steps: int = 500,
    num_chains: int = 2,
    seed: int = 0,
    jitter: float = 0.05,
    target_accept_prob: float = 0.8,
    max_tree_depth: int = 10,
    progress: bool = True,
) -> MCMCResult:
    """Sample the posterior of ``model``'s global parameters with NUTS (Hoffman & Gelman, 2014).

    Works on any story: discrete latent sites marked ``infer={"enumerate": "parallel"}`` are
    summed out; the guide (an autoguide, a hand-written one, or none) only supplies the start.
    Chains run one after another, each from the model's fitted point (its `point_estimate`, e.g.
    the autoguide's median, else a draw of its guide) moved by ``jitter`` in unconstrained space,
    with seeds ``seed, seed + 1, ...``; sites the guide does not cover start at their prior median
    (Pyro's ``init_to_median``). Starting all chains in one mode keeps mixture components from
    swapping labels between chains, so R-hat compares like with like.

    Args:
        model: a fitted (or set-up) model.
        data: examples ``(N, *event_shape)`` or a mapping with key ``"x"`` and context.
        num_samples: draws kept per chain (at least 4, for Pyro's per-chain diagnostics).
        warmup_steps: adaptation steps per chain (discarded).
        num_chains: chains (at least 2 for R-hat).
        seed: seed of the first chain.
        jitter: scale of the perturbation of each chain's start.
        target_accept_prob: NUTS step-size adaptation target.
        max_tree_depth: NUTS tree depth limit.
        progress: show Pyro's progress bar.
    """
    for name, value, low in (("num_samples", num_samples, 4), ("warmup_steps", warmup_steps, 0),
                             ("num_chains", num_chains, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    batch = prepare_data(data, model, "data", model.device, model.dtype)
    context = context_of(batch)
    model.setup(batch[X], **context)
    initialize_parameters(model, batch)
    start = _start(model, batch)
    samples: dict[str, list[torch.Tensor]] = {}
    divergences = []
    began = time.perf_counter()
    for chain in range(num_chains):
        pyro.set_rng_seed(seed + chain)
        init = init_to_value(values=_jittered(model, batch, start, jitter), fallback=init_to_median)
        kernel = NUTS(model.model, max_plate_nesting=getattr(model, "max_plate_nesting", None),
                      target_accept_prob=target_accept_prob, max_tree_depth=max_tree_depth, init_strategy=init)
        mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps, disable_progbar=not progress)
        mcmc.run(batch[X], **context)
        for name, value in mcmc.get_samples().items():
            samples.setdefault(name, []).append(value)
        divergences.append(int(mcmc.diagnostics()["divergences"]["chain 0"].__len__()))
    return MCMCResult({name: torch.stack(values) for name, values in samples.items()}, divergences,
                      time.perf_counter() - began)
