"""Training objectives: ELBO, importance-weighted / Renyi bounds, and any Pyro ELBO."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import pyro.infer
import torch
from pyro.poutine.messenger import Messenger

from ppl_dgm.sites import DATA, X, context_of
from ppl_dgm.traces import log_importance_weights, plus

Batch = Mapping[str, torch.Tensor]


@runtime_checkable
class Objective(Protocol):
    """A loss to minimise: ``loss(model, batch, dataset_size)`` estimates the negative bound
    on the log-likelihood of the whole data set (nats), from a minibatch ``batch``
    (``batch["x"]`` has shape ``(B, ...)``; other keys are passed to model and guide)."""

    def loss(self, model: Any, batch: Batch, dataset_size: int) -> torch.Tensor: ...


def _require_reparameterized(names: tuple[str, ...]) -> None:
    if names:
        raise ValueError(
            f"guide sites {', '.join(names)} have no reparameterized sampler; pass "
            "objective=pyro.infer.Trace_ELBO() (score-function gradients) or "
            "pyro.infer.TraceEnum_ELBO() (enumerated discrete latents) instead"
        )


def score_correction(score: torch.Tensor | float) -> torch.Tensor | float:
    """``score - score.detach()``: zero in value, ``grad score`` in gradient. Multiplied by a detached bound it
    adds the score-function part of a partly reparameterized (rejection) sampler's gradient (`LogWeights.score`)."""
    return score - score.detach() if isinstance(score, torch.Tensor) else 0.0


class ELBO:
    """Evidence lower bound from reparameterized guide samples (Trace_ELBO's estimator).

    Args:
        num_particles: guide samples per example averaged in each estimate.
    """

    def __init__(self, num_particles: int = 1) -> None:
        if not isinstance(num_particles, int) or num_particles < 1:
            raise ValueError(f"num_particles must be a positive integer, got {num_particles!r}")
        self.num_particles = num_particles

    def loss(self, model: Any, batch: Batch, dataset_size: int) -> torch.Tensor:
        x = batch[X]
        weights = log_importance_weights(model, x, self.num_particles, context_of(batch), scaled=True)
        _require_reparameterized(weights.not_reparameterized)
        local = weights.local
        if isinstance(weights.score, torch.Tensor):
            local = local + local.detach() * score_correction(weights.score)
        return -plus(dataset_size / x.shape[0] * local.mean(0).sum(), weights.global_)


class RenyiELBO:
    """Renyi variational bound (Li & Turner, 2016); ``alpha=0`` is the IWAE bound (Burda et al., 2016).

    Per example: ``1/(1-alpha) * log mean_k exp((1-alpha) * log w_k)`` over ``num_particles``
    guide samples; every latent must be local to plate ``"data"``.
    """

    def __init__(self, alpha: float = 0.0, num_particles: int = 5) -> None:
        if not isinstance(num_particles, int) or num_particles < 2:
            raise ValueError(f"num_particles must be an integer >= 2, got {num_particles!r}")
        if not math.isfinite(alpha) or alpha < 0 or alpha == 1:
            raise ValueError(f"alpha must be >= 0 and != 1 (alpha=1 is the ELBO), got {alpha!r}")
        self.alpha, self.num_particles = float(alpha), num_particles

    def loss(self, model: Any, batch: Batch, dataset_size: int) -> torch.Tensor:
        x = batch[X]
        weights = log_importance_weights(model, x, self.num_particles, context_of(batch), scaled=True)
        _require_reparameterized(weights.not_reparameterized)
        if weights.global_latents:
            raise ValueError(
                f"the Renyi/IWAE bound needs latents local to plate {DATA!r}; "
                f"global latents: {', '.join(weights.global_latents)}"
            )
        one_minus_alpha = 1.0 - self.alpha
        scaled = one_minus_alpha * weights.local
        bound = (torch.logsumexp(scaled, 0) - math.log(self.num_particles)) / one_minus_alpha
        correction = score_correction(weights.score)
        if isinstance(correction, torch.Tensor):  # the bound depends on every particle's draw
            bound = bound + bound.detach() * correction.sum(0)
        return -plus(dataset_size / x.shape[0] * bound.sum(), weights.global_)


class _ScaleDataPlate(Messenger):
    """Multiply the log-density of every site inside plate ``"data"`` by ``factor``."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def _process_message(self, msg: dict) -> None:
        if any(frame.name == DATA for frame in msg["cond_indep_stack"]):
            msg["scale"] = msg["scale"] * self.factor


class PyroObjective:
    """A Pyro ELBO with a ``differentiable_loss`` (``Trace_ELBO``, ``TraceEnum_ELBO``,
    ``TraceMeanField_ELBO``, ...), with minibatch scaling applied to the sites inside plate
    ``"data"``. Without gradients (validation) it returns Pyro's ``loss``."""

    def __init__(self, elbo: pyro.infer.ELBO) -> None:
        if not callable(getattr(elbo, "differentiable_loss", None)):
            raise TypeError(
                f"{type(elbo).__name__} computes its own gradients (it has no differentiable_loss); "
                "use Trace_ELBO, TraceEnum_ELBO or TraceMeanField_ELBO, or 'iwae'/'renyi'"
            )
        self.elbo = elbo

    def loss(self, model: Any, batch: Batch, dataset_size: int) -> torch.Tensor:
        scale = _ScaleDataPlate(dataset_size / batch[X].shape[0])
        args = (scale(model.model), scale(model.guide), batch[X])
        with warnings.catch_warnings():  # states summed out inside a distribution (DiscreteHMM) are fine
            warnings.filterwarnings("ignore", message=".*found no sample sites configured for enumeration")
            if not torch.is_grad_enabled():
                return torch.as_tensor(self.elbo.loss(*args, **context_of(batch)))
            return self.elbo.differentiable_loss(*args, **context_of(batch))


OBJECTIVES = ("elbo", "iwae", "renyi")
"""The objectives `make_objective` knows by name."""


def make_objective(objective: str | Objective | pyro.infer.ELBO, num_particles: int | None = None,
                   alpha: float = 0.5, model: Any = None, enumerate_discrete: bool = False) -> Objective:
    """Resolve ``"elbo"``, ``"iwae"``, ``"renyi"``, a Pyro ELBO or an `Objective`.

    ``num_particles`` defaults to 1 for the ELBO and 5 for the importance-weighted bounds;
    ``alpha`` is used by ``"renyi"`` only. For a ``model`` with discrete latent variables
    (``capabilities.discrete_latents``, or ``enumerate_discrete`` when a run of the story showed
    sites marked for enumeration), ``"elbo"`` sums them out with ``TraceEnum_ELBO`` (with the
    model's ``max_plate_nesting`` attribute, else Pyro's guess); the importance-weighted bounds need
    continuous latents.
    """
    if isinstance(objective, pyro.infer.ELBO):
        return PyroObjective(objective)
    if isinstance(objective, Objective):
        return objective
    discrete = enumerate_discrete or (model is not None and model.capabilities.discrete_latents)
    if discrete and objective in ("iwae", "renyi"):
        raise ValueError(f"objective {objective!r} needs continuous latents; {type(model).__name__} has discrete "
                         "ones (use 'elbo', which sums them out)")
    if objective == "elbo" and discrete:
        nesting = getattr(model, "max_plate_nesting", None)
        elbo = pyro.infer.TraceEnum_ELBO(num_particles=num_particles or 1,
                                         **({"max_plate_nesting": nesting} if nesting is not None else {}))
        return PyroObjective(elbo)
    if objective == "elbo":
        return ELBO(num_particles or 1)
    if objective == "iwae":
        return RenyiELBO(0.0, num_particles or 5)
    if objective == "renyi":
        return RenyiELBO(alpha, num_particles or 5)
    raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, a pyro.infer.ELBO or an Objective; "
                     f"got {objective!r}")
