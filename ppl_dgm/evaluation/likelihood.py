"""Log-likelihood of any model in the zoo: exact, importance-weighted, or a dequantization bound."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import pyro
import torch

from ppl_dgm.core import DATA, GenerativeModel, X
from ppl_dgm.evaluation.dequantization import dequantize as add_uniform_noise
from ppl_dgm.evaluation.dequantization import needs_dequantization
from ppl_dgm.evaluation.traces import log_importance_weights
from ppl_dgm.validation import prepare_data

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
            that tightens with ``num_samples``); ``"bound"`` (dequantized continuous
            density: ``log P(x) >= E_u log p(x + u)``, possibly also importance-weighted).
        num_samples: importance samples per example (1 for exact models).
        num_dims: dimensions of one example, for bits per dimension.
        elbo: per-example ELBO (mean log-weight over the samples), latent-variable models only.
    """

    per_sample: torch.Tensor
    kind: Literal["exact", "estimate", "bound"]
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


def _importance_weighted(model: GenerativeModel, batch: dict[str, torch.Tensor], num_samples: int
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """``log mean_k w_k`` and ``mean_k log w_k`` per example, in particle chunks."""
    x = batch[X]
    context = {k: v for k, v in batch.items() if k != X}
    chunk = max(1, min(num_samples, ROWS_PER_PASS // x.shape[0]))
    log_sum = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
    sum_log = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for start in range(0, num_samples, chunk):
        weights = log_importance_weights(model, x, min(chunk, num_samples - start), context)
        if weights.global_latents:
            raise ValueError(
                f"log_likelihood needs latents local to plate {DATA!r} (or point estimates); "
                f"global latents: {', '.join(weights.global_latents)}"
            )
        local = weights.local.double()
        log_sum = torch.logaddexp(log_sum, torch.logsumexp(local, 0))
        sum_log += local.sum(0)
    return log_sum - math.log(num_samples), sum_log / num_samples


@torch.no_grad()
def log_likelihood(
    model: GenerativeModel,
    data: torch.Tensor | Mapping[str, torch.Tensor],
    *,
    num_samples: int = 1000,
    batch_size: int | None = None,
    dequantize: bool | None = None,
    seed: int | None = 0,
) -> LogLikelihood:
    """Per-example log-likelihood of ``data`` under ``model``, in nats.

    Exact models (``capabilities.likelihood == "exact"``) use ``model.log_prob``. Latent-
    variable models use importance weighting: ``log (1/K) sum_k p(x, z_k) / q(z_k | x)``
    with ``z_k`` from the guide, the model trace replayed against each guide trace and the
    sum taken in log space. Continuous densities on integer-valued data are scored on
    ``x + u``, ``u ~ U[0, 1)^D`` (the dequantization bound), with ``kind="bound"``.

    Args:
        model: the model to score.
        data: examples ``(N, *event_shape)`` or a mapping with key ``"x"`` and context.
        num_samples: importance samples ``K`` per example (latent-variable models).
        batch_size: examples per pass (default: as many as fit in ~32k particle rows).
        dequantize: add uniform noise first (default: for continuous models on integer data).
        seed: seed of the sampling (``None``: use the global RNG state as is).

    Returns:
        `LogLikelihood` with ``per_sample``, ``mean``, ``stderr``, ``kind``.
    """
    likelihood = model.capabilities.likelihood
    if likelihood == "none":
        raise ValueError(f"{type(model).__name__} defines no normalized likelihood; use sample-quality metrics")
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    batch = prepare_data(data, model, "data", model.device, model.dtype)
    x = batch[X]
    if dequantize is None:
        dequantize = needs_dequantization(model, x)
    exact = likelihood == "exact"
    samples = 1 if exact else num_samples
    batch_size = batch_size or max(1, min(x.shape[0], ROWS_PER_PASS // min(samples, 128)))
    devices = [x.device] if x.device.type == "cuda" else []
    was_training = model.training
    model.eval()
    scores, elbos = [], []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None), pyro.validation_enabled(False):
        if seed is not None:
            torch.manual_seed(seed)
        for start in range(0, x.shape[0], batch_size):
            part = {k: v[start : start + batch_size] for k, v in batch.items()}
            if dequantize:
                part[X] = add_uniform_noise(part[X])
            if exact:
                context = {k: v for k, v in part.items() if k != X}
                scores.append(model.log_prob(part[X], **context).double())
            else:
                score, elbo = _importance_weighted(model, part, samples)
                scores.append(score)
                elbos.append(elbo)
    model.train(was_training)
    return LogLikelihood(
        per_sample=torch.cat(scores).cpu(),
        kind="bound" if dequantize else ("exact" if exact else "estimate"),
        num_samples=samples,
        num_dims=math.prod(x.shape[1:]),
        elbo=torch.cat(elbos).cpu() if elbos else None,
    )
