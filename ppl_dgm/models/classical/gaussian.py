"""Gaussian components with sklearn's four covariance types: estimates, precisions, log-densities,
and the (scales, correlation-Cholesky) parameterization the Pyro stories sample."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pyro
import pyro.distributions as dist
import torch

CovarianceType = Literal["full", "tied", "diag", "spherical"]
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
ROWS_PER_CHUNK = 4096  # rows per chunk: (4096 x K*D) doubles stay in cache
ILL_DEFINED = (
    "Fitting the mixture model failed because some components have ill-defined empirical covariance "
    "(for instance caused by singleton or collapsed samples). Try to decrease the number of components, "
    "increase reg_covar, or scale the input data."
)


def check_covariance_type(covariance_type: str) -> None:
    """``ValueError`` unless ``covariance_type`` is one of full, tied, diag, spherical."""
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(f"covariance_type must be one of {', '.join(COVARIANCE_TYPES)}, got {covariance_type!r}")


def _check_shape(value: np.ndarray, shape: tuple[int, ...], name: str) -> None:
    if value.shape != shape:
        raise ValueError(f"The parameter '{name}' should have the shape of {shape}, but got {value.shape}; "
                         "pass one value per component (and feature) as documented")


def check_initial_weights(weights: Any, n_components: int) -> None:
    """``ValueError`` (sklearn's messages) unless ``weights`` are ``n_components`` probabilities summing to 1."""
    given = np.asarray(weights)
    weights = given.astype(float)
    _check_shape(weights, (n_components,), "weights")
    if (weights < 0).any() or (weights > 1).any():
        # the text (max/min swapped) is sklearn's, which its tests match
        raise ValueError(f"The parameter 'weights' should be in the range [0, 1], but got max value "
                         f"{weights.min():.5f}, min value {weights.max():.5f}; pass probabilities")
    atol = 1e-6 if given.dtype == np.float32 else 1e-8
    if not np.isclose(abs(1.0 - weights.sum()), 0.0, atol=atol):
        raise ValueError(f"The parameter 'weights' should be normalized, but got sum(weights) = {weights.sum():.5f}; "
                         "divide them by their sum")


def check_initial_means(means: Any, n_components: int, n_features: int) -> None:
    """``ValueError`` unless ``means`` has shape ``(n_components, n_features)``."""
    _check_shape(np.asarray(means, dtype=float), (n_components, n_features), "means")


def check_initial_precisions(precisions: Any, covariance_type: str, n_components: int, n_features: int) -> None:
    """``ValueError`` (sklearn's messages) unless ``precisions`` are valid precisions of this covariance type:
    positive numbers (diag, spherical) or symmetric positive-definite matrices (full, tied)."""
    precisions = np.asarray(precisions, dtype=float)
    name = f"{covariance_type} precision"
    _check_shape(precisions, covariance_shape(covariance_type, n_components, n_features), name)
    if covariance_type in ("diag", "spherical"):
        if (precisions <= 0).any():
            raise ValueError(f"'{name}' should be positive; pass inverse variances > 0")
        return
    matrices = precisions.reshape(-1, n_features, n_features)
    symmetric = np.isclose(matrices, matrices.transpose(0, 2, 1)).all()
    if not symmetric or not (np.linalg.eigvalsh(matrices) > 0).all():
        raise ValueError(f"'{name}' should be symmetric, positive-definite; pass inverse covariance matrices")


def covariance_shape(covariance_type: str, n_components: int, n_features: int) -> tuple[int, ...]:
    """Shape of ``covariances_`` as sklearn stores it for this type."""
    return {"full": (n_components, n_features, n_features), "tied": (n_features, n_features),
            "diag": (n_components, n_features), "spherical": (n_components,)}[covariance_type]


def n_covariance_parameters(covariance_type: str, n_components: int, n_features: int) -> int:
    """Free parameters of the covariances (for BIC/AIC)."""
    per_matrix = n_features * (n_features + 1) // 2
    return {"full": n_components * per_matrix, "tied": per_matrix, "diag": n_components * n_features,
            "spherical": n_components}[covariance_type]


def estimate_covariances(resp: torch.Tensor, X: torch.Tensor, nk: torch.Tensor, means: torch.Tensor,
                         reg_covar: float, covariance_type: str) -> torch.Tensor:
    """M-step covariances (sklearn's formulas), from responsibilities ``resp`` ``(N, K)``, data
    ``X`` ``(N, D)``, soft counts ``nk`` ``(K,)`` and means ``(K, D)``."""
    n_features = X.shape[1]
    eye = torch.eye(n_features, dtype=X.dtype, device=X.device)
    if covariance_type == "full":
        cov = torch.zeros(means.shape[0], n_features, n_features, dtype=X.dtype, device=X.device)
        for start in range(0, X.shape[0], ROWS_PER_CHUNK):  # sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T
            diff = X[start : start + ROWS_PER_CHUNK].unsqueeze(0) - means.unsqueeze(1)  # (K, n, D)
            weighted = diff * resp[start : start + ROWS_PER_CHUNK].T.unsqueeze(-1)
            cov.baddbmm_(weighted.transpose(1, 2), diff)
        return cov / nk[:, None, None] + reg_covar * eye
    if covariance_type == "tied":
        cov = X.T @ X - (nk * means.T) @ means
        return cov / nk.sum() + reg_covar * eye
    diag = (resp.T @ (X * X)) / nk[:, None] - means**2 + reg_covar
    return diag if covariance_type == "diag" else diag.mean(1)


def precision_cholesky(covariances: torch.Tensor, covariance_type: str) -> torch.Tensor:
    """sklearn's ``precisions_cholesky_``: ``inv(chol(cov)).T`` (full/tied), ``1/sqrt(var)`` otherwise.

    Raises ``ValueError`` when a covariance is not positive definite.
    """
    if covariance_type in ("full", "tied"):
        chol, info = torch.linalg.cholesky_ex(covariances)
        if bool((info != 0).any()):
            raise ValueError(ILL_DEFINED)
        return precision_cholesky_from_cholesky(chol)
    if bool((covariances <= 0).any()):
        raise ValueError(ILL_DEFINED)
    return covariances.rsqrt()


def precision_cholesky_from_cholesky(chol: torch.Tensor) -> torch.Tensor:
    """``inv(L).T`` for lower Cholesky factors ``L`` of covariances ``(..., D, D)``."""
    eye = torch.eye(chol.shape[-1], dtype=chol.dtype, device=chol.device)
    return torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False).transpose(-1, -2)


def precision_cholesky_from_precisions(precisions: torch.Tensor, covariance_type: str) -> torch.Tensor:
    """The upper-triangular ``U`` with ``precision = U U^T`` (sklearn's convention), from precisions."""
    if covariance_type in ("full", "tied"):
        flipped = precisions.flip(-1, -2)
        chol, info = torch.linalg.cholesky_ex(flipped)
        if bool((info != 0).any()):
            raise ValueError("precisions_init must be symmetric, positive-definite matrices")
        return chol.flip(-1, -2)
    return precisions.sqrt()


def covariances_from_precision_cholesky(prec_chol: torch.Tensor, covariance_type: str) -> torch.Tensor:
    """Invert :func:`precision_cholesky`."""
    if covariance_type in ("full", "tied"):
        return torch.linalg.inv(prec_chol @ prec_chol.transpose(-1, -2))
    return prec_chol.pow(-2)


def precisions_from_cholesky(prec_chol: torch.Tensor, covariance_type: str) -> torch.Tensor:
    """``precisions_`` from ``precisions_cholesky_``."""
    if covariance_type in ("full", "tied"):
        return prec_chol @ prec_chol.transpose(-1, -2)
    return prec_chol**2


def log_gaussian_prob(X: torch.Tensor, means: torch.Tensor, prec_chol: torch.Tensor,
                      covariance_type: str) -> torch.Tensor:
    """``log N(x_n | mu_k, Sigma_k)`` for every row and component, shape ``(N, K)`` (nats).

    Full and tied covariances are whitened with one matrix product per chunk of rows, the
    same arithmetic as sklearn's ``(X @ P_k) - (mu_k @ P_k)``.
    """
    n_samples, n_features = X.shape
    n_components = means.shape[0]
    if covariance_type in ("full", "tied"):
        chol = prec_chol if covariance_type == "full" else prec_chol.expand(n_components, -1, -1)
        log_det = chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        stacked = chol.permute(1, 0, 2).reshape(n_features, n_components * n_features)  # [P_1 | ... | P_K]
        shift = torch.einsum("kd,kde->ke", means, chol)  # mu_k @ P_k
        maha = torch.empty(n_samples, n_components, dtype=X.dtype, device=X.device)
        for start in range(0, n_samples, ROWS_PER_CHUNK):
            y = (X[start : start + ROWS_PER_CHUNK] @ stacked).view(-1, n_components, n_features) - shift
            maha[start : start + ROWS_PER_CHUNK] = y.square().sum(-1)
    else:
        precisions = prec_chol**2
        if covariance_type == "diag":
            log_det = prec_chol.log().sum(-1)
            maha = (means**2 * precisions).sum(1) - 2.0 * (X @ (means * precisions).T) + (X**2) @ precisions.T
        else:
            log_det = n_features * prec_chol.log()
            maha = ((means**2).sum(1) * precisions - 2 * (X @ means.T * precisions)
                    + (X**2).sum(1, keepdim=True) * precisions)
    return -0.5 * (n_features * math.log(2 * math.pi) + maha) + log_det


def full_covariances(covariances: torch.Tensor, covariance_type: str, n_components: int) -> torch.Tensor:
    """Every type's covariances as ``(K, D, D)`` matrices."""
    if covariance_type == "full":
        return covariances
    if covariance_type == "tied":
        return covariances.expand(n_components, -1, -1)
    if covariance_type == "diag":
        return torch.diag_embed(covariances)
    raise ValueError("spherical covariances need n_features; use scale_tril_from_sites")


# The stories sample covariances as per-dimension scales and, for full and tied, the Cholesky
# factor of a correlation matrix: Sigma = diag(s) C C^T diag(s), scale_tril = diag(s) C.

def covariance_site_shapes(covariance_type: str, n_components: int, n_features: int) -> dict[str, tuple[int, ...]]:
    """Sample sites (name -> shape) that parameterize the covariances in the Pyro stories."""
    shapes: dict[str, tuple[int, ...]] = {
        "full": {"scales": (n_components, n_features), "corr_chol": (n_components, n_features, n_features)},
        "tied": {"scales": (n_features,), "corr_chol": (n_features, n_features)},
        "diag": {"scales": (n_components, n_features)},
        "spherical": {"scales": (n_components,)},
    }[covariance_type]
    return shapes


def sites_from_covariances(covariances: torch.Tensor, covariance_type: str) -> dict[str, torch.Tensor]:
    """Scales (and correlation Cholesky factors) of sklearn-shaped ``covariances``."""
    if covariance_type in ("full", "tied"):
        chol = torch.linalg.cholesky(covariances)
        scales = covariances.diagonal(dim1=-2, dim2=-1).sqrt()
        return {"scales": scales, "corr_chol": chol / scales.unsqueeze(-1)}
    return {"scales": covariances.sqrt()}


def covariances_from_sites(sites: dict[str, torch.Tensor], covariance_type: str) -> torch.Tensor:
    """sklearn-shaped covariances from sampled sites (leading batch dims allowed)."""
    scales = sites["scales"]
    if covariance_type in ("full", "tied"):
        tril = scales.unsqueeze(-1) * sites["corr_chol"]
        return tril @ tril.transpose(-1, -2)
    return scales**2


def scale_tril_from_sites(sites: dict[str, torch.Tensor], covariance_type: str, n_features: int) -> torch.Tensor:
    """``scale_tril`` of each component's covariance, shape ``(..., K, D, D)`` (``(..., D, D)`` if tied)."""
    scales = sites["scales"]
    if covariance_type in ("full", "tied"):
        return scales.unsqueeze(-1) * sites["corr_chol"]
    if covariance_type == "diag":
        return torch.diag_embed(scales)
    eye = torch.eye(n_features, dtype=scales.dtype, device=scales.device)
    return scales[..., None, None] * eye


def sample_component_sites(covariance_type: str, n_components: int, prior_mean: torch.Tensor,
                           prior_spread: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sample the Gaussian components' sites with the priors shared by the GMM and HMM stories.

    ``means ~ N(prior_mean, (3 prior_spread)^2)``, per-dimension ``scales ~ LogNormal(log
    prior_spread, 1.5^2)`` (one per component when spherical) and, for full/tied covariances,
    ``corr_chol ~ LKJCholesky(D, 1)``. ``prior_mean``, ``prior_spread``: shape ``(D,)``.
    """
    d = prior_mean.shape[0]
    sites = {"means": pyro.sample("means", dist.Normal(prior_mean, 3 * prior_spread)
                                  .expand([n_components, d]).to_event(2))}
    shapes = covariance_site_shapes(covariance_type, n_components, d)
    log_spread = prior_spread.log()
    scale_loc = log_spread.mean() if covariance_type == "spherical" else log_spread
    sites["scales"] = pyro.sample(
        "scales", dist.LogNormal(scale_loc, 1.5).expand(shapes["scales"]).to_event(len(shapes["scales"])))
    if "corr_chol" in shapes:
        lkj = dist.LKJCholesky(d, torch.ones((), dtype=prior_mean.dtype, device=prior_mean.device))
        batch = shapes["corr_chol"][:-2]
        sites["corr_chol"] = pyro.sample("corr_chol", lkj.expand(batch).to_event(len(batch)))
    return sites
