"""hmmlearn's numerics, reproduced in torch: rows normalized to sum to one, the covariance M-step with
its priors, jittered Cholesky factors, checks of user-set covariances."""

from __future__ import annotations

import numpy as np
import torch

from ppl_dgm.models.classical import gaussian


def normalize_rows(value: torch.Tensor) -> torch.Tensor:
    """hmmlearn's ``normalize(a, axis=1)``: rows summing to zero stay zero."""
    total = value.sum(-1, keepdim=True)
    return value / torch.where(total == 0, torch.ones_like(total), total)


def floored_rows(probabilities: torch.Tensor) -> torch.Tensor:
    """Rows of probabilities floored at the square root of the smallest normal float and renormalized, so
    that a guide's unconstrained parameters at them stay finite."""
    return normalize_rows(probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny ** 0.5))


def covariance_update(covariance_type: str, gamma: torch.Tensor, second: torch.Tensor, post: torch.Tensor,
                      obs: torch.Tensor, means: torch.Tensor, means_prior: torch.Tensor, means_weight: torch.Tensor,
                      covars_prior: torch.Tensor, covars_weight: float) -> torch.Tensor:
    """hmmlearn's M-step of the covariances (Huang, Acero & Hon, pp. 443-445), priors included.

    Args:
        gamma: state posteriors of the rows ``(rows, K)``; post: their sums ``(K,)``; obs: ``sum_t g_tk x_t``.
        second: ``sum_t g_tk x_t^2`` ``(K, D)`` (diag/spherical) or the rows ``x`` (full/tied).
        means: the means just estimated (or kept).
    """
    meandiff = means - means_prior
    if covariance_type in ("diag", "spherical"):
        c_n = means_weight * meandiff**2 + second - 2 * means * obs + means**2 * post[:, None]
        c_d = max(covars_weight - 1, 0) + post[:, None]
        covars = (covars_prior + c_n) / c_d.clamp_min(1e-5)
        return covars.mean(1) if covariance_type == "spherical" else covars
    k, d = means.shape
    x = second
    outer = (gamma.unsqueeze(-1) * x.unsqueeze(1)).view(x.shape[0], k * d).T @ x  # sum_t g_tk x_t x_t^T
    obsmean = obs.unsqueeze(-1) * means.unsqueeze(-2)
    c_n = (means_weight * meandiff.unsqueeze(-1) * meandiff.unsqueeze(-2) + outer.view(k, d, d)
           - obsmean - obsmean.transpose(-1, -2) + means.unsqueeze(-1) * means.unsqueeze(-2) * post[:, None, None])
    weight = max(covars_weight - d, 0)
    if covariance_type == "tied":
        return (covars_prior + c_n.sum(0)) / (weight + post.sum())
    return (covars_prior + c_n) / (weight + post[:, None, None])


def cholesky(covars: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factors of full/tied covariances, retrying a failed factor with ``1e-7`` added to
    the diagonal as hmmlearn's densities do (its M-step can leave a state that explains a single point
    with a singular covariance)."""
    chol, info = torch.linalg.cholesky_ex(covars)
    if bool((info != 0).any()):
        eye = torch.eye(covars.shape[-1], dtype=covars.dtype, device=covars.device)
        chol, info = torch.linalg.cholesky_ex(torch.where((info != 0)[..., None, None], covars + 1e-7 * eye, covars))
        if bool((info != 0).any()):
            raise ValueError("'covars' must be symmetric, positive-definite")
    return chol


def precision_cholesky(covars: torch.Tensor) -> torch.Tensor:
    """sklearn's ``precisions_cholesky_`` (``inv(chol(cov)).T``) of full/tied covariances, via `cholesky`."""
    return gaussian.precision_cholesky_from_cholesky(cholesky(covars))


def validate_covars(covars: np.ndarray, covariance_type: str, n_components: int) -> None:
    """hmmlearn's checks of user-set covariances (shape, positivity, symmetric positive-definiteness)."""
    gaussian.check_covariance_type(covariance_type)
    expected_ndim = {"spherical": 1, "diag": 2, "full": 3, "tied": 2}[covariance_type]
    if covars.ndim != expected_ndim or (covariance_type != "tied" and covars.shape[0] != n_components):
        shape = {"spherical": "(n_components,)", "diag": "(n_components, n_features)",
                 "full": "(n_components, n_features, n_features)", "tied": "(n_features, n_features)"}
        raise ValueError(f"{covariance_type!r} covars must have shape {shape[covariance_type]}, got {covars.shape}")
    if covariance_type in ("spherical", "diag"):
        if (covars <= 0).any():
            raise ValueError(f"{covariance_type!r} covars must be positive")
        return
    matrices = covars[None] if covariance_type == "tied" else covars
    if matrices.shape[-1] != matrices.shape[-2]:
        raise ValueError(f"{covariance_type!r} covars must be square matrices, got shape {covars.shape}")
    for index, matrix in enumerate(matrices):
        if not np.allclose(matrix, matrix.T) or (np.linalg.eigvalsh(matrix) <= 0).any():
            where = "" if covariance_type == "tied" else f"component {index} of "
            raise ValueError(f"{where}{covariance_type!r} covars must be symmetric, positive-definite")


def check_sum_1(name: str, value: torch.Tensor) -> None:
    """hmmlearn's ``ValueError`` unless the distribution(s) ``value`` ``(..., K)`` sum to one."""
    sums = value.sum(-1).detach().cpu().numpy()
    if not np.allclose(sums, 1):
        raise ValueError(f"{name} must sum to 1 (got {float(sums):.4f})" if sums.ndim == 0
                         else f"{name} rows must sum to 1 (got row sums of {sums})")
