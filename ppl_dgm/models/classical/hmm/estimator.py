"""Hidden Markov model: a drop-in for hmmlearn's GaussianHMM / CategoricalHMM (batched Baum-Welch
in torch) and a Pyro story with the hidden states summed out exactly."""

from __future__ import annotations

import logging
import math
from typing import Any, Literal

import numpy as np
import torch
from hmmlearn.base import ConvergenceMonitor
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state

from ppl_dgm.core import Capabilities
from ppl_dgm.infer.guides import GuideKind
from ppl_dgm.models.classical import gaussian
from ppl_dgm.models.classical.estimator import Estimator, to_numpy
from ppl_dgm.models.classical.hmm import checks, em, numerics, padding, story
from ppl_dgm.models.classical.hmm import inference as kernels
from ppl_dgm.models.classical.hmm.emission_mixture import GaussianMixtureEmission
from ppl_dgm.models.classical.hmm.emission_poisson import PoissonEmission
from ppl_dgm.models.classical.hmm.emissions import CategoricalEmission, Emission, GaussianEmission
from ppl_dgm.models.registry import register_model
from ppl_dgm.validation import check_tensor

_log = logging.getLogger(__name__)
EmissionName = Literal["gaussian", "categorical", "poisson", "gmm"]
EMISSIONS: dict[str, type[Emission]] = {"gaussian": GaussianEmission, "categorical": CategoricalEmission,
                                        "poisson": PoissonEmission, "gmm": GaussianMixtureEmission}
ROWS_PER_PASS = 2**22  # elements of the (draws, N, T, K, D) emission tensor evaluated at once in log_prob_at


def _parameter(name: str, doc: str) -> property:
    """A fitted or hand-set attribute: numpy out (the guide's point after SVI, else EM's state, which
    may be set one attribute at a time before ``fit`` as in hmmlearn), any array-like in."""
    return property(lambda self: to_numpy(self._public(name)), lambda self, value: self._assign(name, value),
                    doc=doc)


@register_model("hmm")
class HMM(Estimator, BaseEstimator):
    """Hidden Markov model; the arguments, methods and fitted attributes of hmmlearn's
    ``GaussianHMM`` (``emission="gaussian"``), ``CategoricalHMM`` (``"categorical"``), ``PoissonHMM``
    (``"poisson"``) and ``GMMHMM`` (``"gmm"``), with Baum-Welch run in torch over all sequences at
    once on ``device``. What a state emits is an `Emission` (`EMISSIONS`).

    As a Pyro story: ``startprob ~ Dirichlet(1)``, each row of ``transmat ~ Dirichlet(1)``, and
    the emission's prior: Gaussian (``means ~ N(m, 3 s)``, per-dimension ``scales ~ LogNormal``, and for
    full/tied covariances ``corr_chol ~ LKJ(1)``, the prior centred on the data as in `GMM`), the same
    per mixture component with ``weights ~ Dirichlet(1)`` (gmm), ``lambdas ~ Gamma`` (poisson), or
    rows of ``emissionprob ~ Dirichlet(1)`` (categorical). Each sequence ``x_n`` of shape
    ``(T, D)`` (categorical: ``(T, 1)`` symbol ids) is observed through ``DiscreteHMM``, which sums
    the hidden states out exactly; steps past ``lengths[n]`` are masked out. ``guide`` is a point
    mass at the parameters (``posterior="map"``) or a mean-field normal (``posterior="normal"``).

    Args (beyond hmmlearn's):
        emission: ``"gaussian"``, ``"categorical"``, ``"poisson"`` or ``"gmm"``.
        n_mix, weights_prior: GMMHMM's mixture size and Dirichlet prior (``"gmm"`` only).
        lambdas_prior, lambdas_weight: PoissonHMM's Gamma prior of the rates (``"poisson"`` only).
        params, init_params: hmmlearn's letters (``"stmc"`` / ``"ste"``); ``None`` means all.
        implementation: accepted for compatibility; both values run the same scaled algorithm,
            which neither underflows nor needs logarithms in its inner loop.
        posterior: the guide used by :func:`ppl_dgm.fit`.
        device, dtype: where and in which floating dtype the state lives and EM runs.
    """

    max_plate_nesting = 1
    __repr__ = BaseEstimator.__repr__  # hmmlearn's "GaussianHMM(n_components=3)", not the torch module tree

    def __init__(
        self,
        n_components: int = 1,
        *,
        emission: EmissionName = "gaussian",
        covariance_type: gaussian.CovarianceType = "diag",
        min_covar: float = 1e-3,
        startprob_prior: Any = 1.0,
        transmat_prior: Any = 1.0,
        means_prior: Any = 0,
        means_weight: Any = 0,
        covars_prior: Any = 1e-2,
        covars_weight: Any = 1,
        emissionprob_prior: Any = 1.0,
        n_mix: int = 1,
        weights_prior: Any = 1.0,
        lambdas_prior: Any = 0.0,
        lambdas_weight: Any = 0.0,
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
        self.n_mix, self.weights_prior, self.lambdas_prior, self.lambdas_weight = (
            n_mix, weights_prior, lambdas_prior, lambdas_weight)
        self.n_features, self.algorithm, self.random_state = n_features, algorithm, random_state
        self.n_iter, self.tol, self.verbose = n_iter, tol, verbose
        self.params, self.init_params, self.implementation = params, init_params, implementation
        self.posterior = posterior
        self._check_parameters()
        self._make_guide(posterior)
        self.monitor_ = ConvergenceMonitor(tol, n_iter, verbose)
        self._n_sequences = 1

    def _check_parameters(self) -> None:
        checks.check_hyperparameters(self, EMISSIONS)

    # ----------------------------------------------------------------- state
    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        return Capabilities(likelihood="exact", data=self._emission.data, discrete_latents=True, sequential=True)

    @property
    def _emission(self) -> Emission:
        """The emission model at the current hyperparameters (and the story's priors, once set)."""
        return EMISSIONS[self.emission].from_hmm(self)

    @property
    def _state_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("startprob", "transmat", *self._emission.state_names)

    @property
    def _letters(self) -> str:
        return "st" + self._emission.letters

    def _updates(self) -> str:
        return self._letters if self.params is None else self.params

    def _get(self, name: str) -> torch.Tensor:
        """The state ``name``: the guide's point after SVI, else EM's (or the user's) value; hmmlearn's
        ``AttributeError`` when it was never set."""
        if not bool(self.uses_guide_point) and name in self._buffers:
            return self._buffers[name]
        if bool(self.uses_guide_point):
            return self._current()[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}_'; fit the model or set "
                             f"{name}_ first")

    def _width(self) -> int | None:
        """``n_features`` as the stored emission parameters say (else the attribute)."""
        first = self._emission.state_names[0]
        return int(self._buffers[first].shape[-1]) if first in self._buffers else self.n_features

    def _public(self, name: str) -> torch.Tensor:
        """The attribute ``name + "_"`` in hmmlearn's shape (e.g. GaussianHMM's full ``covars_``)."""
        return self._emission.public(name, self._get(name), self.n_components, self._width())

    def _assign(self, name: str, value: Any) -> None:
        self._materialize()
        array = self._emission.assign(name, np.array(value, dtype=np.float64), self.n_components)
        self._set_fitted(**{name: torch.as_tensor(array, dtype=self.dtype, device=self.device)})

    startprob_ = _parameter("startprob", "Initial state distribution ``(n_components,)``.")
    transmat_ = _parameter("transmat", "Transition probabilities ``(n_components, n_components)`` (rows: from-state).")
    means_ = _parameter("means", "Gaussian means ``(n_components, n_features)`` (GMMHMM: ``(n_components, n_mix, "
                        "n_features)``).")
    covars_ = _parameter("covars", "Covariances: GaussianHMM's full matrices ``(n_components, n_features, "
                         "n_features)`` (set in the covariance type's shape); GMMHMM's in its own shapes.")
    emissionprob_ = _parameter("emissionprob", "Symbol probabilities ``(n_components, n_features)``.")
    lambdas_ = _parameter("lambdas", "Poisson rates ``(n_components, n_features)``.")
    weights_ = _parameter("weights", "Mixture weights ``(n_components, n_mix)``.")

    @property
    def event_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        if "max_length" not in self._buffers or self.n_features is None:
            return ()
        return (int(self.max_length), int(self._emission.event_dim_size or self.n_features))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load a saved state; ``n_features`` (set by ``fit``, not a constructor argument of every
        hmmlearn class, so not always in the saved configuration) is read off the emission parameters."""
        loaded = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if self.n_features is None:
            self.n_features = self._width()
        return loaded

    # ----------------------------------------------------------------- initialization (hmmlearn's _init)
    def _needs_init(self, code: str, name: str) -> bool:
        init_params = self._letters if self.init_params is None else self.init_params
        if code in init_params and name in self._buffers:
            _log.warning("Even though the %r attribute is set, it will be overwritten during initialization "
                         "because 'init_params' contains %r", name + "_", code)
        return code in init_params or name not in self._buffers

    def _n_fit_scalars_per_param(self) -> dict[str, int]:
        k, d = self.n_components, int(self.n_features)
        return {"s": k - 1, "t": k * (k - 1), **self._emission.n_scalars(k, d)}

    def _init(self, X: torch.Tensor) -> None:
        k = self.n_components
        new: dict[str, Any] = {}
        random_state = check_random_state(self.random_state)
        if self._needs_init("s", "startprob"):
            new["startprob"] = random_state.dirichlet(np.full(k, 1.0 / k))
        if self._needs_init("t", "transmat"):
            new["transmat"] = random_state.dirichlet(np.full(k, 1.0 / k), size=k)
        emission = self._emission
        needed = {name for name, code in zip(emission.state_names, emission.letters, strict=True)
                  if self._needs_init(code, name)}
        new.update(emission.initial_state(X, k, self.random_state, needed))
        for name, value in new.items():
            self._assign(name, value)
        scalars = sum(self._n_fit_scalars_per_param().get(p, 0) for p in self._updates())
        if X.numel() < scalars:
            _log.warning("Fitting a model with %d free scalar parameters with only %d data points will result in "
                         "a degenerate solution.", scalars, X.numel())

    # ----------------------------------------------------------------- emissions
    def _features(self, X: torch.Tensor, layout: padding.Layout) -> torch.Tensor:
        """The emission's features of the rows ``X`` in the kernels' layout, flattened (zeros at padded steps)."""
        rows = X.unsqueeze(1) if X.dim() == 1 else X  # categorical rows are symbol ids
        padded = padding.to_layout(rows, layout)
        return self._emission.features(padded.view(-1, padded.shape[-1]))

    def _log_frame(self, features: torch.Tensor, state: dict[str, torch.Tensor], layout: padding.Layout
                   ) -> torch.Tensor:
        """Emission log-probabilities ``log p(x_t | state k)`` in the kernels' layout ``(*layout, K)``.
        With ``implementation="scaling"``, hmmlearn's ``ValueError`` where a step's probabilities all
        underflow (hmmlearn's scaled forward pass works with them unlogged)."""
        log_frame = self._emission.log_density(features, state).view(*layout.mask.shape, -1)
        if self.implementation == "scaling" and bool((log_frame.amax(-1).exp() == 0)[layout.mask].any()):
            raise ValueError("Forward pass failed with underflow; consider using implementation='log' instead")
        return log_frame

    def _frame(self, X: torch.Tensor, lengths: list[int], chunk: int | None = None
               ) -> tuple[dict[str, torch.Tensor], padding.Layout, torch.Tensor]:
        """The fitted state, the layout of sequences of these lengths, and the emission log-probabilities
        of the rows ``X`` in it (for scoring and decoding, not fitting)."""
        checks.check_state(self)
        state = self._current()
        layout = padding.make_layout(lengths, self.device, chunk=chunk, n_states=self.n_components)
        return state, layout, self._log_frame(self._features(X, layout), state, layout)

    # ----------------------------------------------------------------- EM
    def fit(self, X: Any, lengths: Any = None) -> HMM:
        """Estimate the parameters with Baum-Welch (hmmlearn's initialization, updates, priors and
        convergence monitor), over all sequences at once."""
        self._check_parameters()
        X = checks.check_rows(self, X, fitting=True)
        lengths = checks.check_lengths(lengths, X.shape[0])
        if X.shape[0] < self.n_components:
            raise ValueError(f"Expected n_samples >= n_components but got n_components = {self.n_components}, "
                             f"n_samples = {X.shape[0]}")
        with torch.no_grad():
            self._materialize()
            self._init(X)
            em.baum_welch(self, X, lengths)
            self._finish_fit(X, max(lengths))
        self._n_sequences = len(lengths)
        return self

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
        X = checks.check_rows(self, X)
        lengths = checks.check_lengths(lengths, X.shape[0])
        with torch.no_grad():
            state, layout, log_frame = self._frame(X, lengths)
            result = kernels.forward_backward(state["startprob"], state["transmat"], log_frame, layout,
                                              posteriors=posteriors)
        gamma = to_numpy(padding.from_layout(result.gamma, layout)) if posteriors else None
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
        X = checks.check_rows(self, X)
        lengths = checks.check_lengths(lengths, X.shape[0])
        with torch.no_grad():
            state, layout, log_frame = self._frame(X, lengths, chunk=max(lengths))
            log_prob, path = kernels.viterbi(state["startprob"].log(), state["transmat"].log(),
                                             log_frame.view(max(lengths), len(lengths), -1), layout.mask.squeeze(1))
        path = padding.from_layout(path.view(path.shape[0], 1, -1, 1), layout).squeeze(1)
        return float(log_prob.sum()), to_numpy(path)

    def predict(self, X: Any, lengths: Any = None) -> np.ndarray:
        """Most likely state sequence (with the decoder ``algorithm``)."""
        return self.decode(X, lengths)[1]

    def sample(self, n_samples: int = 1, random_state: Any = None,  # type: ignore[override]
               currstate: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(X, state_sequence)``: one sequence of ``n_samples`` steps, drawn as hmmlearn draws it."""
        with torch.no_grad():
            checks.check_state(self)
        rng = check_random_state(self.random_state if random_state is None else random_state)
        startprob, transmat = self.startprob_, self.transmat_
        transmat_cdf = np.cumsum(transmat, axis=1)
        emission = self._emission
        state = {name: to_numpy(self._get(name)) for name in emission.state_names}
        if currstate is None:
            currstate = (np.cumsum(startprob) > rng.rand()).argmax()
        states, draws = [currstate], [emission.draw(state, currstate, rng)]
        for _ in range(n_samples - 1):
            currstate = (transmat_cdf[currstate] > rng.rand()).argmax()
            states.append(currstate)
            draws.append(emission.draw(state, currstate, rng))
        return np.atleast_2d(draws), np.array(states, dtype=int)

    def bic(self, X: Any, lengths: Any = None) -> float:
        """Bayesian information criterion (lower is better)."""
        n_params = sum(self._n_fit_scalars_per_param().values())
        return -2 * self.score(X, lengths) + n_params * math.log(len(X))

    def aic(self, X: Any, lengths: Any = None) -> float:
        """Akaike information criterion (lower is better)."""
        return -2 * self.score(X, lengths) + 2 * sum(self._n_fit_scalars_per_param().values())

    # ----------------------------------------------------------------- the story (ppl_dgm.fit, NUTS, ArviZ)
    def _check_sequences(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x")
        width = self._emission.event_dim_size or self.n_features
        if x.dim() == 2:
            raise ValueError(f"x holds rows {tuple(x.shape)} but an HMM needs sequences (N, T, {width or 'D'}); pass "
                             "them stacked (the digits as sequences are --data digits_sequence: rows of 8 steps of "
                             "8 pixels), or call fit(X, lengths) with the rows of all sequences")
        if x.dim() != 3 or (width is not None and x.shape[2] != width):
            raise ValueError(f"x must hold padded sequences of shape (N, T, {width or 'D'}), got {tuple(x.shape)}; "
                             "stack the sequences, padded to one length (pass lengths)")
        self._emission.check_values(x, self.n_features)
        return x.to(self.device, self.dtype)

    def check_data(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` holds padded sequences ``(N, T, D)`` the model can score."""
        self._check_sequences(x)

    def log_prob(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Exact marginal ``log p(x_n)`` of each padded sequence, hidden states summed out (nats), ``(N,)``."""
        x = self._check_sequences(x)
        n, steps = x.shape[:2]
        mask = story.sequence_mask(lengths, n, steps, self.device)
        if torch.is_grad_enabled():  # differentiable, at the fitted state (the guide's point after SVI)
            state = {name: value.unsqueeze(0) for name, value in self._current().items()}
            return story.marginal_log_likelihood(self._emission, state, x, mask)[0]
        rows = x[mask] if mask is not None else x.reshape(-1, x.shape[-1])
        state, layout, log_frame = self._frame(rows, [steps] * n if mask is None else mask.sum(1).tolist())
        return kernels.forward_backward(state["startprob"], state["transmat"], log_frame, layout,
                                        posteriors=False).log_likelihood

    def log_prob_at(self, x: torch.Tensor, sites: dict[str, torch.Tensor],
                    lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Marginal ``log p(x_n | params)`` for a batch of parameter draws: ``(S, N)`` from sites ``(S, ...)``."""
        x = x.to(self.device, self.dtype)
        mask = story.sequence_mask(lengths, x.shape[0], x.shape[1], self.device)
        draws, emission = sites["startprob"].shape[0], self._emission
        per_pass = max(1, ROWS_PER_PASS // max(1, x.numel() * self.n_components))
        return torch.cat([
            story.marginal_log_likelihood(emission, self._state_from_sites(
                {name: value[start : start + per_pass] for name, value in sites.items()}), x, mask)
            for start in range(0, draws, per_pass)])

    @property
    def _story_buffers(self) -> tuple[str, ...]:
        return ("max_length", *self._emission.prior_buffers)

    def _set_prior(self, X: torch.Tensor) -> None:
        if self._emission.prior_buffers:  # e.g. categorical emissions have flat Dirichlet priors
            super()._set_prior(X)

    def _story_rows(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The steps of the padded sequences ``x`` (padding left out) as rows for EM."""
        x = self._check_sequences(x)
        mask = story.sequence_mask(lengths, x.shape[0], x.shape[1], self.device)
        return checks.check_rows(self, x[mask] if mask is not None else x.reshape(-1, x.shape[-1]), fitting=True)

    def _initialize_story(self, rows: torch.Tensor, x: torch.Tensor) -> None:
        if not self._is_fitted():
            if rows.shape[0] < self.n_components:
                raise ValueError(f"Expected n_samples >= n_components but got n_components = "
                                 f"{self.n_components}, n_samples = {rows.shape[0]}")
            self._init(rows)
        checks.check_state(self)
        self._finish_fit(rows, x.shape[1])

    def _sites_from_state(self) -> dict[str, torch.Tensor]:
        """The story's site values at the EM state (probabilities floored away from zero, so that the
        guide's unconstrained parameters stay finite)."""
        sites = {name: numerics.floored_rows(self._buffers[name]) for name in ("startprob", "transmat")}
        return {**sites, **self._emission.sites_from_state(self._buffers)}

    def _state_from_sites(self, sites: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """EM's parameters (covariances in hmmlearn's shapes) at site values (leading batch dims allowed)."""
        return {"startprob": sites["startprob"], "transmat": sites["transmat"],
                **self._emission.state_from_sites(sites)}

    def model(self, x: torch.Tensor | None = None, n: int | None = None,
              lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The story (`ppl_dgm.models.classical.hmm.story`): global parameters are sample sites, the
        hidden states are summed out by ``DiscreteHMM``."""
        self._ensure_initialized(x, lengths=lengths)
        d = int(self._emission.event_dim_size or self.n_features)
        state = story.sample_parameters(self._emission, self, self.n_components, int(self.n_features))
        steps = x.shape[1] if x is not None else (int(lengths.max()) if lengths is not None else int(self.max_length))
        if x is not None:
            x = x.to(self.device, self.dtype)
        mask = story.sequence_mask(lengths, x.shape[0], steps, self.device) if x is not None else None
        return story.observe(self._emission, state, d, x, n, steps, mask)

    def fit_data(self, x: torch.Tensor) -> HMM:
        """EM on a padded batch ``(N, T, D)`` of sequences that all have length ``T``."""
        x = self._check_sequences(x)
        return self.fit(x.reshape(-1, x.shape[-1]), lengths=[x.shape[1]] * x.shape[0])
