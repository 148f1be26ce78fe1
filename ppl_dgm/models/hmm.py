"""Hidden Markov model: a drop-in for hmmlearn's GaussianHMM / CategoricalHMM (batched Baum-Welch
in torch) and a Pyro story with the hidden states summed out exactly."""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import numpy as np
import torch
from hmmlearn.base import ConvergenceMonitor
from sklearn.cluster import KMeans
from sklearn.utils import check_random_state

from ppl_dgm.core import Capabilities
from ppl_dgm.infer.guides import GuideKind
from ppl_dgm.models import gaussian
from ppl_dgm.models import hmm_emissions as emissions
from ppl_dgm.models import hmm_inference as kernels
from ppl_dgm.models.estimator import Estimator, fitted_attribute, to_numpy
from ppl_dgm.models.hmm_story import HMMStory
from ppl_dgm.models.registry import register_model

_log = logging.getLogger(__name__)
Emission = Literal["gaussian", "categorical"]
LETTERS = {"gaussian": "stmc", "categorical": "ste"}


def _parameter(name: str, doc: str) -> property:
    """A fitted attribute: numpy out (EM's state or the guide's point), any array-like in."""
    return fitted_attribute(name, doc).setter(lambda self, value: self._assign(name, value))


@register_model("hmm")
class HMM(HMMStory, Estimator):
    """Hidden Markov model; the arguments, methods and fitted attributes of hmmlearn's
    ``GaussianHMM`` (``emission="gaussian"``) and ``CategoricalHMM`` (``emission="categorical"``),
    with Baum-Welch run in torch over all sequences at once on ``device``.

    As a Pyro story: ``startprob ~ Dirichlet(1)``, each row of ``transmat ~ Dirichlet(1)``, and
    either Gaussian emissions (``means ~ N(m, 3 s)``, per-dimension ``scales ~ LogNormal``, and for
    full/tied covariances ``corr_chol ~ LKJ(1)``, the prior centred on the data as in `GMM`) or
    categorical ones (rows of ``emissionprob ~ Dirichlet(1)``). Each sequence ``x_n`` of shape
    ``(T, D)`` (categorical: ``(T, 1)`` symbol ids) is observed through ``DiscreteHMM``, which sums
    the hidden states out exactly; steps past ``lengths[n]`` are masked out. ``guide`` is a point
    mass at the parameters (``posterior="map"``) or a mean-field normal (``posterior="normal"``).

    Args (beyond hmmlearn's):
        emission: ``"gaussian"`` or ``"categorical"``.
        params, init_params: hmmlearn's letters (``"stmc"`` / ``"ste"``); ``None`` means all.
        implementation: accepted for compatibility; both values run the same scaled algorithm,
            which neither underflows nor needs logarithms in its inner loop.
        posterior: the guide used by :func:`ppl_dgm.fit`.
        device, dtype: where and in which floating dtype the state lives and EM runs.
    """

    max_plate_nesting = 1

    def __init__(
        self,
        n_components: int = 1,
        *,
        emission: Emission = "gaussian",
        covariance_type: gaussian.CovarianceType = "diag",
        min_covar: float = 1e-3,
        startprob_prior: Any = 1.0,
        transmat_prior: Any = 1.0,
        means_prior: Any = 0,
        means_weight: Any = 0,
        covars_prior: Any = 1e-2,
        covars_weight: Any = 1,
        emissionprob_prior: Any = 1.0,
        n_features: int | None = None,
        algorithm: Literal["viterbi", "map"] = "viterbi",
        random_state: int | np.random.RandomState | None = None,
        n_iter: int = 10,
        tol: float = 1e-2,
        verbose: bool = False,
        params: str | None = None,
        init_params: str | None = None,
        implementation: Literal["log", "scaling"] = "log",
        posterior: GuideKind = "map",
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
    ) -> None:
        super().__init__(device, dtype)
        self.n_components, self.emission, self.covariance_type, self.min_covar = (
            n_components, emission, covariance_type, min_covar)
        self.startprob_prior, self.transmat_prior, self.emissionprob_prior = (
            startprob_prior, transmat_prior, emissionprob_prior)
        self.means_prior, self.means_weight, self.covars_prior, self.covars_weight = (
            means_prior, means_weight, covars_prior, covars_weight)
        self.n_features, self.algorithm, self.random_state = n_features, algorithm, random_state
        self.n_iter, self.tol, self.verbose = n_iter, tol, verbose
        self.params, self.init_params, self.implementation = params, init_params, implementation
        self.posterior = posterior
        self._check_parameters()
        self._make_guide(posterior)
        self.monitor_ = ConvergenceMonitor(tol, n_iter, verbose)
        self._n_sequences = 1

    def _check_parameters(self) -> None:
        if not isinstance(self.n_components, (int, np.integer)) or self.n_components < 1:
            raise ValueError(f"n_components must be a positive integer, got {self.n_components!r}")
        if self.emission not in LETTERS:
            raise ValueError(f"emission must be 'gaussian' or 'categorical', got {self.emission!r}")
        if self.emission == "gaussian":
            gaussian.check_covariance_type(self.covariance_type)
        if self.algorithm not in ("viterbi", "map"):
            raise ValueError(f"algorithm must be 'viterbi' or 'map', got {self.algorithm!r}")
        if self.implementation not in ("log", "scaling"):
            raise ValueError(f"implementation must be 'log' or 'scaling', got {self.implementation!r}")
        if not isinstance(self.n_iter, (int, np.integer)) or self.n_iter < 0:
            raise ValueError(f"n_iter must be a non-negative integer, got {self.n_iter!r}")
        if self.n_features is not None and (not isinstance(self.n_features, (int, np.integer)) or self.n_features < 1):
            raise ValueError(f"n_features must be a positive integer or None, got {self.n_features!r}")

    # ----------------------------------------------------------------- state
    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        data = "discrete" if self.emission == "categorical" else "continuous"
        return Capabilities(likelihood="exact", data=data, discrete_latents=True, sequential=True)

    @property
    def _state_names(self) -> tuple[str, ...]:  # type: ignore[override]
        emission = ("emissionprob",) if self.emission == "categorical" else ("means", "covars")
        return ("startprob", "transmat", *emission)

    @property
    def _letters(self) -> str:
        return LETTERS[self.emission]

    def _updates(self) -> str:
        return self._letters if self.params is None else self.params

    def _materialize(self) -> None:
        """Copy the guide's point (after SVI) into the EM state."""
        if bool(self.uses_guide_point):
            with torch.no_grad():
                self._set_fitted(**{k: v.detach() for k, v in self._current().items()})

    def _assign(self, name: str, value: Any) -> None:
        self._materialize()
        tensor = torch.as_tensor(np.array(value, dtype=np.float64), dtype=self.dtype, device=self.device)
        self._set_fitted(**{name: tensor})

    startprob_ = _parameter("startprob", "Initial state distribution ``(n_components,)``.")
    transmat_ = _parameter("transmat", "Transition probabilities ``(n_components, n_components)`` (rows: from-state).")
    means_ = _parameter("means", "Gaussian means ``(n_components, n_features)``.")
    emissionprob_ = _parameter("emissionprob", "Symbol probabilities ``(n_components, n_features)``.")

    @property
    def covars_(self) -> np.ndarray:
        """Covariances as full matrices ``(n_components, n_features, n_features)`` (hmmlearn's getter)."""
        covars, k = self._current()["covars"], self.n_components
        d = self._current()["means"].shape[1]
        if self.covariance_type == "spherical":
            return to_numpy(covars[:, None, None] * torch.eye(d, dtype=covars.dtype, device=covars.device))
        return to_numpy(gaussian.full_covariances(covars, self.covariance_type, k).clone())

    @covars_.setter
    def covars_(self, value: Any) -> None:
        covars = np.array(value, dtype=np.float64)
        emissions.validate_covars(covars, self.covariance_type, self.n_components)
        self._assign("covars", covars)

    @property
    def event_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        if "max_length" not in self._buffers or self.n_features is None:
            return ()
        return (int(self.max_length), 1 if self.emission == "categorical" else int(self.n_features))

    # ----------------------------------------------------------------- input checks
    def _check_X(self, X: Any, fitting: bool = False) -> torch.Tensor:
        """``(n, D)`` floats (gaussian) or ``(n,)`` symbol ids (categorical) on the device."""
        if not fitting:
            self._check_is_fitted()
        if self.emission == "categorical":
            symbols = self._as_tensor(X, "X", integer=True)
            if symbols.shape[1] != 1:
                raise ValueError(f"categorical emissions need X of shape (n_samples, 1) holding symbol ids, "
                                 f"got shape {tuple(symbols.shape)}")
            symbols = symbols[:, 0]
            largest = int(symbols.max())
            if fitting and self.n_features is None:
                self.n_features = largest + 1
            known = self.n_features if fitting else self._current()["emissionprob"].shape[1]
            if largest > known - 1:
                raise ValueError(f"Largest symbol is {largest} but the model only emits symbols up to {known - 1}")
            return symbols
        tensor = self._as_tensor(X, "X")
        if fitting and self.n_features is None:
            self.n_features = int(tensor.shape[1])
        expected = self.n_features if fitting else self._current()["means"].shape[1]
        if expected is not None and tensor.shape[1] != expected:
            raise ValueError(f"Unexpected number of dimensions, got {tensor.shape[1]} but expected {expected}")
        return tensor

    @staticmethod
    def _check_lengths(lengths: Any, n_samples: int) -> list[int]:
        if lengths is None:
            return [n_samples]
        array = np.asarray(lengths.detach().cpu() if isinstance(lengths, torch.Tensor) else lengths)
        if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.number):
            raise ValueError(f"lengths must be a non-empty 1-D sequence of positive integers, got {lengths!r}")
        if (array != np.round(array)).any() or (array < 1).any():
            raise ValueError(f"lengths must hold positive integers, got {array.tolist()}")
        if int(array.sum()) != n_samples:
            raise ValueError(f"lengths array {array.tolist()} doesn't sum to {n_samples} samples")
        return [int(n) for n in array]

    def _check_sum_1(self, name: str, value: torch.Tensor) -> None:
        sums = to_numpy(value.sum(-1))
        if not np.allclose(sums, 1):
            raise ValueError(f"{name} must sum to 1 (got {float(sums):.4f})" if sums.ndim == 0
                             else f"{name} rows must sum to 1 (got row sums of {sums})")

    def _check(self) -> None:
        """hmmlearn's ``_check``: shapes, and distributions that sum to one."""
        state, k = self._current(), self.n_components
        if state["startprob"].shape != (k,):
            raise ValueError("startprob_ must have length n_components")
        self._check_sum_1("startprob_", state["startprob"])
        if state["transmat"].shape != (k, k):
            raise ValueError("transmat_ must have shape (n_components, n_components)")
        self._check_sum_1("transmat_", state["transmat"])
        if self.emission == "categorical":
            if self.n_features is None and state["emissionprob"].dim() == 2:
                self.n_features = int(state["emissionprob"].shape[1])
            if state["emissionprob"].shape != (k, self.n_features):
                raise ValueError(f"emissionprob_ must have shape ({k}, {self.n_features})")
            self._check_sum_1("emissionprob_", state["emissionprob"])
            return
        means = state["means"]
        if means.dim() != 2 or means.shape[0] != k or self.n_features not in (None, means.shape[1]):
            raise ValueError(f"means_ must have shape (n_components, n_features) = ({k}, {self.n_features or 'D'}), "
                             f"got {tuple(means.shape)}")
        self.n_features = int(means.shape[1])
        shape = gaussian.covariance_shape(self.covariance_type, k, self.n_features)
        if tuple(state["covars"].shape) != shape:
            raise ValueError(f"covars_ of a {self.covariance_type!r} model must have shape {shape}, "
                             f"got {tuple(state['covars'].shape)}")

    # ----------------------------------------------------------------- initialization (hmmlearn's _init)
    def _needs_init(self, code: str, name: str) -> bool:
        init_params = self._letters if self.init_params is None else self.init_params
        return code in init_params or name not in self._buffers

    def _n_fit_scalars_per_param(self) -> dict[str, int]:
        k, d = self.n_components, int(self.n_features)
        counts = {"s": k - 1, "t": k * (k - 1)}
        if self.emission == "categorical":
            return {**counts, "e": k * (d - 1)}
        covars = {"spherical": k, "diag": k * d, "full": k * d * (d + 1) // 2, "tied": d * (d + 1) // 2}
        return {**counts, "m": k * d, "c": covars[self.covariance_type]}

    def _init(self, X: torch.Tensor) -> None:
        k = self.n_components
        new: dict[str, Any] = {}
        random_state = check_random_state(self.random_state)
        if self._needs_init("s", "startprob"):
            new["startprob"] = random_state.dirichlet(np.full(k, 1.0 / k))
        if self._needs_init("t", "transmat"):
            new["transmat"] = random_state.dirichlet(np.full(k, 1.0 / k), size=k)
        if self.emission == "categorical":
            if self._needs_init("e", "emissionprob"):
                emissionprob = check_random_state(self.random_state).rand(k, self.n_features)
                new["emissionprob"] = emissionprob / emissionprob.sum(1, keepdims=True)
        else:
            if self._needs_init("m", "means"):
                kmeans = KMeans(n_clusters=k, random_state=self.random_state, n_init=10).fit(to_numpy(X))
                new["means"] = kmeans.cluster_centers_
            if self._needs_init("c", "covars"):
                cov = np.atleast_2d(np.cov(to_numpy(X).T)) + self.min_covar * np.eye(X.shape[1])
                new["covars"] = {"spherical": np.full(k, cov.mean()), "diag": np.tile(np.diag(cov), (k, 1)),
                                 "full": np.tile(cov, (k, 1, 1)), "tied": cov}[self.covariance_type]
        for name, value in new.items():
            self._assign(name, value)
        scalars = sum(self._n_fit_scalars_per_param().get(p, 0) for p in self._updates())
        size = X.numel() if self.emission == "gaussian" else X.shape[0]
        if size < scalars:
            _log.warning("Fitting a model with %d free scalar parameters with only %d data points will result in "
                         "a degenerate solution.", scalars, size)

    # ----------------------------------------------------------------- emissions
    def _prepare(self, X: torch.Tensor, layout: kernels.Layout) -> dict[str, torch.Tensor]:
        """Rows of the data in the kernels' layout, flattened (zeros at padded steps): ``symbols``
        (categorical); ``z = [x, x^2, 1]`` (diag/spherical: emission log-densities and the M-step's
        sums are each one matrix product with it); ``z = [x, 1]`` and ``x`` (full/tied)."""
        if self.emission == "categorical":
            return {"symbols": kernels.to_layout(X.unsqueeze(1), layout).view(-1)}
        x = kernels.to_layout(X, layout).view(-1, X.shape[1])
        ones = torch.ones(x.shape[0], 1, dtype=X.dtype, device=X.device)
        if self.covariance_type in ("diag", "spherical"):
            return {"z": torch.cat([x, x * x, ones], 1)}
        return {"z": torch.cat([x, ones], 1), "x": x}

    def _log_frame(self, data: dict[str, torch.Tensor], state: dict[str, torch.Tensor],
                   workspace: kernels.Workspace | None = None) -> torch.Tensor:
        """Emission log-probabilities ``log p(x_t | state k)`` of the prepared rows, ``(rows, K)``
        (hmmlearn's densities: variances floored at the smallest normal float, a failed Cholesky
        factor retried with ``1e-7`` on the diagonal)."""
        rows = next(iter(data.values())).shape[0]
        out = kernels.buffer(workspace, "log_frame", (rows, self.n_components), state["startprob"])
        if self.emission == "categorical":
            return torch.index_select(state["emissionprob"].log().T, 0, data["symbols"], out=out)
        return emissions.gaussian_log_frame(data, state["means"], state["covars"], self.covariance_type, out)

    # ----------------------------------------------------------------- EM
    def fit(self, X: Any, lengths: Any = None) -> HMM:
        """Estimate the parameters with Baum-Welch (hmmlearn's initialization, updates, priors and
        convergence monitor), over all sequences at once."""
        self._check_parameters()
        X = self._check_X(X, fitting=True)
        lengths = self._check_lengths(lengths, X.shape[0])
        if X.shape[0] < self.n_components:
            raise ValueError(f"Expected n_samples >= n_components but got n_components = {self.n_components}, "
                             f"n_samples = {X.shape[0]}")
        with torch.no_grad():
            self._materialize()
            self._init(X)
            self._check()
            layout = kernels.make_layout(lengths, self.device, n_states=self.n_components)
            data = self._prepare(X, layout)
            shape = (*layout.mask.shape, self.n_components)
            workspace: kernels.Workspace = {}
            monitor = self.monitor_
            monitor.tol, monitor.n_iter, monitor.verbose = self.tol, self.n_iter, self.verbose
            monitor._reset()
            for _ in range(self.n_iter):
                log_frame = self._log_frame(data, self._buffers, workspace).view(shape)
                result = kernels.forward_backward(self.startprob, self.transmat, log_frame, layout,
                                                  workspace=workspace)
                log_prob = float(result.log_likelihood.sum())
                self._m_step(result, data)
                monitor.report(log_prob)
                if monitor.converged:
                    break
                if bool((self.transmat.sum(1) == 0).any()):
                    _log.warning("Some rows of transmat_ have zero sum because no transition from the state was "
                                 "ever observed.")
            self._finish_fit(X, max(lengths))
        self._n_sequences = len(lengths)
        return self

    def _m_step(self, result: kernels.Posteriors, data: dict[str, torch.Tensor]) -> None:
        """hmmlearn's M-step (priors included); zeros in startprob_/transmat_ stay zero."""
        updates, dtype, device = self._updates(), self.dtype, self.device

        def prior(value: Any) -> torch.Tensor:
            return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=dtype, device=device)

        k = self.n_components
        gamma = result.gamma.view(-1, k)
        new: dict[str, torch.Tensor] = {}
        if "s" in updates:
            start = (prior(self.startprob_prior) - 1 + result.gamma[0, 0].sum(0)).clamp_min(0)
            start = torch.where(self.startprob == 0, 0.0, start)
            new["startprob"] = start / start.sum()
        if "t" in updates:
            trans = (prior(self.transmat_prior) - 1 + result.xi_sum).clamp_min(0)
            new["transmat"] = emissions.normalize_rows(torch.where(self.transmat == 0, 0.0, trans))
        if self.emission == "categorical":
            if "e" in updates:
                counts = gamma.new_zeros(self.n_features, k).index_add_(0, data["symbols"], gamma).T
                counts = (prior(self.emissionprob_prior) - 1 + counts).clamp_min(0)
                new["emissionprob"] = emissions.normalize_rows(counts)
            self._set_state(**new)
            return
        if "m" in updates or "c" in updates:
            d = self.means.shape[1]
            sums = gamma.T @ data["z"]  # [sum g x, (sum g x^2,) sum g]
            obs, post = sums[:, :d], sums[:, -1]
            means_prior, means_weight = prior(self.means_prior), prior(self.means_weight)
            means = self.means
            if "m" in updates:
                means = new["means"] = (means_weight * means_prior + obs) / (means_weight + post[:, None])
            if "c" in updates:
                second = sums[:, d : 2 * d] if self.covariance_type in ("diag", "spherical") else data["x"]
                new["covars"] = emissions.covariance_update(
                    self.covariance_type, gamma, second, post, obs, means, means_prior, means_weight,
                    prior(self.covars_prior), float(self.covars_weight))
        self._set_state(**new)

    def fit_history(self) -> list[float]:
        """Log-likelihood per sequence (nats) at the start of each iteration of the last ``fit``
        (hmmlearn's ``monitor_.history`` divided by the number of sequences)."""
        return [value / self._n_sequences for value in self.monitor_.history] if self.monitor_.history else []

    def _finish_fit(self, X: torch.Tensor, max_length: int) -> None:
        """After EM (or its initialization before SVI): the story's priors and sequence length."""
        self._set_prior(X)
        self._set_fitted(max_length=torch.tensor(max_length))

    # ----------------------------------------------------------------- hmmlearn methods
    def _posteriors(self, X: Any, lengths: Any, posteriors: bool) -> tuple[float, np.ndarray | None]:
        X = self._check_X(X)
        lengths = self._check_lengths(lengths, X.shape[0])
        with torch.no_grad():
            self._check()
            state = self._current()
            layout = kernels.make_layout(lengths, self.device, n_states=self.n_components)
            log_frame = self._log_frame(self._prepare(X, layout), state).view(*layout.mask.shape, -1)
            result = kernels.forward_backward(state["startprob"], state["transmat"], log_frame, layout,
                                              posteriors=posteriors)
        gamma = to_numpy(kernels.from_layout(result.gamma, layout)) if posteriors else None
        return float(result.log_likelihood.sum()), gamma

    def score(self, X: Any, lengths: Any = None) -> float:
        """Log-likelihood of ``X`` (summed over its sequences), in nats."""
        return self._posteriors(X, lengths, posteriors=False)[0]

    def score_samples(self, X: Any, lengths: Any = None) -> tuple[float, np.ndarray]:
        """``(log-likelihood of X, state posteriors (n_samples, n_components))``."""
        return self._posteriors(X, lengths, posteriors=True)

    def predict_proba(self, X: Any, lengths: Any = None) -> np.ndarray:
        """State posteriors of every sample, ``(n_samples, n_components)``."""
        return self.score_samples(X, lengths)[1]

    def decode(self, X: Any, lengths: Any = None, algorithm: str | None = None) -> tuple[float, np.ndarray]:
        """``(log-probability, state sequence)``: the Viterbi path (``"viterbi"``) or the most probable
        state of each step (``"map"``, whose score is hmmlearn's sum of the maximal posteriors)."""
        algorithm = algorithm or self.algorithm
        if algorithm not in ("viterbi", "map"):
            raise ValueError(f"Unknown decoder {algorithm!r}")
        if algorithm == "map":
            _, posteriors = self.score_samples(X, lengths)
            return float(posteriors.max(1).sum()), posteriors.argmax(1)
        X = self._check_X(X)
        lengths = self._check_lengths(lengths, X.shape[0])
        with torch.no_grad():
            self._check()
            state = self._current()
            layout = kernels.make_layout(lengths, self.device, chunk=max(lengths))
            log_frame = self._log_frame(self._prepare(X, layout), state).view(max(lengths), len(lengths), -1)
            log_prob, path = kernels.viterbi(state["startprob"].log(), state["transmat"].log(), log_frame,
                                             layout.mask.squeeze(1))
        path = kernels.from_layout(path.view(path.shape[0], 1, -1, 1), layout).squeeze(1)
        return float(log_prob.sum()), to_numpy(path)

    def predict(self, X: Any, lengths: Any = None) -> np.ndarray:
        """Most likely state sequence (with the decoder ``algorithm``)."""
        return self.decode(X, lengths)[1]

    def sample(self, n_samples: int = 1, random_state: Any = None,  # type: ignore[override]
               currstate: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(X, state_sequence)``: one sequence of ``n_samples`` steps, drawn as hmmlearn draws it."""
        with torch.no_grad():
            self._check()
        rng = check_random_state(self.random_state if random_state is None else random_state)
        startprob, transmat = self.startprob_, self.transmat_
        transmat_cdf = np.cumsum(transmat, axis=1)
        if self.emission == "categorical":
            emission_cdf = np.cumsum(self.emissionprob_, axis=1)

            def emit(state: int) -> list:
                return [(emission_cdf[state] > rng.rand()).argmax()]
        else:
            means, covars = self.means_, self.covars_

            def emit(state: int) -> np.ndarray:
                return rng.multivariate_normal(means[state], covars[state])
        if currstate is None:
            currstate = (np.cumsum(startprob) > rng.rand()).argmax()
        states, draws = [currstate], [emit(currstate)]
        for _ in range(n_samples - 1):
            currstate = (transmat_cdf[currstate] > rng.rand()).argmax()
            states.append(currstate)
            draws.append(emit(currstate))
        return np.atleast_2d(draws), np.array(states, dtype=int)

    def bic(self, X: Any, lengths: Any = None) -> float:
        """Bayesian information criterion (lower is better)."""
        n_params = sum(self._n_fit_scalars_per_param().values())
        return -2 * self.score(X, lengths) + n_params * math.log(len(X))

    def aic(self, X: Any, lengths: Any = None) -> float:
        """Akaike information criterion (lower is better)."""
        return -2 * self.score(X, lengths) + 2 * sum(self._n_fit_scalars_per_param().values())

    def fit_data(self, x: torch.Tensor) -> HMM:
        """EM on a padded batch ``(N, T, D)`` of sequences that all have length ``T``."""
        x = self._check_sequences(x)
        return self.fit(x.reshape(-1, x.shape[-1]), lengths=[x.shape[1]] * x.shape[0])
