"""Importance log-weights from a model trace replayed against a guide trace."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from pyro import poutine
from pyro.distributions import Delta, Distribution
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.distributions.util import is_identically_zero
from pyro.ops import packed
from pyro.ops.contract import contract_to_tensor
from pyro.ops.rings import LogRing
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample

from ppl_dgm.sites import DATA


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
        proposals: how the local latents were handled: ``"guide"`` (drawn from the guide),
            ``"prior"`` (model sites the guide lacks, drawn from the prior), ``"enumerated"``
            (discrete sites marked for enumeration, summed out exactly); empty without local latents.
        prior_globals: the model's latent sites outside the plate that the guide does not sample.
        score: shape ``(K, N)`` or ``0.0``: per particle and example, the sum of the score functions
            ``score_parts(z).score_function`` of the guide's local sites whose reparameterized sampler
            needs a correction (a rejection sampler's ``log pi(eps | theta)``, Naesseth et al., 2017);
            objectives add ``weight * grad score`` to the gradient. ``0.0`` for plain reparameterized guides.
    """

    local: torch.Tensor
    global_: torch.Tensor | float
    global_latents: tuple[str, ...]
    not_reparameterized: tuple[str, ...]
    proposals: frozenset[str] = frozenset()
    prior_globals: tuple[str, ...] = ()
    score: torch.Tensor | float = 0.0


def in_data_plate(site: dict) -> bool:
    """Whether a trace site lies inside plate ``"data"`` (is local to one example)."""
    return any(frame.name == DATA for frame in site["cond_indep_stack"])


def is_latent(site: dict) -> bool:
    """A sample site that is neither observed, a plate's subsample, nor a ``pyro.deterministic``."""
    return (site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
            and not site["infer"].get("_deterministic"))


def is_enumerated(site: dict) -> bool:
    """A latent site marked for enumeration (``infer={"enumerate": "parallel"}``)."""
    return is_latent(site) and site["infer"].get("enumerate") == "parallel"


def enumerated_sites(guide_trace: Trace, model_trace: Trace) -> list[str]:
    """The model's sites marked for enumeration that the guide does not sample (summed out exactly)."""
    return [name for name, site in model_trace.nodes.items() if is_enumerated(site) and name not in guide_trace.nodes]


def site_log_probs(trace: Trace, batch_size: int, scaled: bool = False, skip: frozenset[str] = frozenset()
                   ) -> tuple[torch.Tensor | float, torch.Tensor | float]:
    """Sum the log-densities of a trace's sample sites, split by the data plate.

    Returns ``(local, global_)``: ``local`` of shape ``(batch_size,)`` sums every site inside
    plate ``"data"`` per example, ``global_`` (a scalar) sums the sites outside it. Masks are
    applied, and with ``scaled`` the sites' ``poutine.scale`` factors too (a training
    objective's choice, e.g. a beta-VAE; a likelihood is unscaled); ``pyro.deterministic``
    sites and the sites named in ``skip`` contribute nothing. Units: nats.
    """
    local: torch.Tensor | float = 0.0
    global_: torch.Tensor | float = 0.0
    for name, site in trace.nodes.items():
        if (site["type"] != "sample" or site["infer"].get("_deterministic") or site_is_subsample(site)
                or name in skip):
            continue
        log_p = site["fn"].log_prob(site["value"])
        if site["mask"] is not None:
            log_p = log_p * site["mask"]
        if scaled and not _is_number(site["scale"], 1.0):
            log_p = log_p * site["scale"]
        frame = next((f for f in site["cond_indep_stack"] if f.name == DATA), None)
        if frame is None:
            global_ = plus(global_, log_p.sum())
        else:
            local = plus(local, per_example(log_p, frame.dim, batch_size))
    return local, global_


def _is_number(value: Any, number: float) -> bool:
    """Whether ``value`` is the Python number ``number`` (not a tensor)."""
    return isinstance(value, int | float) and value == number


def plus(total: torch.Tensor | float, term: torch.Tensor | float) -> torch.Tensor | float:
    """``total + term``, with no tensor operation when either is the number 0 (so that a compiled loss holds no
    additions of zero)."""
    if _is_number(total, 0.0):
        return term
    return total if _is_number(term, 0.0) else total + term


def per_example(value: torch.Tensor, dim: int, batch_size: int) -> torch.Tensor:
    """``value`` summed over every dimension but the data plate's (``dim``, negative): shape ``(batch_size,)``."""
    if value.shape == (batch_size,):
        return value
    return value.movedim(dim, 0).reshape(batch_size, -1).sum(-1)


def rejection_scores(trace: Trace, batch_size: int) -> torch.Tensor | float:
    """Per example ``(batch_size,)``, the summed score functions of a guide trace's reparameterized local sites
    whose ``score_parts`` reports one (``0.0`` when none does: every ordinary ``rsample``)."""
    total: torch.Tensor | float = 0.0
    for site in trace.nodes.values():
        if not (is_latent(site) and in_data_plate(site) and site["fn"].has_rsample) or _default_score(site["fn"]):
            continue
        score = site["fn"].score_parts(site["value"]).score_function
        if is_identically_zero(score):
            continue
        if site["mask"] is not None:
            score = score * site["mask"]
        frame = next(f for f in site["cond_indep_stack"] if f.name == DATA)
        total = plus(total, per_example(score, frame.dim, batch_size))
    return total


def _default_score(fn: Any) -> bool:
    """Whether ``fn.score_parts`` is Pyro's default, whose score function is zero for a reparameterized sampler
    (so that computing it, a second ``log_prob``, can be skipped). Masked and expanded wrappers pass it through."""
    while isinstance(fn, MaskedDistribution | ExpandedDistribution):
        fn = fn.base_dist
    return type(fn).score_parts is Distribution.score_parts


def plate_nesting(trace: Trace) -> int:
    """How many batch dimensions the trace's vectorized plates use (``max_plate_nesting``)."""
    dims = [-frame.dim for site in trace.nodes.values() if site["type"] == "sample"
            for frame in site["cond_indep_stack"] if frame.vectorized]
    return max(dims, default=0)


def enumerated_log_probs(trace: Trace, batch_size: int, skip: frozenset[str]
                         ) -> tuple[torch.Tensor, torch.Tensor | float]:
    """Like `site_log_probs` for a trace run under ``poutine.enum``: the enumerated sites are summed
    out exactly per example, by tensor message passing over the plates (Pyro's ``contract_to_tensor``).

    Returns ``(local (batch_size,), global_)``; enumerated sites must lie inside plate ``"data"``.
    """
    trace.compute_log_prob()
    trace.pack_tensors()
    plate_symbols = set(trace.plate_to_symbol.values())
    terms: OrderedDict[frozenset, list[torch.Tensor]] = OrderedDict()
    sum_dims: set[str] = set()
    global_: torch.Tensor | float = 0.0
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site["infer"].get("_deterministic") or site_is_subsample(site) or name in skip:
            continue
        if not in_data_plate(site):
            if is_enumerated(site):
                raise ValueError(f"site {name!r} is enumerated outside plate {DATA!r}: the log-likelihood does not "
                                 "split into one term per example; move it inside the plate or give it a guide")
            global_ = global_ + site["log_prob"].sum()
            continue
        log_p = packed.scale_and_mask(site["packed"]["unscaled_log_prob"], mask=site["packed"]["mask"])
        if is_enumerated(site):
            sum_dims.update(set(log_p._pyro_dims) - plate_symbols)
        ordinal = frozenset(trace.plate_to_symbol[f.name] for f in site["cond_indep_stack"] if f.vectorized)
        terms.setdefault(ordinal, []).append(log_p)
    target = frozenset({trace.plate_to_symbol[DATA]})
    dim_to_size = {dim: size for ts in terms.values() for t in ts
                   for dim, size in zip(t._pyro_dims, t.shape, strict=True)}
    dim_to_size[trace.plate_to_symbol[DATA]] = batch_size
    local = contract_to_tensor(terms, sum_dims, target_ordinal=target, ring=LogRing(dim_to_size=dim_to_size))
    return local.reshape(-1).expand(batch_size), global_


def log_importance_weights(
    model: Any,
    x: torch.Tensor,
    num_particles: int = 1,
    context: Mapping[str, Any] | None = None,
    scaled: bool = False,
    given: Mapping[str, torch.Tensor] | None = None,
    use_guide: bool = True,
) -> LogWeights:
    """Log importance weights ``log p(x, z) - log q(z | x)`` of a model/guide pair (nats).

    Draws ``num_particles`` guide traces per example by tiling the batch (the model's plate
    ``"data"`` sees ``K * N`` rows, with one draw of any global latent) and replays the model
    against them. Local latents the guide lacks are drawn from the prior, so their prior density
    cancels and is left out; discrete ones marked for enumeration are summed out exactly.

    Args:
        model: a `GenerativeModel`.
        x: data, shape ``(N, *event_shape)``.
        num_particles: samples ``K`` per example.
        context: extra per-example keyword arguments of model and guide (tiled too).
        scaled: apply the sites' ``poutine.scale`` factors (training objectives do).
        given: values of global latent sites to hold fixed in model and guide (a posterior draw).
        use_guide: ``False`` draws every latent that ``given`` does not fix from the prior (for
            guides that cannot propose for these rows, e.g. one with per-training-example parameters).

    Returns:
        `LogWeights` with ``local`` of shape ``(K, N)``.

    Raises:
        ValueError: the guide samples a site the model does not have.
    """
    n = x.shape[0]
    xs = repeat_batch(x, num_particles, n)
    ctx = {k: repeat_batch(v, num_particles, n) for k, v in (context or {}).items()}
    guide, story = (model.guide if use_guide else _no_guide), model.model
    if given:
        guide, story = poutine.condition(guide, data=dict(given)), poutine.condition(story, data=dict(given))
    guide_trace = poutine.trace(guide).get_trace(xs, **ctx)
    replayed = poutine.replay(story, trace=guide_trace)
    model_trace = poutine.trace(replayed).get_trace(xs, **ctx)
    _check_guide_sites(model, guide_trace, model_trace)
    from_prior = frozenset(name for name, site in model_trace.nodes.items()
                           if is_latent(site) and name not in guide_trace.nodes and not is_enumerated(site))
    enumerated = enumerated_sites(guide_trace, model_trace)
    rows = num_particles * n
    if enumerated:
        nesting = getattr(model, "max_plate_nesting", None) or plate_nesting(model_trace)
        enum_trace = poutine.trace(poutine.enum(replayed, first_available_dim=-nesting - 1)).get_trace(xs, **ctx)
        model_local, model_global = enumerated_log_probs(enum_trace, rows, from_prior)
    else:
        model_local, model_global = site_log_probs(model_trace, rows, scaled, from_prior)
    guide_local, guide_global = site_log_probs(guide_trace, rows, scaled)
    local = torch.as_tensor(model_local - guide_local, device=x.device)
    score = rejection_scores(guide_trace, rows)
    local_latents = [name for name, site in model_trace.nodes.items() if is_latent(site) and in_data_plate(site)]
    proposals = frozenset("enumerated" if name in enumerated else "prior" if name in from_prior else "guide"
                          for name in local_latents)
    return LogWeights(
        (local if local.shape == (rows,) else local.expand(rows)).reshape(num_particles, n),
        model_global - guide_global,
        _global_latents(guide_trace),
        tuple(
            name
            for name, site in guide_trace.nodes.items()
            if is_latent(site) and not site["fn"].has_rsample
        ),
        proposals,
        tuple(name for name in from_prior if not in_data_plate(model_trace.nodes[name])),
        score if isinstance(score, float) else score.reshape(num_particles, n),
    )


def _no_guide(*args: Any, **kwargs: Any) -> None:
    """A guide that samples nothing: the model draws its latents from the prior."""


def _global_latents(guide_trace: Trace) -> tuple[str, ...]:
    """Guide sample sites outside plate ``"data"`` that are not point masses."""
    return tuple(
        name
        for name, site in guide_trace.nodes.items()
        if is_latent(site) and not in_data_plate(site) and not isinstance(site["fn"], Delta)
    )


def _check_guide_sites(model: Any, guide_trace: Trace, model_trace: Trace) -> None:
    """``ValueError`` when the guide samples sites the model lacks (a typo, or another model's guide)."""
    extra = [name for name, site in guide_trace.nodes.items()
             if is_latent(site) and not site["infer"].get("is_auxiliary") and name not in model_trace.nodes]
    if extra:
        raise ValueError(f"the guide of {type(model).__name__} samples site(s) {', '.join(map(repr, extra))} that "
                         "the model does not have; a guide may only sample the model's latent sites")
