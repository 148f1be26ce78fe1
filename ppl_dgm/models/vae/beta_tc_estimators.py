"""Minibatch estimates of the aggregate posterior ``q(z) = 1/N sum_n q(z | x_n)`` and its marginals, and the
decomposition of the KL term they give (Chen et al., 2018, "Isolating sources of disentanglement in VAEs").

For ``z_i ~ q(z | x_i)`` and a minibatch of ``M`` of the ``N`` training examples (``i`` among them),
``log q(z_i)`` is estimated by ``log sum_j w_ij q(z_i | x_j)`` over the minibatch, and each
``log q(z_ij)`` (one coordinate) the same way with the one-dimensional marginals:

- ``"mws"`` (minibatch-weighted sampling, the paper's training estimator): ``w_ij = 1 / (N M)``. Its value
  is offset below ``log q(z_i)`` by between ``log M`` (posteriors that do not overlap) and ``log N``
  (posteriors that coincide), so the decomposition it reports is offset too; only its gradients are used.
- ``"stratified"``: ``w_ii = 1/N`` and ``w_ij = (N-1) / (N (M-1))`` for ``j != i``. The mixture inside
  the log is unbiased for ``q(z_i)`` when the other ``M-1`` examples are drawn without replacement from the
  other ``N-1``; with ``M = N`` it is the exact mixture over the data set.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import pyro.distributions as dist
import torch
from torch.distributions import Normal

Estimator = Literal["mws", "stratified"]
ESTIMATORS = ("mws", "stratified")
DECOMPOSITION_CHUNK = 256
"""Examples whose aggregate-posterior estimates `kl_decomposition` computes at once."""


def mixture_log_weights(rows: torch.Tensor, batch_size: int, dataset_size: int, estimator: Estimator
                        ) -> torch.Tensor:
    """``log w_ij`` of the estimators above for the examples ``rows`` (``(m,)`` long, indices into the
    minibatch of ``batch_size`` examples out of ``dataset_size``); shape ``(m, batch_size)``, float64."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    if estimator == "mws":
        return torch.full((rows.numel(), batch_size), -math.log(dataset_size * batch_size), dtype=torch.float64)
    if not 1 <= batch_size <= dataset_size:
        raise ValueError(f"the stratified estimator needs a minibatch of distinct examples of the data set: "
                         f"{batch_size} rows, data set of {dataset_size}; pass the data set's size")
    other = -math.inf if batch_size == 1 else math.log((dataset_size - 1) / (dataset_size * (batch_size - 1)))
    weights = torch.full((rows.numel(), batch_size), other, dtype=torch.float64)
    weights[torch.arange(rows.numel()), rows] = -math.log(dataset_size)
    return weights


def log_aggregate_posterior(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, log_weights: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimates of ``log q(z_i)`` and of ``log q(z_ij)`` per coordinate ``j``.

    Args:
        z: latents ``(m, k)``, row ``i`` drawn from the posterior of the example `log_weights` row ``i`` names.
        loc: means ``(M, k)`` of the diagonal Gaussian posteriors ``q(z | x_j)`` of the minibatch.
        scale: their standard deviations ``(M, k)``.
        log_weights: ``log w_ij``, ``(m, M)`` (`mixture_log_weights`).

    Returns:
        ``(log_qz (m,), log_qz_dims (m, k))`` in nats.
    """
    pairwise = Normal(loc.unsqueeze(0), scale.unsqueeze(0)).log_prob(z.unsqueeze(1))  # (m, M, k)
    log_qz = torch.logsumexp(pairwise.sum(-1) + log_weights, dim=1)
    log_qz_dims = torch.logsumexp(pairwise + log_weights.unsqueeze(-1), dim=1)
    return log_qz, log_qz_dims


@dataclass(frozen=True)
class KLDecomposition:
    """``KL = I + TC + DWKL``, each in nats per example, averaged over the data it was estimated on.

    Attributes:
        mutual_information: index-code mutual information ``E[log q(z | x) - log q(z)]``.
        total_correlation: ``E[log q(z) - sum_j log q(z_j)]``.
        dimensionwise_kl: ``E[sum_j log q(z_j) - log p(z)]``.
        kl: the KL term ``E[log q(z | x) - log p(z)]`` they sum to.
    """

    mutual_information: float
    total_correlation: float
    dimensionwise_kl: float
    kl: float

    def as_dict(self) -> dict[str, float]:
        """The four figures by name (JSON-friendly)."""
        return asdict(self)


def kl_parts(log_qz_x: torch.Tensor, log_qz: torch.Tensor, log_qz_dims: torch.Tensor, log_pz: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example ``(I_i, TC_i, DWKL_i)``, each ``(m,)`` nats, from ``log q(z_i | x_i)``, ``log q(z_i)``,
    ``log q(z_ij)`` ``(m, k)`` and ``log p(z_i)`` (all ``(m,)`` except the marginals); they sum to
    ``log q(z_i | x_i) - log p(z_i)``."""
    log_prod = log_qz_dims.sum(-1)
    return log_qz_x - log_qz, log_qz - log_prod, log_prod - log_pz


@torch.no_grad()
def kl_decomposition(model: Any, x: torch.Tensor, estimator: Estimator = "stratified", dataset_size: int | None = None,
                     **ctx: Any) -> KLDecomposition:
    """``I``, ``TC``, ``DWKL`` and the KL term they sum to, nats per example averaged over ``x``, for a VAE whose
    ``posterior(x, **ctx)`` is a diagonal Gaussian and ``prior(**ctx)`` a density on ``z`` (any
    `ppl_dgm.models.vae.base.AmortizedVAE` with the base guide).

    One ``z_i ~ q(z | x_i)`` per example (from the global RNG; the networks in their current mode, so call
    ``eval()`` on a fitted model first); ``q(z)`` is the mixture over ``x``. With ``"stratified"`` and
    ``dataset_size=None`` (``len(x)``) the mixture is exact over ``x``; ``"mws"`` gives the training
    estimator's (offset) values.

    Args:
        model: the VAE.
        x: examples ``(N, D)``.
        estimator: ``"stratified"`` or ``"mws"``.
        dataset_size: the population ``x`` is a minibatch of (default ``len(x)``).
    """
    model.check_data(x)
    q = model.posterior(x, **ctx)
    if not (isinstance(q, dist.Independent) and isinstance(q.base_dist, dist.Normal)):
        raise ValueError(f"the KL decomposition needs a diagonal Gaussian posterior; {type(model).__name__}'s is "
                         f"{type(q).__name__}")
    loc, scale = q.base_dist.loc, q.base_dist.scale
    z = q.sample()
    size = x.shape[0] if dataset_size is None else dataset_size
    log_qz, log_qz_dims = [], []
    for start in range(0, x.shape[0], DECOMPOSITION_CHUNK):
        rows = torch.arange(start, min(start + DECOMPOSITION_CHUNK, x.shape[0]))
        log_weights = mixture_log_weights(rows, x.shape[0], size, estimator).to(z)
        joint, dims = log_aggregate_posterior(z[rows.to(z.device)], loc, scale, log_weights)
        log_qz.append(joint)
        log_qz_dims.append(dims)
    log_qz_x, log_pz = q.log_prob(z), model.prior(**ctx).log_prob(z)
    parts = kl_parts(log_qz_x, torch.cat(log_qz), torch.cat(log_qz_dims), log_pz)
    mi, tc, dwkl = (float(part.double().mean()) for part in parts)
    return KLDecomposition(mi, tc, dwkl, float((log_qz_x - log_pz).double().mean()))
