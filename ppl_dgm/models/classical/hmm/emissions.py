"""What an HMM state emits, written once for EM and for the Pyro story: the emission parameters, their
log-densities (hmmlearn's arithmetic), the M-step, initialization, priors and sampling."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from sklearn.cluster import KMeans
from sklearn.utils import check_random_state

from ppl_dgm.models.classical import gaussian
from ppl_dgm.models.classical.hmm import numerics
from ppl_dgm.validation import check_integer_levels

State = dict[str, torch.Tensor]
"""Parameters by hmmlearn's names (``"means"``, ``"covars"``, ``"emissionprob"``), leading batch dims allowed."""


def _as_tensor(value: Any, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=like.dtype, device=like.device)


class Emission(ABC):
    """How each of the ``K`` hidden states emits an observation of ``D`` values.

    EM prepares its rows once with `features` and calls `log_density` every iteration; the story
    observes through `EmissionDistribution`, whose ``log_prob`` is the same `log_density`.
    """

    letters: str
    """hmmlearn's letters of the emission parameters in ``params`` / ``init_params``."""
    state_names: tuple[str, ...]
    """Names of the emission parameters in the estimator's state."""
    event_dim_size: int | None
    """Values per step the data hold (``None``: ``D``, read from the data)."""
    data: str = "continuous"
    """What the emitted values are (`Capabilities.data`): ``"continuous"`` or ``"discrete"``."""
    integer: bool = False
    """Whether EM's rows must be integers."""
    prior_buffers: tuple[str, ...] = ()
    """The data summaries (``"prior_mean"``, ``"prior_spread"``) the story's prior is centred on."""

    @classmethod
    @abstractmethod
    def from_hmm(cls, hmm: Any) -> Emission:
        """The emission at an estimator's hyperparameters (and its story's data summaries, once set)."""

    def check_rows(self, X: torch.Tensor, n_features: int | None) -> torch.Tensor:
        """hmmlearn's checks of EM's rows ``X`` ``(n, D)`` for a model of ``n_features`` (``None``: not
        known yet); the rows as the kernels take them."""
        if n_features is not None and X.shape[1] != n_features:
            raise ValueError(f"Unexpected number of dimensions, got {X.shape[1]} but expected {n_features}")
        return X

    def width(self, rows: torch.Tensor) -> int:
        """``n_features`` implied by checked rows."""
        return int(rows.shape[1])

    def check_values(self, x: torch.Tensor, n_features: int | None) -> None:
        """Raise ``ValueError`` unless the story can observe the padded sequences ``x`` ``(N, T, D)``."""
        return None

    @abstractmethod
    def check_state(self, state: State, k: int, n_features: int | None) -> int:
        """hmmlearn's ``_check`` of the emission parameters of ``k`` states; returns ``n_features``."""

    def public(self, name: str, value: torch.Tensor, k: int, d: int | None) -> torch.Tensor:
        """The attribute ``name + "_"`` as hmmlearn returns it, from the stored ``value``."""
        return value

    def assign(self, name: str, value: np.ndarray, k: int) -> np.ndarray:
        """The value to store for an attribute ``name + "_"`` set to ``value`` (checked as hmmlearn does)."""
        return value

    @abstractmethod
    def draw(self, state: dict[str, np.ndarray], k: int, rng: np.random.RandomState) -> np.ndarray:
        """One observation ``(D,)`` of state ``k`` drawn with ``rng`` as hmmlearn's
        ``_generate_sample_from_state`` draws it."""

    @abstractmethod
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What `log_density` and the M-step read of observations ``x`` ``(..., D)``."""

    @abstractmethod
    def log_density(self, features: torch.Tensor, state: State) -> torch.Tensor:
        """``log p(x | state k)`` in nats for every observation and state: ``(*B, ..., K)`` from features
        ``(..., F)`` and parameters with leading batch dims ``B``."""

    @abstractmethod
    def m_step(self, gamma: torch.Tensor, features: torch.Tensor, state: State, updates: str) -> State:
        """hmmlearn's M-step of the emission parameters (priors included) from state posteriors
        ``gamma`` ``(rows, K)`` of the rows whose features are ``(rows, F)``."""

    @abstractmethod
    def initial_state(self, X: torch.Tensor, k: int, random_state: Any, needed: set[str]) -> dict[str, np.ndarray]:
        """hmmlearn's initialization of the ``needed`` parameters from training rows ``X``."""

    @abstractmethod
    def n_scalars(self, k: int, d: int) -> dict[str, int]:
        """Free scalars of each emission parameter, by hmmlearn letter."""

    @abstractmethod
    def sample_state(self, model: Any, k: int, d: int) -> State:
        """The story's prior over the emission parameters (``pyro.sample`` statements), as a state."""

    @abstractmethod
    def sites_from_state(self, state: State) -> State:
        """The story's site values at an EM state."""

    @abstractmethod
    def state_from_sites(self, sites: State) -> State:
        """The EM state at site values (leading batch dims allowed)."""

    @abstractmethod
    def sample(self, state: State, sample_shape: torch.Size) -> torch.Tensor:
        """One draw from every state: ``(*sample_shape, K, D)``."""


@dataclass
class CategoricalEmission(Emission):
    """Each state emits one of ``n_features`` symbols (data ``(..., 1)`` holding symbol ids)."""

    n_features: int | None
    emissionprob_prior: Any = 1.0
    letters = "e"
    state_names = ("emissionprob",)
    event_dim_size = 1
    data = "discrete"
    integer = True

    @classmethod
    def from_hmm(cls, hmm: Any) -> CategoricalEmission:
        return cls(hmm.n_features, hmm.emissionprob_prior)

    def check_rows(self, X: torch.Tensor, n_features: int | None) -> torch.Tensor:
        """Symbol ids ``(n,)`` from rows ``(n, 1)``."""
        if X.shape[1] != 1:
            raise ValueError(f"categorical emissions need X of shape (n_samples, 1) holding symbol ids, "
                             f"got shape {tuple(X.shape)}")
        symbols, largest = X[:, 0], int(X.max())
        if n_features is not None and largest > n_features - 1:
            raise ValueError(f"Largest symbol is {largest} but the model only emits symbols up to {n_features - 1}")
        return symbols

    def width(self, rows: torch.Tensor) -> int:
        return int(rows.max()) + 1

    def check_values(self, x: torch.Tensor, n_features: int | None) -> None:
        check_integer_levels(x, n_features or int(x.max()) + 1)

    def check_state(self, state: State, k: int, n_features: int | None) -> int:
        emissionprob = state["emissionprob"]
        n_features = int(emissionprob.shape[-1]) if n_features is None and emissionprob.dim() == 2 else n_features
        if emissionprob.shape != (k, n_features):
            raise ValueError(f"emissionprob_ must have shape ({k}, {n_features})")
        numerics.check_sum_1("emissionprob_", emissionprob)
        return int(n_features)

    def draw(self, state: dict[str, np.ndarray], k: int, rng: np.random.RandomState) -> np.ndarray:
        return np.array([(np.cumsum(state["emissionprob"][k]) > rng.rand()).argmax()])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., 0].long()

    def log_density(self, features: torch.Tensor, state: State) -> torch.Tensor:
        log_emission = state["emissionprob"].log().transpose(-1, -2)  # (*B, F, K)
        return log_emission[..., features, :]

    def m_step(self, gamma: torch.Tensor, features: torch.Tensor, state: State, updates: str) -> State:
        if "e" not in updates:
            return {}
        k = gamma.shape[1]
        counts = gamma.new_zeros(state["emissionprob"].shape[1], k).index_add_(0, features, gamma).T
        counts = (_as_tensor(self.emissionprob_prior, gamma) - 1 + counts).clamp_min(0)
        return {"emissionprob": numerics.normalize_rows(counts)}

    def initial_state(self, X: torch.Tensor, k: int, random_state: Any, needed: set[str]) -> dict[str, np.ndarray]:
        if "emissionprob" not in needed:
            return {}
        emissionprob = check_random_state(random_state).rand(k, self.n_features)
        return {"emissionprob": emissionprob / emissionprob.sum(1, keepdims=True)}

    def n_scalars(self, k: int, d: int) -> dict[str, int]:
        return {"e": k * (d - 1)}

    def sample_state(self, model: Any, k: int, d: int) -> State:
        ones = torch.ones(k, d, dtype=model.dtype, device=model.device)
        return {"emissionprob": pyro.sample("emissionprob", dist.Dirichlet(ones).to_event(1))}

    def sites_from_state(self, state: State) -> State:
        return {"emissionprob": numerics.floored_rows(state["emissionprob"])}

    def state_from_sites(self, sites: State) -> State:
        return {"emissionprob": sites["emissionprob"]}

    def sample(self, state: State, sample_shape: torch.Size) -> torch.Tensor:
        return dist.Categorical(probs=state["emissionprob"]).sample(sample_shape).unsqueeze(-1)


@dataclass
class GaussianEmission(Emission):
    """Each state emits a ``D``-dimensional Gaussian with hmmlearn's covariance types and priors."""

    covariance_type: str
    min_covar: float = 1e-3
    means_prior: Any = 0
    means_weight: Any = 0
    covars_prior: Any = 1e-2
    covars_weight: Any = 1
    prior_mean: torch.Tensor | None = None
    prior_spread: torch.Tensor | None = None
    letters = "mc"
    state_names = ("means", "covars")
    event_dim_size = None
    prior_buffers = ("prior_mean", "prior_spread")

    def __post_init__(self) -> None:
        gaussian.check_covariance_type(self.covariance_type)

    @classmethod
    def from_hmm(cls, hmm: Any) -> GaussianEmission:
        return cls(hmm.covariance_type, hmm.min_covar, hmm.means_prior, hmm.means_weight, hmm.covars_prior,
                   hmm.covars_weight, hmm._buffers.get("prior_mean"), hmm._buffers.get("prior_spread"))

    def check_state(self, state: State, k: int, n_features: int | None) -> int:
        means = state["means"]
        if means.dim() != 2 or means.shape[0] != k or n_features not in (None, means.shape[1]):
            raise ValueError(f"means_ must have shape (n_components, n_features) = ({k}, {n_features or 'D'}), "
                             f"got {tuple(means.shape)}")
        shape = gaussian.covariance_shape(self.covariance_type, k, means.shape[1])
        if tuple(state["covars"].shape) != shape:
            raise ValueError(f"covars_ of a {self.covariance_type!r} model must have shape {shape}, "
                             f"got {tuple(state['covars'].shape)}")
        return int(means.shape[1])

    def public(self, name: str, value: torch.Tensor, k: int, d: int | None) -> torch.Tensor:
        """``covars_`` as full matrices ``(K, D, D)`` (hmmlearn's getter)."""
        if name != "covars":
            return value
        if self.covariance_type == "spherical":
            return value[:, None, None] * torch.eye(int(d), dtype=value.dtype, device=value.device)
        return gaussian.full_covariances(value, self.covariance_type, k).clone()

    def assign(self, name: str, value: np.ndarray, k: int) -> np.ndarray:
        """``covars_`` in the covariance type's shape (spherical: one variance per state in any nesting)."""
        if name != "covars":
            return value
        if self.covariance_type == "spherical" and value.ndim > 1 and value[0].size == 1:
            value = value.reshape(len(value))
        numerics.validate_covars(value, self.covariance_type, k)
        return value

    def draw(self, state: dict[str, np.ndarray], k: int, rng: np.random.RandomState) -> np.ndarray:
        covars, d = state["covars"], state["means"].shape[1]
        cov = {"spherical": lambda: covars[k] * np.eye(d), "diag": lambda: np.diag(covars[k]),
               "full": lambda: covars[k], "tied": lambda: covars}[self.covariance_type]()
        return rng.multivariate_normal(state["means"][k], cov)

    @property
    def _diagonal(self) -> bool:
        return self.covariance_type in ("diag", "spherical")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[x, x^2, 1]`` (diag/spherical: the densities and the M-step's sums are each one matrix
        product with it) or ``[x, 1]`` (full/tied)."""
        ones = torch.ones(*x.shape[:-1], 1, dtype=x.dtype, device=x.device)
        return torch.cat([x, x * x, ones] if self._diagonal else [x, ones], -1)

    def log_density(self, features: torch.Tensor, state: State) -> torch.Tensor:
        """hmmlearn's densities: variances floored at the smallest normal float; a failed Cholesky
        factor retried with ``1e-7`` on the diagonal."""
        means, covars = state["means"], state["covars"]
        batch, (k, d) = means.shape[:-2], means.shape[-2:]
        rows = features.reshape(-1, features.shape[-1])
        if self._diagonal:
            var = covars.clamp_min(torch.finfo(torch.float64).tiny)
            var = var if self.covariance_type == "diag" else var.unsqueeze(-1).expand(*batch, k, d)
            precision = var.reciprocal()
            constant = -0.5 * (d * math.log(2 * math.pi) + var.log().sum(-1) + (means * means * precision).sum(-1))
            weights = torch.cat([(means * precision).mT, -0.5 * precision.mT, constant.unsqueeze(-2)], -2)
            out = rows @ weights  # (*B, rows, K)
        else:
            prec_chol = numerics.precision_cholesky(covars)  # (*B, K, D, D), or (*B, D, D) when tied
            x, chols = rows[:, :-1], prec_chol.reshape(-1, *prec_chol.shape[len(batch):])
            out = torch.stack([gaussian.log_gaussian_prob(x, m, p, self.covariance_type)
                               for m, p in zip(means.reshape(-1, k, d), chols, strict=True)])
        return out.view(*batch, *features.shape[:-1], k)

    def m_step(self, gamma: torch.Tensor, features: torch.Tensor, state: State, updates: str) -> State:
        if "m" not in updates and "c" not in updates:
            return {}
        means, d = state["means"], state["means"].shape[1]
        sums = gamma.T @ features  # [sum g x, (sum g x^2,) sum g]
        obs, post = sums[:, :d], sums[:, -1]
        means_prior, means_weight = _as_tensor(self.means_prior, gamma), _as_tensor(self.means_weight, gamma)
        new: State = {}
        if "m" in updates:
            means = new["means"] = (means_weight * means_prior + obs) / (means_weight + post[:, None])
        if "c" in updates:
            second = sums[:, d : 2 * d] if self._diagonal else features[:, :d]
            new["covars"] = numerics.covariance_update(
                self.covariance_type, gamma, second, post, obs, means, means_prior, means_weight,
                _as_tensor(self.covars_prior, gamma), float(self.covars_weight))
        return new

    def initial_state(self, X: torch.Tensor, k: int, random_state: Any, needed: set[str]) -> dict[str, np.ndarray]:
        rows = X.detach().cpu().numpy()
        new: dict[str, np.ndarray] = {}
        if "means" in needed:
            new["means"] = KMeans(n_clusters=k, random_state=random_state, n_init=10).fit(rows).cluster_centers_
        if "covars" in needed:
            cov = np.atleast_2d(np.cov(rows.T)) + self.min_covar * np.eye(X.shape[1])
            new["covars"] = {"spherical": np.full(k, cov.mean()), "diag": np.tile(np.diag(cov), (k, 1)),
                             "full": np.tile(cov, (k, 1, 1)), "tied": cov}[self.covariance_type]
        return new

    def n_scalars(self, k: int, d: int) -> dict[str, int]:
        return {"m": k * d, "c": gaussian.n_covariance_parameters(self.covariance_type, k, d)}

    def sample_state(self, model: Any, k: int, d: int) -> State:
        sites = gaussian.sample_component_sites(self.covariance_type, k, self.prior_mean, self.prior_spread)
        return self.state_from_sites(sites)

    def sites_from_state(self, state: State) -> State:
        covars = state["covars"]  # as the densities use them: variances floored, singular matrices jittered
        if self._diagonal:
            covars = covars.clamp_min(torch.finfo(torch.float64).tiny)
        else:
            chol = numerics.cholesky(covars)
            covars = chol @ chol.mT
        return {"means": state["means"], **gaussian.sites_from_covariances(covars, self.covariance_type)}

    def state_from_sites(self, sites: State) -> State:
        return {"means": sites["means"], "covars": gaussian.covariances_from_sites(sites, self.covariance_type)}

    def sample(self, state: State, sample_shape: torch.Size) -> torch.Tensor:
        means, covars, covariance_type = state["means"], state["covars"], self.covariance_type
        k, d = means.shape[-2:]
        if covariance_type == "spherical":  # one variance per state, shared by the D dimensions
            covars, covariance_type = covars.unsqueeze(-1).expand(k, d), "diag"
        full = gaussian.full_covariances(covars, covariance_type, k)
        return dist.MultivariateNormal(means, scale_tril=numerics.cholesky(full)).sample(sample_shape)


class EmissionDistribution(dist.TorchDistribution):
    """The ``K`` states' emission distributions as one Pyro distribution (batch ``(K,)``, event ``(D,)``),
    for ``DiscreteHMM``; ``log_prob`` is the emission's `Emission.log_density`."""

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, emission: Emission, state: State, d: int, validate_args: bool | None = None) -> None:
        self.emission, self.state = emission, state
        k = next(iter(state.values())).shape[0]
        super().__init__(torch.Size([k]), torch.Size([d]), validate_args=validate_args)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``(..., K)`` for observations ``(..., K or 1, D)``, each scored under its own state."""
        density = self.emission.log_density(self.emission.features(value), self.state)  # (..., K or 1, K)
        if value.shape[-2] == 1:
            return density[..., 0, :]
        return density.diagonal(dim1=-2, dim2=-1)

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        return self.emission.sample(self.state, torch.Size(sample_shape)).to(next(iter(self.state.values())).dtype)
