"""Log-likelihood of any model in the zoo: exact, importance-weighted, or a dequantization bound."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pyro
import torch

from ppl_dgm.core import GenerativeModel, X
from ppl_dgm.datasets.streaming import as_rows
from ppl_dgm.evaluation.dequantization import dequantize as add_uniform_noise
from ppl_dgm.evaluation.dequantization import needs_dequantization
from ppl_dgm.posterior import draw_at, per_example_guide_sites, posterior_draws
from ppl_dgm.sites import context_of
from ppl_dgm.traces import LogWeights, log_importance_weights

ROWS_PER_PASS = 2**15
"""Rows (particles x examples) pushed through a model at once during evaluation."""


def bits_per_dim(nats: float, num_dims: int) -> float:
    """Convert nats per example into bits per dimension: ``nats / (num_dims * ln 2)``."""
    return nats / (num_dims * math.log(2))


@dataclass(frozen=True)
class LogLikelihood:
    """Per-example log-likelihood of a data set, in nats.

    Attributes:
        per_sample: shape ``(N,)``, float64 on the CPU.
        kind: ``"exact"``; ``"estimate"`` (importance-weighted, a stochastic lower bound
            that tightens with ``num_samples``); ``"predictive"`` (a story with global latents:
            the log posterior predictive density ``log (1/S) sum_s p(x_n | theta_s)``);
            ``"bound"`` (dequantized continuous density: ``log P(x) >= E_u log p(x + u)``,
            possibly also importance-weighted or predictive).
        num_samples: importance samples per example (1 for exact models; posterior draws of the
            global latents times local samples per draw for ``"predictive"``).
        num_dims: dimensions of one example, for bits per dimension.
        elbo: per-example ELBO (mean log-weight over the samples), latent-variable models only.
    """

    per_sample: torch.Tensor
    kind: Literal["exact", "estimate", "predictive", "bound"]
    num_samples: int
    num_dims: int
    elbo: torch.Tensor | None = None

    @property
    def mean(self) -> float:
        """Mean log-likelihood per example (nats)."""
        return float(self.per_sample.mean())

    @property
    def stderr(self) -> float:
        """Standard error of `mean` over examples (nats)."""
        n = self.per_sample.numel()
        return float(self.per_sample.std() / math.sqrt(n)) if n > 1 else math.nan

    @property
    def nll(self) -> float:
        """Negative mean log-likelihood per example (nats)."""
        return -self.mean

    @property
    def bits_per_dim(self) -> float:
        """`nll` in bits per dimension."""
        return bits_per_dim(self.nll, self.num_dims)

    @property
    def elbo_mean(self) -> float | None:
        """Mean ELBO per example (nats), when the model has latent variables."""
        return None if self.elbo is None else float(self.elbo.mean())

    def __repr__(self) -> str:
        """The figures, not the ``N`` per-example values (those are in `per_sample`)."""
        elbo = "" if self.elbo_mean is None else f", -ELBO {-self.elbo_mean:.2f}"
        return (f"LogLikelihood(NLL {self.nll:.2f} ± {self.stderr:.2f} nats per example{elbo}, {self.bits_per_dim:.3f} "
                f"bits/dim, kind={self.kind!r}, num_samples={self.num_samples}, N={self.per_sample.numel()})")

    def summary(self) -> dict[str, float | int | str | None]:
        """JSON-friendly figures: NLL and its standard error (nats), bits/dim, kind, ELBO."""
        return {
            "test_nll_nats": self.nll,
            "test_nll_stderr": self.stderr,
            "bits_per_dim": self.bits_per_dim,
            "kind": self.kind,
            "num_samples": self.num_samples,
            "num_examples": self.per_sample.numel(),
            "neg_elbo_nats": None if self.elbo_mean is None else -self.elbo_mean,
        }


def log_weight_chunks(model: GenerativeModel, batch: Mapping[str, torch.Tensor], num_samples: int,
                      given: Mapping[str, torch.Tensor] | None = None, use_guide: bool = True) -> Iterator[LogWeights]:
    """`log_importance_weights` of ``batch`` with ``num_samples`` particles per example, in chunks of
    particles that keep each pass near `ROWS_PER_PASS` rows (each chunk one draw of any global latent)."""
    x, context = batch[X], context_of(batch)
    chunk = max(1, min(num_samples, ROWS_PER_PASS // x.shape[0]))
    for start in range(0, num_samples, chunk):
        yield log_importance_weights(model, x, min(chunk, num_samples - start), context, given=given,
                                     use_guide=use_guide)


def _average(log_weights: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``log mean_k w_k`` and ``mean_k log w_k`` per example (float64) over chunks of log weights ``(k, N)``."""
    log_sum = sum_log = None
    total = 0
    for chunk in log_weights:
        chunk = chunk.double()
        log_total = torch.logsumexp(chunk, 0)
        log_sum = log_total if log_sum is None else torch.logaddexp(log_sum, log_total)
        sum_log = chunk.sum(0) if sum_log is None else sum_log + chunk.sum(0)
        total += chunk.shape[0]
    return log_sum - math.log(total), sum_log / total


def importance_weighted(model: GenerativeModel, batch: Mapping[str, torch.Tensor], num_samples: int,
                        given: Mapping[str, torch.Tensor] | None = None, use_guide: bool = True
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """``log mean_k w_k`` (the importance-weighted estimate of ``log p(x_n)``, or of ``log p(x_n | theta)``
    with the global sites ``given``) and ``mean_k log w_k`` (the ELBO), per example, float64, nats.
    ``use_guide=False`` draws the local latents from the prior instead of the guide."""
    return _average(w.local for w in log_weight_chunks(model, batch, num_samples, given, use_guide))


@dataclass(frozen=True)
class _Plan:
    """How to estimate: ``draws`` of the global latents to hold fixed (``(S, ...)`` per site) or ``None``;
    whether the guide proposes the local latents; the kind of figure; samples per example."""

    draws: dict[str, torch.Tensor] | None
    use_guide: bool
    kind: Literal["exact", "estimate", "predictive", "bound"]
    num_samples: int


def _flat(draws: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: value.reshape(-1, *value.shape[2:]) for name, value in draws.items()}


def _plan(model: GenerativeModel, batch: dict[str, torch.Tensor], posterior: Any, num_samples: int) -> _Plan:
    """Pick the estimator for a latent-variable story (see `log_likelihood`)."""
    per_example = per_example_guide_sites(model)
    if posterior is not None or per_example:  # fixed draws; a per-example guide only supplies the global ones
        draws = _flat(posterior_draws(model, batch, posterior, num_samples))
        return _Plan(draws, not per_example, "predictive", len(next(iter(draws.values()))) if draws else 1)
    one = {k: v[:1] for k, v in batch.items()}
    probe = log_importance_weights(model, one[X], 1, context_of(one))
    if probe.prior_globals:
        raise ValueError(f"{type(model).__name__} has global latent site(s) {', '.join(sorted(probe.prior_globals))} "
                         "that its guide does not sample; pass posterior= (a NUTS run) to score held-out data by "
                         "the posterior predictive")
    if probe.global_latents:
        return _Plan(None, True, "predictive", num_samples)
    if probe.proposals <= {"enumerated"}:  # nothing is sampled: one pass is the exact value
        return _Plan(None, True, "exact", 1)
    return _Plan(None, True, "estimate", num_samples)


@torch.no_grad()
def log_likelihood(
    model: GenerativeModel,
    data: torch.Tensor | Mapping[str, torch.Tensor] | Any,
    *,
    num_samples: int | None = None,
    batch_size: int | None = None,
    dequantize: bool | None = None,
    seed: int | None = 0,
    posterior: Any = None,
    samples_per_draw: int = 1,
) -> LogLikelihood:
    """Per-example log-likelihood of ``data`` under ``model``, in nats.

    Exact models (``capabilities.likelihood == "exact"``) use ``model.log_prob``; models with a bound
    of their own (`GenerativeModel.evidence_lower_bound`, e.g. a diffusion model's) use it
    (``kind="bound"``). Latent-
    variable models use importance weighting: ``log (1/K) sum_k p(x, z_k) / q(z_k | x)``
    with ``z_k`` from the guide, the model trace replayed against each guide trace and the
    sum taken in log space; local latents the guide lacks are drawn from the prior, and
    discrete ones marked for enumeration are summed out exactly. Stories with global latents
    (a rate, regression weights) that are not point masses get the log posterior predictive
    density ``log (1/S) sum_s p(x_n | theta_s)`` (``kind="predictive"``), ``theta_s`` drawn from
    the guide or taken from ``posterior``, local latents importance-weighted within each draw.
    Continuous densities on integer-valued data are scored on ``x + u``, ``u ~ U[0, 1)^D`` (the
    dequantization bound), with ``kind="bound"``.

    Args:
        model: the model to score.
        data: examples ``(N, *event_shape)`` or a mapping with key ``"x"`` and context; or data streamed
            to the device batch by batch: a map-style ``Dataset``, a ``DataLoader`` (its own batches), a
            numpy array or ``np.memmap`` (`ppl_dgm.datasets.streaming`). The choice of estimator, the
            dequantization default and the draws of a per-example guide's globals use the first rows only.
        num_samples: importance samples ``K`` per example (default: the model's
            ``evaluation_samples``, 1000 for most); for the predictive, the number of guide draws of the
            global latents (ignored with ``posterior``: all its draws are used); for a model's own bound,
            what its `evidence_lower_bound` averages over.
        batch_size: examples per pass (default: as many as fit in ~32k particle rows).
        dequantize: add uniform noise first (default: for continuous models on integer data).
        seed: seed of the sampling (``None``: use the global RNG state as is).
        posterior: a NUTS run (`ppl_dgm.infer.mcmc.MCMCResult`) of this model whose draws of the
            global latents the predictive averages over.
        samples_per_draw: local importance samples per posterior draw (predictive only).

    Returns:
        `LogLikelihood` with ``per_sample``, ``mean``, ``stderr``, ``kind``.
    """
    likelihood = model.capabilities.likelihood
    if likelihood == "none":
        raise ValueError(f"{type(model).__name__} defines no normalized likelihood (capabilities.likelihood='none'), "
                         "so it has no log-likelihood to report; compare its samples with the sample-quality metrics "
                         "instead: ppl_dgm.evaluation.sample_quality (Frechet and kernel distances, precision/recall, "
                         "two-sample test) or 'ppl-dgm evaluate RUN_DIR'")
    num_samples = model.evaluation_samples if num_samples is None else num_samples
    for name, value in (("num_samples", num_samples), ("samples_per_draw", samples_per_draw)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    source = as_rows(data, model, "data", model.device, model.dtype)
    batch = source.head()
    x = batch[X]
    if dequantize is None:
        dequantize = needs_dequantization(model, x, context_of(batch))
    exact = likelihood == "exact" and posterior is None
    own_bound = not exact and posterior is None and \
        type(model).evidence_lower_bound is not GenerativeModel.evidence_lower_bound
    devices = [x.device] if x.device.type == "cuda" else []
    was_training = model.training
    model.eval()
    scores, elbos = [], []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None), pyro.validation_enabled(False):
        if seed is not None:
            torch.manual_seed(seed)
        if exact or own_bound:
            plan = _Plan(None, True, "exact", 1) if exact else _Plan(None, True, "bound", num_samples)
        else:
            plan = _plan(model, batch, posterior, num_samples)
        per_pass = samples_per_draw if plan.kind == "predictive" else plan.num_samples
        batch_size = batch_size or max(1, min(len(source), ROWS_PER_PASS // min(per_pass, 128)))
        for part in source.chunks(batch_size):
            if dequantize:
                part[X] = add_uniform_noise(part[X])
            if exact:
                scores.append(model.log_prob(part[X], **context_of(part)).double())
                continue
            if own_bound:
                scores.append(model.evidence_lower_bound(part[X], plan.num_samples, **context_of(part)).double())
                continue
            if plan.kind == "predictive":
                score, elbo = _predictive(model, part, plan, samples_per_draw)
            else:
                score, elbo = importance_weighted(model, part, plan.num_samples)
            scores.append(score)
            elbos.append(elbo)
    model.train(was_training)
    return LogLikelihood(
        per_sample=torch.cat(scores).cpu(),
        kind="bound" if dequantize else plan.kind,
        num_samples=plan.num_samples * (samples_per_draw if plan.kind == "predictive" else 1),
        num_dims=math.prod(x.shape[1:]),
        elbo=torch.cat(elbos).cpu() if elbos else None,
    )


def _predictive(model: GenerativeModel, batch: dict[str, torch.Tensor], plan: _Plan, samples_per_draw: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``log (1/S) sum_s p_hat(x_n | theta_s)`` and the mean log-weight, per example (float64): the
    ``samples_per_draw`` local importance weights of every draw ``theta_s`` (from the guide, one per
    pass, or the plan's fixed draws) averaged in log space."""
    if plan.draws is None:
        x, context = batch[X], context_of(batch)
        weights = (log_importance_weights(model, x, samples_per_draw, context).local for _ in range(plan.num_samples))
    else:
        weights = (w.local for s in range(plan.num_samples)
                   for w in log_weight_chunks(model, batch, samples_per_draw, draw_at(plan.draws, s), plan.use_guide))
    return _average(weights)
