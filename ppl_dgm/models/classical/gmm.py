"""Gaussian mixture: a drop-in for sklearn's GaussianMixture (EM in torch) and a Pyro story."""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal, get_args

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.cluster import KMeans, kmeans_plusplus
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from ppl_dgm.core import Capabilities, data_plate
from ppl_dgm.core import X as X_SITE
from ppl_dgm.infer.guides import GuideKind
from ppl_dgm.models.classical import gaussian
from ppl_dgm.models.classical.estimator import EMProgress, Estimator, feature_names, fitted_attribute, to_numpy
from ppl_dgm.models.registry import register_model

InitParams = Literal["kmeans", "k-means++", "random", "random_from_data"]
INIT_PARAMS = get_args(InitParams)
_EPS = {torch.float64: float(np.finfo(np.float64).eps), torch.float32: float(np.finfo(np.float32).eps)}


@register_model("gmm")
class GaussianMixture(Estimator, DensityMixin, BaseEstimator):
    """Gaussian mixture model fitted by EM (Dempster, Laird & Rubin 1977; Bishop, *Pattern Recognition
    and Machine Learning*, 2006, sec. 9.2): a drop-in for ``sklearn.mixture.GaussianMixture`` (the
    same constructor arguments, methods, fitted attributes, warnings and error messages; scikit-learn's
    own tests of its public API pass, see ``docs/drop-ins.md``), with EM in torch on ``device``.
    ``GMM`` is its old name, kept as an alias.

    As a Pyro story: ``weights ~ Dirichlet(1)``, ``means ~ N(m, s)``, covariances as
    per-dimension ``scales ~ LogNormal`` and (full/tied) a correlation Cholesky factor
    ``corr_chol ~ LKJ(1)``; for every example ``assignment ~ Categorical(weights)``
    (enumerated, i.e. summed out exactly) and ``x ~ N(means[k], Sigma[k])``. The prior's
    location and scale come from the data at initialization. ``guide`` is a point mass at
    the parameters (``posterior="map"``) or a mean-field normal (``posterior="normal"``).

    Args (sklearn's, validated at ``fit`` as sklearn does):
        n_components: number of mixture components.
        covariance_type: ``"full"``, ``"tied"`` (one shared), ``"diag"`` or ``"spherical"``.
        tol: EM stops when the mean log-likelihood per row (nats) changes by less.
        reg_covar: added to the diagonal of every covariance (keeps them positive definite).
        max_iter: EM iterations per initialization (0: the initialization only).
        n_init: initializations; the one with the best final lower bound is kept.
        init_params: how responsibilities start: ``"kmeans"``, ``"k-means++"``, ``"random"``,
            ``"random_from_data"``.
        weights_init, means_init, precisions_init: given starting parameters (shapes as the
            fitted ``weights_``, ``means_``, ``precisions_``).
        random_state: seed or ``numpy.random.RandomState`` of the initialization and ``sample``.
        warm_start: start each ``fit`` from the last one (one initialization).
        verbose, verbose_interval: print progress (sklearn's format) every ``verbose_interval`` iterations.
    Args (ours, keyword-only, checked at construction):
        posterior: the guide used by :func:`ppl_dgm.fit` with ``engine="svi"``: ``"map"`` or ``"normal"``.
        device: where the state lives and EM runs.
        dtype: floating dtype of the state and of EM; ``None`` follows the data as sklearn does
            (float32 data stays float32, anything else becomes float64).
    """

    capabilities = Capabilities(likelihood="exact", data="continuous", discrete_latents=True)
    max_plate_nesting = 1
    _state_names = ("weights", "means", "covariances", "precisions_chol")
    __repr__ = BaseEstimator.__repr__  # sklearn's "GaussianMixture(n_components=3)", not the torch module tree

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: gaussian.CovarianceType = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: InitParams = "kmeans",
        weights_init: Any = None,
        means_init: Any = None,
        precisions_init: Any = None,
        random_state: int | np.random.RandomState | None = None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = 10,
        posterior: GuideKind = "map",
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        super().__init__(device, dtype)
        self.n_components, self.covariance_type = n_components, covariance_type
        self.tol, self.reg_covar = tol, reg_covar
        self.max_iter, self.n_init, self.init_params = max_iter, n_init, init_params
        self.weights_init, self.means_init, self.precisions_init = weights_init, means_init, precisions_init
        self.random_state, self.warm_start, self.verbose, self.verbose_interval = (
            random_state, warm_start, verbose, verbose_interval)
        self.posterior = posterior
        self._make_guide(posterior)

    def _check_parameters(self) -> None:
        """``ValueError`` in sklearn's words unless the constructor arguments are valid."""
        def fail(name: str, expected: str) -> None:
            raise ValueError(f"The {name!r} parameter of {type(self).__name__} must be {expected}. "
                             f"Got {getattr(self, name)!r} instead.")

        for name, low in (("n_components", 1), ("max_iter", 0), ("n_init", 1), ("verbose", 0),
                          ("verbose_interval", 1)):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or (isinstance(value, bool) and name != "verbose") \
                    or value < low:
                fail(name, f"an int in the range [{low}, inf)")
        for name in ("tol", "reg_covar"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not value >= 0:
                fail(name, "a float in the range [0.0, inf)")
        for name, options in (("covariance_type", gaussian.COVARIANCE_TYPES), ("init_params", INIT_PARAMS)):
            if not isinstance(getattr(self, name), str) or getattr(self, name) not in options:
                fail(name, "a str among {" + ", ".join(map(repr, options)) + "}")
        if not isinstance(self.warm_start, (bool, np.bool_)):
            fail("warm_start", "an instance of 'bool'")

    # ----------------------------------------------------------------- state
    def _sites_from_state(self) -> dict[str, torch.Tensor]:
        """The story's site values at the EM state."""
        sites = gaussian.sites_from_covariances(self.covariances, self.covariance_type)
        return {"weights": self.weights, "means": self.means, **sites}

    def _state_from_sites(self, sites: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        covariances = gaussian.covariances_from_sites(sites, self.covariance_type)
        return {"weights": sites["weights"], "means": sites["means"], "covariances": covariances,
                "precisions_chol": gaussian.precision_cholesky(covariances, self.covariance_type)}

    def _store(self, weights: torch.Tensor, means: torch.Tensor, covariances: torch.Tensor | None,
               prec_chol: torch.Tensor) -> None:
        if covariances is None:
            covariances = gaussian.covariances_from_precision_cholesky(prec_chol, self.covariance_type)
        self._set_fitted(weights=weights, means=means, covariances=covariances, precisions_chol=prec_chol)

    @property
    def event_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.means.shape[1],) if "means" in self._buffers else ()

    @property
    def n_features_in_(self) -> int:
        """Number of features seen by ``fit``."""
        self._check_is_fitted()
        return int(self.means.shape[1])

    # settable, as in sklearn: scoring reads weights_, means_ and precisions_cholesky_; sample reads covariances_
    weights_ = fitted_attribute("weights", "Mixture weights ``(n_components,)``.", settable=True)
    means_ = fitted_attribute("means", "Component means ``(n_components, n_features)``.", settable=True)
    precisions_cholesky_ = fitted_attribute(
        "precisions_chol", "Cholesky factors of the precisions, shaped by ``covariance_type`` (sklearn's).",
        settable=True)
    covariances_ = fitted_attribute("covariances", "Component covariances, shaped by ``covariance_type``.",
                                    settable=True)

    @property
    def precisions_(self) -> np.ndarray:
        """Precisions (inverse covariances), shaped by ``covariance_type``, from ``precisions_cholesky_``."""
        return to_numpy(gaussian.precisions_from_cholesky(self._current()["precisions_chol"], self.covariance_type))

    # ----------------------------------------------------------------- EM
    def _initial_resp(self, X: torch.Tensor, random_state: np.random.RandomState) -> torch.Tensor:
        """Responsibilities of the initialization, drawn exactly as sklearn draws them."""
        n_samples = X.shape[0]
        k = self.n_components
        resp = np.zeros((n_samples, k))
        if self.init_params == "kmeans":
            labels = KMeans(n_clusters=k, n_init=1, random_state=random_state).fit(to_numpy(X)).labels_
            resp[np.arange(n_samples), labels] = 1
        elif self.init_params == "random":
            resp = random_state.uniform(size=(n_samples, k))
            resp /= resp.sum(axis=1)[:, np.newaxis]
        elif self.init_params == "random_from_data":
            resp[random_state.choice(n_samples, size=k, replace=False), np.arange(k)] = 1
        else:
            _, indices = kmeans_plusplus(to_numpy(X), k, random_state=random_state)
            resp[indices, np.arange(k)] = 1
        return torch.as_tensor(resp, dtype=X.dtype, device=X.device)

    def _estimate(self, X: torch.Tensor, resp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        nk = resp.sum(0) + 10 * _EPS[X.dtype]
        means = (resp.T @ X) / nk[:, None]
        return nk, means, gaussian.estimate_covariances(resp, X, nk, means, self.reg_covar, self.covariance_type)

    def _initialize(self, X: torch.Tensor, random_state: np.random.RandomState) -> None:
        given = self.weights_init is not None and self.means_init is not None and self.precisions_init is not None
        if given:
            weights = means = covariances = None
        else:
            nk, means, covariances = self._estimate(X, self._initial_resp(X, random_state))
            weights = nk / X.shape[0]
        if self.weights_init is not None:
            weights = self._as_tensor(self.weights_init, "weights_init", ndim=1)
        if self.means_init is not None:
            means = self._as_tensor(self.means_init, "means_init")
        if self.precisions_init is not None:
            precisions = self._as_tensor(self.precisions_init, "precisions_init",
                                         ndim=len(gaussian.covariance_shape(self.covariance_type, 1, 1)))
            prec_chol = gaussian.precision_cholesky_from_precisions(precisions, self.covariance_type)
            self._store(weights, means, None, prec_chol)
        else:
            self._store(weights, means, covariances, gaussian.precision_cholesky(covariances, self.covariance_type))

    def _check_initial_parameters(self, n_features: int) -> None:
        """``ValueError`` (sklearn's messages) unless the given ``*_init`` parameters fit ``n_features``."""
        if self.weights_init is not None:
            gaussian.check_initial_weights(self.weights_init, self.n_components)
        if self.means_init is not None:
            gaussian.check_initial_means(self.means_init, self.n_components, n_features)
        if self.precisions_init is not None:
            gaussian.check_initial_precisions(self.precisions_init, self.covariance_type, self.n_components,
                                              n_features)

    def _weighted_log_prob(self, X: torch.Tensor) -> torch.Tensor:
        state = self._current()
        return (gaussian.log_gaussian_prob(X, state["means"], state["precisions_chol"], self.covariance_type)
                + state["weights"].log())

    def _e_step(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log p(x_n), log responsibilities)`` under the current state."""
        weighted = self._weighted_log_prob(X)
        log_norm = torch.logsumexp(weighted, 1)
        return log_norm, weighted - log_norm[:, None]

    def _m_step(self, X: torch.Tensor, log_resp: torch.Tensor) -> None:
        nk, means, covariances = self._estimate(X, log_resp.exp())
        self._store(nk / nk.sum(), means, covariances, gaussian.precision_cholesky(covariances, self.covariance_type))

    def _check_X(self, X: Any, fitting: bool = False) -> torch.Tensor:
        """Rows ``(N, D)`` as a tensor of the estimator's dtype, checked as sklearn checks them;
        ``fitting`` also records the feature names (a data frame's columns)."""
        if not fitting:
            self._check_is_fitted()  # first, as sklearn: the fitted attributes' AttributeError would mask it
        names = feature_names(X)
        tensor = self._as_tensor(X)
        if not fitting:
            self._check_feature_names(names)
            if tensor.shape[1] != self.n_features_in_:
                raise ValueError(f"X has {tensor.shape[1]} features, but {type(self).__name__} is expecting "
                                 f"{self.n_features_in_} features as input.")
            return tensor
        if tensor.shape[0] < 2:
            raise ValueError(f"Found array with {tensor.shape[0]} sample(s) (shape={tuple(tensor.shape)}) while "
                             f"a minimum of 2 is required by {type(self).__name__}; pass more rows.")
        if tensor.shape[0] < self.n_components:
            raise ValueError(f"Expected n_samples >= n_components but got n_components = {self.n_components}, "
                             f"n_samples = {tensor.shape[0]}; pass more rows or lower n_components.")
        self._check_initial_parameters(tensor.shape[1])
        self._check_feature_names(names, fitting=True)
        return tensor

    def fit(self, X: Any, y: Any = None) -> GaussianMixture:
        """Estimate the parameters with EM (``n_init`` restarts, the best lower bound kept)."""
        self.fit_predict(X, y)
        return self

    def fit_predict(self, X: Any, y: Any = None) -> np.ndarray:
        """Fit with EM and return the component of each row (as sklearn, after a final E-step)."""
        self._check_parameters()
        self._follow_input_dtype(X)
        X = self._check_X(X, fitting=True)
        with torch.no_grad():
            labels = self._run_em(X)
        self._set_prior(X)
        return labels

    def _run_em(self, X: torch.Tensor) -> np.ndarray:
        do_init = not (self.warm_start and hasattr(self, "converged_"))
        random_state = check_random_state(self.random_state)
        best: tuple | None = None
        max_lower_bound = -math.inf
        self.converged_ = False
        for init in range(self.n_init if do_init else 1):
            progress = EMProgress(self.verbose, self.verbose_interval, init)
            if do_init:
                self._initialize(X, random_state)
            lower_bound = -math.inf if do_init else self.lower_bound_
            bounds: list[float] = []
            converged, n_iter = False, 0
            for n_iter in range(1, self.max_iter + 1):
                previous = lower_bound
                log_norm, log_resp = self._e_step(X)
                self._m_step(X, log_resp)
                lower_bound = float(log_norm.mean())
                bounds.append(lower_bound)
                progress.iteration(n_iter, lower_bound - previous)
                if abs(lower_bound - previous) < self.tol:
                    converged = True
                    break
            if self.max_iter > 0:
                progress.end(lower_bound, converged)
            if lower_bound > max_lower_bound or max_lower_bound == -math.inf:
                max_lower_bound, best = lower_bound, (self._state(), n_iter, bounds)
                self.converged_ = converged
        if not self.converged_ and self.max_iter > 0:
            warnings.warn("Best performing initialization did not converge. Try different init parameters, "
                          "or increase max_iter, tol, or check for degenerate data.", ConvergenceWarning,
                          stacklevel=3)
        state, self.n_iter_, self.lower_bounds_ = best
        self._set_fitted(**state)
        self.lower_bound_ = max_lower_bound
        _, log_resp = self._e_step(X)
        return to_numpy(log_resp.argmax(1))

    def _state(self) -> dict[str, torch.Tensor]:
        return {name: self._buffers[name].clone() for name in self._state_names}

    # ----------------------------------------------------------------- sklearn methods
    def score_samples(self, X: Any) -> np.ndarray:
        """Log-likelihood of each row, ``log p(x_n)`` (nats)."""
        with torch.no_grad():
            return to_numpy(torch.logsumexp(self._weighted_log_prob(self._check_X(X)), 1))

    def score(self, X: Any, y: Any = None) -> float:
        """Mean log-likelihood per row (nats)."""
        return float(self.score_samples(X).mean())

    def predict(self, X: Any) -> np.ndarray:
        """Most probable component of each row."""
        with torch.no_grad():
            return to_numpy(self._weighted_log_prob(self._check_X(X)).argmax(1))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Posterior probability of each component for each row, shape ``(N, K)``."""
        with torch.no_grad():
            return to_numpy(self._e_step(self._check_X(X))[1].exp())

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[override]
        """``(X, y)``: ``n_samples`` draws grouped by component, drawn as sklearn draws them."""
        self._check_is_fitted()
        if not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise ValueError(f"Invalid value for 'n_samples': {n_samples!r}. The sampling requires at least "
                             "one sample.")
        rng = check_random_state(self.random_state)
        weights, means, covariances = self.weights_, self.means_, self.covariances_
        counts = rng.multinomial(n_samples, weights)
        if self.covariance_type == "full":
            parts = [rng.multivariate_normal(m, c, int(n)) for m, c, n in zip(means, covariances, counts, strict=True)]
        elif self.covariance_type == "tied":
            parts = [rng.multivariate_normal(m, covariances, int(n)) for m, n in zip(means, counts, strict=True)]
        else:
            parts = [m + rng.standard_normal(size=(int(n), means.shape[1])) * np.sqrt(c)
                     for m, c, n in zip(means, covariances, counts, strict=True)]
        labels = np.concatenate([np.full(int(n), k, dtype=np.int64) for k, n in enumerate(counts)])
        return np.vstack(parts), labels

    def _n_parameters(self) -> int:
        k, d = self.n_components, self.n_features_in_
        return gaussian.n_covariance_parameters(self.covariance_type, k, d) + k * d + k - 1

    def bic(self, X: Any) -> float:
        """Bayesian information criterion on ``X`` (lower is better)."""
        n = np.shape(X)[0]
        return -2 * self.score(X) * n + self._n_parameters() * math.log(n)

    def aic(self, X: Any) -> float:
        """Akaike information criterion on ``X`` (lower is better)."""
        return -2 * self.score(X) * np.shape(X)[0] + 2 * self._n_parameters()

    # ----------------------------------------------------------------- GenerativeModel
    def log_prob(self, x: torch.Tensor, **ctx: Any) -> torch.Tensor:
        """Exact marginal ``log p(x_n)`` per row, assignments summed out (nats), shape ``(N,)``."""
        return torch.logsumexp(self._weighted_log_prob(x.to(self.dtype)), 1)

    def model(self, x: torch.Tensor | None = None, n: int | None = None) -> torch.Tensor:
        """The story; global parameters are sample sites, ``assignment`` is enumerated."""
        self._ensure_initialized(x)
        k, d = self.n_components, self.n_features_in_
        sites = {
            "weights": pyro.sample("weights", dist.Dirichlet(torch.ones(k, dtype=self.dtype, device=self.device))),
            **gaussian.sample_component_sites(self.covariance_type, k, self.prior_mean, self.prior_spread),
        }
        scale_tril = gaussian.scale_tril_from_sites(sites, self.covariance_type, d)
        with data_plate(x, n):
            assignment = pyro.sample("assignment", dist.Categorical(sites["weights"]),
                                     infer={"enumerate": "parallel"})
            # Vindex: the global sites may carry leading batch dims (a plate over posterior draws)
            tril = scale_tril if self.covariance_type == "tied" else Vindex(scale_tril)[..., assignment, :, :]
            loc = Vindex(sites["means"])[..., assignment, :]
            return pyro.sample(X_SITE, dist.MultivariateNormal(loc, scale_tril=tril), obs=x)

    def log_prob_at(self, x: torch.Tensor, sites: dict[str, torch.Tensor]) -> torch.Tensor:
        """Marginal ``log p(x_n | params)`` for a batch of parameter draws: ``(S, N)`` from sites ``(S, ...)``."""
        d = x.shape[1]
        tril = gaussian.scale_tril_from_sites(sites, self.covariance_type, d)
        if self.covariance_type == "tied":
            tril = tril.unsqueeze(-3).expand(*sites["means"].shape[:-1], d, d)
        mixture = dist.MixtureSameFamily(dist.Categorical(sites["weights"]),
                                         dist.MultivariateNormal(sites["means"], scale_tril=tril))
        return mixture.log_prob(x.to(self.dtype).unsqueeze(-2)).movedim(-1, 0)


GMM = GaussianMixture
"""The old name of `GaussianMixture`, kept so that existing code and checkpoints work."""
