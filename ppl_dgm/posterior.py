"""Posterior draws of a story's global latent sites: from its guide (after SVI) or a NUTS run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from pyro import poutine
from pyro.infer.autoguide import AutoGuide, AutoGuideList

from ppl_dgm.lazy import PROTOTYPE, trace_story
from ppl_dgm.sites import X, context_of
from ppl_dgm.traces import in_data_plate, is_latent

DRAWS_FOR_A_MEDIAN = 201


def latent_sites(model: Any, batch: Mapping[str, torch.Tensor], use_guide: bool = True
                 ) -> tuple[dict[str, dict], dict[str, dict]]:
    """The model's latent sample sites ``(global, local)`` (name -> trace site), outside and inside
    plate ``"data"``, in one run of the model replayed against its guide on ``batch`` (with
    ``use_guide=False``: the model alone, every latent drawn from its prior)."""
    _, trace = trace_story(model, batch, use_guide)
    latent = {name: site for name, site in trace.nodes.items() if is_latent(site)}
    return ({name: site for name, site in latent.items() if not in_data_plate(site)},
            {name: site for name, site in latent.items() if in_data_plate(site)})


def global_latent_sites(model: Any, batch: Mapping[str, torch.Tensor]) -> dict[str, dict]:
    """The model's latent sample sites outside plate ``"data"`` (name -> trace site)."""
    return latent_sites(model, batch, use_guide=not per_example_guide_sites(model))[0]


def prototype_batch(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The batch the story first ran on in `fit` (kept when it created parameters), else ``None``."""
    prototype = model._modules.get(PROTOTYPE)
    return dict(prototype.named_buffers()) if prototype is not None else None


def per_example_guide_sites(model: torch.nn.Module) -> frozenset[str]:
    """Local latent sites that an autoguide covers with parameters of its own for each training example
    (not amortized): such a guide is defined on the training rows only, in their order."""
    guides = [m for m in model.modules() if isinstance(m, AutoGuide) and m.prototype_trace is not None]
    batch = prototype_batch(model)
    if not guides or batch is None:
        return frozenset()
    local = latent_sites(model, batch)[1]
    return frozenset(name for guide in guides for name in guide.prototype_trace.nodes if name in local)


def guide_global_values(model: Any, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Values of the guide's latent sites outside plate ``"data"`` in one run of the guide (auxiliary
    sites, such as an autoguide's unconstrained draws, left out)."""
    with torch.no_grad():
        trace = poutine.trace(model.guide).get_trace(batch[X], **context_of(batch))
    return {name: site["value"].detach() for name, site in trace.nodes.items()
            if is_latent(site) and not in_data_plate(site) and not site["infer"].get("is_auxiliary")}


def _top_level_autoguides(model: torch.nn.Module) -> list[AutoGuide]:
    """Autoguides held by ``model`` that are not parts of an `AutoGuideList` it holds."""
    guides = [m for m in model.modules() if isinstance(m, AutoGuide)]
    parts = {id(p) for g in guides if isinstance(g, AutoGuideList) for p in g}
    return [g for g in guides if id(g) not in parts]


@torch.no_grad()
def autoguide_medians(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Posterior medians of the global sites of every (set-up) autoguide the model holds.

    Autoguides without a closed-form median (e.g. ``AutoIAFNormal``) give the elementwise median of
    201 draws. Sites inside plate ``"data"`` are left out (they belong to the training examples).
    """
    guides = [guide for guide in _top_level_autoguides(model) if guide.prototype_trace is not None]
    if not guides:
        return {}
    batch = prototype_batch(model) or {}
    args, kwargs = ((batch[X],), context_of(batch)) if X in batch else ((), {})
    local = set(latent_sites(model, batch)[1]) if batch else None  # the story's own view (plates renamed)
    medians: dict[str, torch.Tensor] = {}
    for guide in guides:
        try:
            values = guide.median(*args, **kwargs)
        except NotImplementedError:
            draws = [guide(*args, **kwargs) for _ in range(DRAWS_FOR_A_MEDIAN)]
            values = {name: torch.stack([d[name] for d in draws]).median(0).values for name in draws[0]}
        for name, value in values.items():
            site = guide.prototype_trace.nodes.get(name)
            if site is not None and not (name in local if local is not None else in_data_plate(site)):
                medians[name] = value.detach()
    return medians


def draw_at(draws: Mapping[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
    """Draw ``index`` of stacked draws (site -> ``(S, ...)``): site -> value."""
    return {name: value[index] for name, value in draws.items()}


def draws_from_guide(model: Any, batch: Mapping[str, torch.Tensor], num_draws: int) -> dict[str, torch.Tensor]:
    """``num_draws`` draws of the guide's global sites, shape ``(1, num_draws, *site_shape)`` (one chain)."""
    draws = [guide_global_values(model, batch) for _ in range(num_draws)]
    return {name: torch.stack([d[name] for d in draws]).unsqueeze(0) for name in draws[0]}


def posterior_draws(model: Any, batch: Mapping[str, torch.Tensor], fit: Any = None, num_draws: int = 500
                    ) -> dict[str, torch.Tensor]:
    """Draws of every global latent site of ``model``: site name -> ``(chains, draws, *site_shape)``.

    From ``fit`` (an `MCMCResult` of `ppl_dgm.infer.mcmc.nuts`) when given, else ``num_draws``
    draws from the model's guide (one chain; a guide with per-example parameters, see
    `per_example_guide_sites`, is run on the training rows it was fitted to). A NUTS run's draws of
    local latents (sites inside plate ``"data"``) are left out: they belong to the examples, not to
    the parameters.

    Raises:
        ValueError: the draws miss a global latent of the model, or hold sites it does not have
            (a run of another model), or have the wrong shape.
    """
    per_example = per_example_guide_sites(model)
    sites, local = latent_sites(model, batch, use_guide=not per_example)
    if fit is not None:
        draws = {name: value.to(batch[X].device) for name, value in fit.samples.items() if name not in local}
        source = "the NUTS run"
    else:  # a guide with per-example parameters runs on the training rows it was fitted to
        guide_batch = prototype_batch(model) if per_example else batch
        draws = draws_from_guide(model, guide_batch, num_draws) if sites else {}
        source = f"the guide of {type(model).__name__}"
    foreign = sorted(set(draws) - set(sites))
    if foreign:
        raise ValueError(f"{source} holds site(s) {', '.join(foreign)} that {type(model).__name__} does not have "
                         "as global latents; was it run on another model?")
    missing = sorted(set(sites) - set(draws))
    if missing:
        hint = "run NUTS on this model" if fit is None else "rerun NUTS on this model"
        raise ValueError(f"{source} has no draws of the global latent site(s) {', '.join(missing)} of "
                         f"{type(model).__name__}; {hint}")
    for name, value in draws.items():
        expected = tuple(sites[name]["value"].shape)
        if tuple(value.shape[2:]) != expected:
            raise ValueError(f"draws of site {name!r} have shape {tuple(value.shape[2:])} per draw, but "
                             f"{type(model).__name__} has shape {expected}; was the run of another model?")
    return draws
