"""Pareto k̂ of an amortized guide: how well ``q(z | x)`` covers ``p(z | x)``, one k̂ per example (PSIS)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import arviz as az
import numpy as np
import pyro
import torch

from ppl_dgm.core import DATA, GenerativeModel, X
from ppl_dgm.evaluation.dequantization import dequantize as add_uniform_noise
from ppl_dgm.evaluation.dequantization import needs_dequantization
from ppl_dgm.evaluation.likelihood import ROWS_PER_PASS, log_weight_chunks
from ppl_dgm.validation import prepare_data

THRESHOLDS = (0.5, 0.7, 1.0)
"""Vehtari et al.'s k̂ levels: below 0.5 good, up to 0.7 usable, above 0.7 unreliable, above 1 no finite mean."""
MIN_SAMPLES = 21
"""PSIS fits a generalized Pareto to the largest ``ceil(min(K / 5, 3 sqrt(K)))`` weights and needs 5 of them."""
EQUAL_WEIGHTS = 1e-3
"""Log weights spanning less than this (nats; weights within 0.1%) differ by rounding only: there is no tail."""


@dataclass(frozen=True)
class PSISDiagnostic:
    """Pareto k̂ of the importance weights ``p(x_n, z) / q(z | x_n)`` of each example.

    Attributes:
        khat: shape ``(N,)``: the generalized Pareto shape of the upper tail of example ``n``'s
            ``K`` weights. ``-inf`` where the ``K`` weights agree within 0.1% (the guide is that
            example's exact posterior up to rounding, whose ties would make the tail fit fail).
        log_likelihood: shape ``(N,)``: ``log (1/K) sum_k w_k`` per example, nats (the
            importance-weighted estimate `ppl_dgm.log_likelihood` gives).
        num_samples: ``K``, guide draws per example.
        dequantized: the data were scored as ``x + u``, ``u ~ U[0, 1)`` (a bound, as for `log_likelihood`).
    """

    khat: np.ndarray
    log_likelihood: np.ndarray
    num_samples: int
    dequantized: bool

    def share_above(self, threshold: float = 0.7) -> float:
        """Fraction of examples whose k̂ exceeds ``threshold`` (in ``[0, 1]``)."""
        return float(np.mean(self.khat > threshold))

    def summary(self) -> dict[str, float | int | bool]:
        """JSON-friendly figures: N, K, share of k̂ above 0.5 / 0.7 / 1.0, max k̂, mean log-likelihood (nats)."""
        return {
            "num_examples": int(self.khat.size),
            "num_samples": self.num_samples,
            **{f"share_above_{t}": self.share_above(t) for t in THRESHOLDS},
            "max_khat": float(np.max(self.khat)),
            "log_likelihood_nats": float(np.mean(self.log_likelihood)),
            "dequantized": self.dequantized,
        }


def _check_model(model: GenerativeModel, num_samples: int) -> None:
    likelihood = model.capabilities.likelihood
    name = type(model).__name__
    if likelihood == "none":
        raise ValueError(f"{name} defines no normalized likelihood, so p(x, z) / q(z | x) has no meaning; "
                         "judge it by sample-quality metrics instead")
    if likelihood == "exact":
        raise ValueError(f"{name} has an exact likelihood (no latent variables left to propose); there is no guide "
                         "to diagnose: use ppl_dgm.log_likelihood, or PSIS-LOO via ppl_dgm.diagnostics."
                         "to_inference_data for its global parameters")
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < MIN_SAMPLES:
        raise ValueError(f"num_samples must be an integer >= {MIN_SAMPLES} (PSIS fits the largest K/5 weights), "
                         f"got {num_samples!r}")


def _log_weights(model: GenerativeModel, part: dict[str, torch.Tensor], num_samples: int) -> torch.Tensor:
    """Log weights ``(N, K)`` (float64, nats) of the examples in ``part``, in chunks of particles."""
    pieces = []
    for weights in log_weight_chunks(model, part, num_samples):
        if weights.global_latents:
            raise ValueError(f"psis_diagnostic needs latents local to plate {DATA!r}; the guide has global latents "
                             f"{', '.join(weights.global_latents)} (check those with sbc or NUTS instead)")
        pieces.append(weights.local.double())
    return torch.cat(pieces).T.cpu()


def _all_log_weights(model: GenerativeModel, batch: dict[str, torch.Tensor], num_samples: int, seed: int,
                     batch_size: int, dequantized: bool) -> torch.Tensor:
    """Log weights ``(N, K)`` (float64 on the CPU, nats) of every example, ``batch_size`` examples a pass."""
    x = batch[X]
    parts = []
    with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []), pyro.validation_enabled(False):
        torch.manual_seed(seed)
        for start in range(0, x.shape[0], batch_size):
            part = {k: v[start : start + batch_size] for k, v in batch.items()}
            if dequantized:
                part[X] = add_uniform_noise(part[X])
            parts.append(_log_weights(model, part, num_samples))
    return torch.cat(parts)


def _khat(log_weights: np.ndarray) -> np.ndarray:
    """ArviZ's PSIS k̂ along the last axis of ``(N, K)``; ``-inf`` for rows of (nearly) equal weights."""
    _, khat = az.psislw(log_weights)
    return np.where(np.ptp(log_weights, axis=-1) < EQUAL_WEIGHTS, -np.inf, khat)


@torch.no_grad()
def psis_diagnostic(
    model: GenerativeModel,
    data: torch.Tensor | Mapping[str, torch.Tensor],
    *,
    num_samples: int = 1000,
    seed: int = 0,
    batch_size: int | None = None,
    plot: str | Path | None = None,
) -> PSISDiagnostic:
    """Pareto-smoothed importance sampling diagnostic of an amortized guide (Vehtari et al., 2024).

    For each example ``x_n`` draws ``z_k ~ q(z | x_n)``, ``k = 1..K``, and fits a generalized
    Pareto distribution to the upper tail of the weights ``w_k = p(x_n, z_k) / q(z_k | x_n)``
    (``arviz.psislw``). Its shape k̂ says how far the guide is from the posterior where it
    matters for importance sampling: below 0.5 the importance-weighted log-likelihood converges
    fast, above 0.7 the estimate is unreliable for any practical ``K``, above 1 the weights have
    no finite mean (Yao et al., 2018). Continuous densities on integer data are scored on
    ``x + u`` as `ppl_dgm.log_likelihood` does.

    Args:
        model: a latent-variable model whose guide proposes the latents of each example
            (``capabilities.likelihood == "bound"``), e.g. `ppl_dgm.models.VAE`.
        data: examples ``(N, *event_shape)`` or a mapping with key ``"x"`` and per-example context.
        num_samples: guide draws ``K`` per example (at least 21; ``>= 1000`` for a stable k̂).
        seed: seed of the guide draws (and of the dequantization noise).
        batch_size: examples per pass (default: as many as keep ``K * N`` near 32k rows).
        plot: write a PNG there: k̂ per example against the 0.5 / 0.7 / 1.0 lines, and its histogram.

    Returns:
        `PSISDiagnostic` with ``khat`` of shape ``(N,)`` and the per-example log-likelihood (nats).

    Raises:
        ValueError: the model has an exact likelihood or none, or global latents in its guide.
    """
    _check_model(model, num_samples)
    batch = prepare_data(data, model, "data", model.device, model.dtype)
    dequantized = needs_dequantization(model, batch[X])
    was_training = model.training
    model.eval()
    try:
        log_weights = _all_log_weights(model, batch, num_samples, seed,
                                       batch_size or max(1, ROWS_PER_PASS // num_samples), dequantized)
    finally:
        model.train(was_training)
    result = PSISDiagnostic(
        khat=_khat(log_weights.numpy()),
        log_likelihood=(torch.logsumexp(log_weights, -1) - math.log(num_samples)).numpy(),
        num_samples=num_samples,
        dequantized=dequantized,
    )
    if plot is not None:
        plot_khat(result, plot)
    return result


def plot_khat(result: PSISDiagnostic, path: str | Path) -> Path:
    """Write a PNG of ``result.khat``: per example against the 0.5 / 0.7 / 1.0 lines, and as a histogram."""
    from ppl_dgm.plots import _save, plt

    khat = result.khat
    shown = np.clip(khat, -0.5, 1.5)  # keep infinite k̂ (degenerate weights) on the axes
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5), gridspec_kw={"width_ratios": [2, 1]})
    left.scatter(np.arange(khat.size), shown, s=8, alpha=0.7)
    for threshold, colour in zip(THRESHOLDS, ("tab:orange", "tab:red", "darkred"), strict=True):
        left.axhline(threshold, color=colour, linestyle="--", linewidth=1,
                     label=f"{threshold} ({100 * result.share_above(threshold):.1f}% above)")
        right.axvline(threshold, color=colour, linestyle="--", linewidth=1)
    left.set_xlabel("example")
    left.set_ylabel("Pareto k̂")
    left.set_title(f"PSIS k̂ of the guide, K = {result.num_samples}")
    left.legend(fontsize=8)
    right.hist(shown, bins=30)
    right.set_xlabel("Pareto k̂")
    right.set_ylabel("examples")
    return _save(fig, path)
