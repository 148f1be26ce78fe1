"""Probabilistic PCA (Tipping & Bishop, 1999): closed-form or EM maximum likelihood in torch, and a Pyro story."""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from ppl_dgm.core import Capabilities, data_plate
from ppl_dgm.core import X as X_SITE
from ppl_dgm.core import Z as Z_SITE
from ppl_dgm.infer.guides import GuideKind
from ppl_dgm.models.classical.estimator import Estimator, fitted_attribute, to_numpy
from ppl_dgm.models.registry import register_model

Method = Literal["closed_form", "em"]
_LOG_2PI = math.log(2 * math.pi)


def marginal_log_prob(x: torch.Tensor, W: torch.Tensor, mu: torch.Tensor, noise_variance: torch.Tensor
                      ) -> torch.Tensor:
    """``log N(x; mu, W W^T + sigma^2 I)`` per row (nats), by the Woodbury identity.

    Args:
        x: ``(N, D)``.
        W: ``(..., D, q)``; mu: ``(..., D)``; noise_variance: ``(...)``, the same batch shape ``B``.

    Returns:
        ``(..., N)``. With ``M = W^T W + sigma^2 I`` and ``zbar = M^{-1} W^T (x - mu)``:
        ``log det C = (D - q) log sigma^2 + log det M`` and
        ``(x - mu)^T C^{-1} (x - mu) = |x - mu - W zbar|^2 / sigma^2 + |zbar|^2`` (no cancellation).
    """
    d, q = W.shape[-2:]
    s2 = noise_variance[..., None, None]
    M = W.mT @ W + s2 * torch.eye(q, dtype=W.dtype, device=W.device)
    chol = torch.linalg.cholesky(M)
    e = x - mu.unsqueeze(-2)  # (..., N, D)
    zbar = torch.cholesky_solve(W.mT @ e.mT, chol)  # (..., q, N)
    residual = e - (W @ zbar).mT
    maha = (residual**2).sum(-1) / s2[..., 0] + (zbar**2).sum(-2)
    logdet = (d - q) * noise_variance.log() + 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return -0.5 * (d * _LOG_2PI + logdet[..., None] + maha)


def latent_posterior(x: torch.Tensor, W: torch.Tensor, mu: torch.Tensor, noise_variance: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact posterior ``p(z | x) = N(M^{-1} W^T (x - mu), sigma^2 M^{-1})``, ``M = W^T W + sigma^2 I``.

    Returns ``(loc, scale_tril)`` of shapes ``(N, q)`` and ``(q, q)`` (differentiable in ``W, mu, sigma^2``).
    One Cholesky factorization: ``M = U U^T`` with ``U`` upper triangular (the factor of ``M`` with rows
    and columns reversed), so ``U^{-T}`` is a lower-triangular square root of ``M^{-1}``.
    """
    q = W.shape[-1]
    eye = torch.eye(q, dtype=W.dtype, device=W.device)
    upper = torch.linalg.cholesky((W.mT @ W + noise_variance * eye).flip(-2, -1)).flip(-2, -1)
    root = torch.linalg.solve_triangular(upper, eye, upper=True).mT  # U^{-T}, lower triangular
    loc = (root @ (root.mT @ (W.mT @ (x - mu).mT))).mT
    return loc, noise_variance.sqrt() * root


def _mean_log_likelihood(S: torch.Tensor, W: torch.Tensor, s2: torch.Tensor) -> float:
    """Mean log-likelihood per row of data with ML covariance ``S`` (mean already fitted); no gradients.

    Uses ``eigh`` of the small ``M``, not ``torch.linalg.cholesky``, whose triangular masking opens a
    thread-parallel region that can cost milliseconds on a busy CPU (EM calls this thousands of times).
    """
    d, q = W.shape
    eigenvalues, vectors = torch.linalg.eigh(W.T @ W + s2 * torch.eye(q, dtype=W.dtype, device=W.device))
    logdet = (d - q) * torch.log(s2) + eigenvalues.log().sum()
    projected = vectors.T @ (W.T @ S @ W) @ vectors
    trace = (torch.trace(S) - (projected.diagonal() / eigenvalues).sum()) / s2  # tr(C^{-1} S)
    return float(-0.5 * (d * _LOG_2PI + logdet + trace))


def _inverse_spd(M: torch.Tensor) -> torch.Tensor:
    """Inverse of a small symmetric positive-definite matrix by ``eigh`` (no gradients needed)."""
    eigenvalues, vectors = torch.linalg.eigh(M)
    return (vectors / eigenvalues) @ vectors.T


@register_model("ppca")
class PPCA(Estimator):
    """Probabilistic PCA: ``z ~ N(0, I_q)``, ``x | z ~ N(W z + mu, sigma^2 I_D)``, so
    ``x ~ N(mu, W W^T + sigma^2 I)``; fitted by maximum likelihood in closed form or by EM.

    The fitted attributes follow ``sklearn.decomposition.PCA``: ``components_`` (q, D) holds the
    orthonormal principal directions (rows) spanning the columns of ``W_``, by decreasing
    variance, each signed so that its largest-magnitude entry is positive;
    ``explained_variance_`` the model's variance along them, so that
    ``W_ = components_.T @ diag(sqrt(explained_variance_ - noise_variance_)) @ R`` for a rotation
    ``R`` (``R = I`` for the closed form; EM and SVI leave ``R`` arbitrary, as the likelihood does).
    ``get_covariance``/``score_samples`` are sklearn's PPCA likelihood. Unlike sklearn, the
    estimates are maximum-likelihood ones: the sample covariance divides by ``N`` (sklearn's
    ``explained_variance_`` and ``noise_variance_`` by ``N - 1``) and ``noise_variance_`` is the
    mean of all ``D - q`` discarded eigenvalues (sklearn averages ``min(N, D) - q`` of them).

    As a Pyro story: ``W ~ N(0, s_d)`` row-wise, ``mu ~ N(mean, 3 s)``, ``noise_scale = sigma ~
    LogNormal(log rms(s), 1.5)`` with ``s`` the data's per-feature spread; then per example
    ``z ~ N(0, I)`` and ``x ~ N(W z + mu, sigma^2 I)``. The guide is the `GlobalGuide` over
    ``W, mu, noise_scale`` (``posterior="map"``: point masses; ``"normal"``: mean-field) and, per
    example, the exact posterior ``q(z | x) = p(z | x, W, mu, sigma)`` at the guide's draw, so
    every importance weight equals ``log p(x | W, mu, sigma)``: the per-example part of the ELBO
    (and of its gradient) has no Monte Carlo noise, and with ``"map"`` the ELBO is the log posterior
    density, so SVI converges to the MAP estimate (close to maximum likelihood for ``N >> D q``).

    Args:
        n_components: latent dimension ``q`` (``1 <= q < D``, ``q <= N``).
        method: ``"closed_form"`` (eigendecomposition) or ``"em"`` (Tipping & Bishop's EM) for `fit`.
        max_iter: EM iterations at most.
        tol: EM stops when the mean log-likelihood per row changes by less (nats).
        random_state: seed of EM's random initial ``W`` (also used by `setup` before SVI) and `sample`.
        posterior: the guide used by :func:`ppl_dgm.fit`.
        device: where the state lives and the fit runs.
        dtype: floating dtype (float64 by default, as sklearn).
    """

    capabilities = Capabilities(likelihood="exact", data="continuous")
    max_plate_nesting = 1
    _state_names = ("W", "mean", "noise_variance")

    def __init__(
        self,
        n_components: int = 2,
        *,
        method: Method = "closed_form",
        max_iter: int = 1000,
        tol: float = 1e-6,
        random_state: int | np.random.RandomState | None = None,
        posterior: GuideKind = "map",
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        super().__init__(device, dtype)
        self.n_components, self.method, self.max_iter, self.tol = n_components, method, max_iter, tol
        self.random_state, self.posterior = random_state, posterior
        self._check_parameters()
        self._make_guide(posterior)

    def _check_parameters(self) -> None:
        q = self.n_components
        if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or q < 1:
            raise ValueError(f"n_components must be a positive integer, got {q!r}")
        if self.method not in ("closed_form", "em"):
            raise ValueError(f"method must be 'closed_form' or 'em', got {self.method!r}")
        if not self.tol >= 0:
            raise ValueError(f"tol must be non-negative, got {self.tol!r}")
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, (int, np.integer)) or self.max_iter < 1:
            raise ValueError(f"max_iter must be an integer >= 1, got {self.max_iter!r}")

    # ----------------------------------------------------------------- state
    def _sites_from_state(self) -> dict[str, torch.Tensor]:
        """The story's site values at the fitted state."""
        return {"W": self.W, "mu": self.mean, "noise_scale": self.noise_variance.sqrt()}

    def _state_from_sites(self, sites: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"W": sites["W"], "mean": sites["mu"], "noise_variance": sites["noise_scale"] ** 2}

    def _params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(W, mu, sigma^2)``: the fitted state, or the guide's point after SVI."""
        state = self._current()
        return state["W"], state["mean"], state["noise_variance"]

    def _store(self, W: torch.Tensor, mean: torch.Tensor, noise_variance: torch.Tensor) -> None:
        self._set_fitted(W=W, mean=mean, noise_variance=noise_variance)

    @property
    def event_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.mean.shape[0],) if "mean" in self._buffers else ()

    @property
    def n_features_in_(self) -> int:
        self._check_is_fitted()
        return int(self.mean.shape[0])

    @property
    def n_components_(self) -> int:
        self._check_is_fitted()
        return int(self.W.shape[1])

    W_ = fitted_attribute("W", "Factor loadings ``(D, q)``: ``x = W z + mu + noise``.")
    mean_ = fitted_attribute("mean", "Mean ``mu`` of the data ``(D,)``.")

    @property
    def noise_variance_(self) -> float:
        return float(self._params()[2].detach())

    def _principal(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(components (q, D), explained variance (q,))`` from the SVD of ``W``."""
        with torch.no_grad():
            W, _, s2 = self._params()
            U, s, _ = torch.linalg.svd(W, full_matrices=False)
            components = U.T
            rows = torch.arange(components.shape[0], device=W.device)
            signs = torch.sign(components[rows, components.abs().argmax(1)])
            return components * signs[:, None], s**2 + s2

    @property
    def components_(self) -> np.ndarray:
        """Principal directions ``(q, D)``, orthonormal rows spanning the columns of ``W_``."""
        return to_numpy(self._principal()[0])

    @property
    def explained_variance_(self) -> np.ndarray:
        """The model's variance along each of ``components_`` (``|W_ column|^2 + sigma^2`` for the closed form)."""
        return to_numpy(self._principal()[1])

    @property
    def explained_variance_ratio_(self) -> np.ndarray:
        """``explained_variance_`` over the model's total variance ``trace(W W^T) + D sigma^2``."""
        with torch.no_grad():
            W, _, s2 = self._params()
            return to_numpy(self._principal()[1] / ((W**2).sum() + W.shape[0] * s2))

    # ----------------------------------------------------------------- fitting
    def _check_X(self, X: Any, fitting: bool = False) -> torch.Tensor:
        tensor = self._as_tensor(X)
        n, d = tensor.shape
        if fitting:
            if n < 2:
                raise ValueError(f"Found array with {n} sample(s) while a minimum of 2 is required.")
            if self.n_components >= d:
                raise ValueError(f"n_components={self.n_components} must be smaller than n_features={d}")
            if self.n_components > n:
                raise ValueError(f"n_components={self.n_components} must be at most n_samples={n}")
        else:
            self._check_is_fitted()  # before reading n_features_in_: a property's AttributeError is masked
        if not fitting and d != self.n_features_in_:
            raise ValueError(f"X has {d} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input")
        return tensor

    def _check_noise(self, noise_variance: torch.Tensor, scale: torch.Tensor) -> None:
        eps = torch.finfo(self.dtype).eps
        if not float(noise_variance) > 10 * eps * float(scale):
            raise ValueError(f"the data lie (numerically) in a subspace of dimension <= n_components="
                             f"{self.n_components}: the noise variance is 0; reduce n_components")

    def _initialize(self, X: torch.Tensor, random_state: np.random.RandomState) -> None:
        """EM's starting point: the sample mean, a random ``W`` and the mean variance as noise."""
        d, q = X.shape[1], self.n_components
        mean = X.mean(0)
        variance = ((X - mean) ** 2).mean()
        if not float(variance) > 0:
            raise ValueError("X has zero variance in every feature; PPCA needs spread data")
        W = torch.as_tensor(random_state.standard_normal((d, q)), dtype=X.dtype, device=X.device)
        self._store(W * (variance / q).sqrt(), mean, variance)

    def fit(self, X: Any, y: Any = None) -> PPCA:
        """Maximum-likelihood ``W, mu, sigma^2`` on ``X`` (N, D), in closed form or by EM.

        Also sets ``n_iter_`` (0 for the closed form), ``converged_``, ``lower_bounds_`` (the mean
        log-likelihood per row, nats, after each EM iteration; the closed form's single value) and
        ``lower_bound_`` (the last of them).
        """
        self._check_parameters()
        X = self._check_X(X, fitting=True)
        with torch.no_grad():
            if self.method == "closed_form":
                self._fit_closed_form(X)
            else:
                self._fit_em(X)
        self._set_prior(X)
        return self

    def _fit_closed_form(self, X: torch.Tensor) -> None:
        n, d = X.shape
        q = self.n_components
        mean = X.mean(0)
        _, singular, Vt = torch.linalg.svd(X - mean, full_matrices=False)
        eigenvalues = singular**2 / n  # of the ML sample covariance; D - min(N, D) more are 0
        noise_variance = eigenvalues[q:].sum() / (d - q)
        self._check_noise(noise_variance, eigenvalues[0])
        W = Vt[:q].T * (eigenvalues[:q] - noise_variance).clamp_min(0).sqrt()
        self._store(W, mean, noise_variance)
        self.n_iter_, self.converged_ = 0, True
        self.lower_bounds_ = [float(marginal_log_prob(X, W, mean, noise_variance).mean())]
        self.lower_bound_ = self.lower_bounds_[0]

    def _fit_em(self, X: torch.Tensor) -> None:
        """Tipping & Bishop (1999), eqs. 29-30, on the sample covariance ``S``."""
        n, d = X.shape
        q = self.n_components
        self._initialize(X, check_random_state(self.random_state))
        W, mean, s2 = self.W, self.mean, self.noise_variance
        centred = X - mean
        S = centred.T @ centred / n
        eye = torch.eye(q, dtype=X.dtype, device=X.device)
        bounds: list[float] = []
        previous, converged = -math.inf, False
        for _ in range(self.max_iter):
            M_inv = _inverse_spd(W.T @ W + s2 * eye)
            SW = S @ W
            W_new = torch.linalg.solve((s2 * eye + M_inv @ W.T @ SW).T, SW.T).T
            s2 = torch.trace(S - SW @ M_inv @ W_new.T) / d
            self._check_noise(s2, torch.trace(S))
            W = W_new
            bounds.append(_mean_log_likelihood(S, W, s2))
            if abs(bounds[-1] - previous) < self.tol:
                converged = True
                break
            previous = bounds[-1]
        if not converged:
            warnings.warn(f"EM did not converge in max_iter={self.max_iter} iterations; increase max_iter or tol",
                          ConvergenceWarning, stacklevel=3)
        self._store(W, mean, s2)
        self.n_iter_, self.converged_ = len(bounds), converged
        self.lower_bounds_, self.lower_bound_ = bounds, bounds[-1]

    # ----------------------------------------------------------------- sklearn methods
    def score_samples(self, X: Any) -> np.ndarray:
        """Exact log-likelihood of each row, ``log p(x_n)`` (nats), shape ``(N,)``."""
        with torch.no_grad():
            return to_numpy(self.log_prob(self._check_X(X)))

    def score(self, X: Any, y: Any = None) -> float:
        """Mean log-likelihood per row (nats)."""
        return float(self.score_samples(X).mean())

    def transform(self, X: Any) -> np.ndarray:
        """Posterior mean of the latent ``E[z | x] = M^{-1} W^T (x - mu)`` per row, shape ``(N, q)``.

        (sklearn's ``PCA.transform`` returns projections on ``components_`` instead.)
        """
        with torch.no_grad():
            W, mu, s2 = self._params()
            return to_numpy(latent_posterior(self._check_X(X), W, mu, s2)[0])

    def inverse_transform(self, Z: Any) -> np.ndarray:
        """Mean of ``x`` given latents ``z`` (N, q): ``W z + mu``, shape ``(N, D)``."""
        with torch.no_grad():
            W, mu, _ = self._params()
            Z = self._as_tensor(Z, "Z")
            if Z.shape[1] != W.shape[1]:
                raise ValueError(f"Z has {Z.shape[1]} columns, expected n_components={W.shape[1]}")
            return to_numpy(Z @ W.T + mu)

    def get_covariance(self) -> np.ndarray:
        """Model covariance ``W W^T + sigma^2 I``, shape ``(D, D)``."""
        with torch.no_grad():
            W, _, s2 = self._params()
            return to_numpy(W @ W.T + s2 * torch.eye(W.shape[0], dtype=W.dtype, device=W.device))

    def get_precision(self) -> np.ndarray:
        """Inverse covariance by the Woodbury identity, ``(I - W M^{-1} W^T) / sigma^2``, shape ``(D, D)``."""
        with torch.no_grad():
            W, _, s2 = self._params()
            d, q = W.shape
            chol = torch.linalg.cholesky(W.T @ W + s2 * torch.eye(q, dtype=W.dtype, device=W.device))
            eye = torch.eye(d, dtype=W.dtype, device=W.device)
            return to_numpy((eye - W @ torch.cholesky_solve(W.T, chol)) / s2)

    def sample(self, n_samples: int = 1) -> np.ndarray:  # type: ignore[override]
        """``n_samples`` draws ``W z + mu + sigma eps`` (numpy, ``(n_samples, D)``), from ``random_state``."""
        self._check_is_fitted()
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples!r}. The sampling requires at least "
                             "one sample.")
        rng = check_random_state(self.random_state)
        W, mu, s2 = self.W_, self.mean_, self.noise_variance_
        z = rng.standard_normal((n_samples, W.shape[1]))
        return z @ W.T + mu + math.sqrt(s2) * rng.standard_normal((n_samples, W.shape[0]))

    # ----------------------------------------------------------------- GenerativeModel
    def log_prob(self, x: torch.Tensor, **ctx: Any) -> torch.Tensor:
        """Exact marginal ``log p(x_n)`` per row, latents integrated out (nats), shape ``(N,)``."""
        W, mu, s2 = self._params()
        return marginal_log_prob(x.to(self.dtype), W, mu, s2)

    def log_prob_at(self, x: torch.Tensor, sites: dict[str, torch.Tensor]) -> torch.Tensor:
        """Marginal ``log p(x_n | W, mu, sigma)`` for parameter draws: ``(S, N)`` from sites
        ``W (S, D, q)``, ``mu (S, D)``, ``noise_scale (S,)``."""
        state = self._state_from_sites(sites)
        return marginal_log_prob(x.to(self.dtype), state["W"], state["mean"], state["noise_variance"])

    def model(self, x: torch.Tensor | None = None, n: int | None = None) -> torch.Tensor:
        """The story: global ``W``, ``mu``, ``noise_scale``; per example ``z`` and ``x``."""
        self._ensure_initialized(x)
        d, q = self.n_features_in_, self.n_components_
        spread = self.prior_spread
        W = pyro.sample("W", dist.Normal(torch.zeros_like(spread)[:, None], spread[:, None]).expand([d, q]).to_event(2))
        mu = pyro.sample("mu", dist.Normal(self.prior_mean, 3 * spread).to_event(1))
        noise_scale = pyro.sample("noise_scale", dist.LogNormal(spread.square().mean().sqrt().log(), 1.5))
        with data_plate(x, n):  # the global sites may carry leading batch dims (a plate over posterior draws)
            zeros = torch.zeros(q, dtype=self.dtype, device=self.device)
            z = pyro.sample(Z_SITE, dist.Normal(zeros, 1.0).to_event(1))
            obs = None if x is None else x.to(self.dtype)
            loc = torch.einsum("...q,...dq->...d", z, W) + mu
            return pyro.sample(X_SITE, dist.Normal(loc, noise_scale[..., None]).to_event(1), obs=obs)

    def guide(self, x: torch.Tensor | None = None, n: int | None = None) -> None:
        """The global guide, then the exact ``p(z | x)`` at its draw of ``W, mu, noise_scale``."""
        sites = super().guide(x, n)
        q = self.n_components_
        with data_plate(x, n):
            if x is None:
                zeros = torch.zeros(q, dtype=self.dtype, device=self.device)
                pyro.sample(Z_SITE, dist.Normal(zeros, 1.0).to_event(1))
                return
            loc, scale_tril = latent_posterior(x.to(self.dtype), sites["W"], sites["mu"], sites["noise_scale"] ** 2)
            pyro.sample(Z_SITE, dist.MultivariateNormal(loc, scale_tril=scale_tril))
