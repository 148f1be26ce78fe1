"""Gaussian-mixture emissions for the HMM package: each hidden state emits from its own mixture of
``M`` Gaussians, with hmmlearn 0.3.3's ``GMMHMM`` arithmetic (densities, MAP M-step, KMeans init)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from sklearn.cluster import KMeans

from ppl_dgm.models.classical import gaussian
from ppl_dgm.models.classical.hmm import numerics
from ppl_dgm.models.classical.hmm.emissions import Emission, GaussianEmission, State, _as_tensor


@dataclass
class GaussianMixtureEmission(Emission):
    """State ``k`` emits ``x ~ sum_m w_km N(mu_km, Sigma_km)`` (hmmlearn's ``GMMHMM``).

    Parameters in hmmlearn's shapes: ``weights`` ``(K, M)``, ``means`` ``(K, M, D)``, ``covars``
    ``(K, M)`` (spherical), ``(K, M, D)`` (diag), ``(K, M, D, D)`` (full) or ``(K, D, D)`` (tied: one
    matrix per state, shared by its ``M`` components). The M-step is hmmlearn's MAP update: Dirichlet
    prior on the weights, Normal on the means, inverse Gamma (diag, spherical) or inverse Wishart (full,
    tied) on the covariances, with the covariances' statistics centred on the previous means.

    Args:
        n_mix: components per state ``M``.
        covariance_type: ``"spherical"``, ``"diag"``, ``"full"`` or ``"tied"``.
        min_covar: added to the diagonal of the data covariance that initializes the covariances.
        weights_prior: Dirichlet concentration, broadcastable to ``(K, M)``.
        means_prior, means_weight: mean ``(K, M, D)`` and precision ``(K, M)`` of the means' prior.
        covars_prior, covars_weight: the covariances' prior (``None``: hmmlearn's defaults per type).
        prior_mean, prior_spread: the story's location and scale of the data, ``(D,)`` each.
    """

    n_mix: int = 1
    covariance_type: str = "diag"
    min_covar: float = 1e-3
    weights_prior: Any = 1.0
    means_prior: Any = 0.0
    means_weight: Any = 0.0
    covars_prior: Any = None
    covars_weight: Any = None
    prior_mean: torch.Tensor | None = None
    prior_spread: torch.Tensor | None = None
    letters = "mcw"
    state_names = ("means", "covars", "weights")
    event_dim_size = None
    prior_buffers = ("prior_mean", "prior_spread")

    def __post_init__(self) -> None:
        gaussian.check_covariance_type(self.covariance_type)

    @classmethod
    def from_hmm(cls, hmm: Any) -> GaussianMixtureEmission:
        return cls(hmm.n_mix, hmm.covariance_type, hmm.min_covar, hmm.weights_prior, hmm.means_prior,
                   hmm.means_weight, hmm.covars_prior, hmm.covars_weight, hmm._buffers.get("prior_mean"),
                   hmm._buffers.get("prior_spread"))

    def check_state(self, state: State, k: int, n_features: int | None) -> int:
        """hmmlearn's ``GMMHMM._check``: shapes, weights summing to one, valid covariances."""
        weights, means, covars, m = state["weights"], state["means"], state["covars"], self.n_mix
        if tuple(weights.shape) != (k, m):
            raise ValueError(f"weights_ must have shape (n_components, n_mix) = ({k}, {m}), "
                             f"actual shape: {tuple(weights.shape)}; pass one weight per state and component")
        numerics.check_sum_1("weights_", weights)
        d = int(means.shape[-1]) if n_features is None else n_features
        if tuple(means.shape) != (k, m, d):
            raise ValueError(f"means_ must have shape (n_components, n_mix, n_features) = ({k}, {m}, {d}), "
                             f"actual shape: {tuple(means.shape)}; pass one mean per state and component")
        shape = {"spherical": (k, m), "tied": (k, d, d), "diag": (k, m, d), "full": (k, m, d, d)}[self.covariance_type]
        if tuple(covars.shape) != shape:
            raise ValueError(f"{self.covariance_type!r} mixture covars must have shape {shape}, actual shape: "
                             f"{tuple(covars.shape)}; pass covariances in hmmlearn's GMMHMM layout")
        if self.covariance_type in ("spherical", "diag"):
            if bool((covars < 0).any()):
                raise ValueError(f"{self.covariance_type!r} mixture covars must be non-negative; pass variances >= 0")
            return d
        matrices = covars.reshape(-1, d, d)
        if not torch.allclose(matrices, matrices.mT) or bool((torch.linalg.eigvalsh(matrices)[:, 0] < 0).any()):
            raise ValueError(f"{self.covariance_type!r} mixture covars must be symmetric and positive "
                             "semi-definite; pass covariance matrices")
        return d

    def draw(self, state: dict[str, np.ndarray], k: int, rng: np.random.RandomState) -> np.ndarray:
        """A component from ``weights[k]``, then its Gaussian, with hmmlearn's calls on ``rng``."""
        component = rng.choice(self.n_mix, p=state["weights"][k])
        covars, d = state["covars"], state["means"].shape[-1]
        cov = {"tied": lambda: covars[k], "full": lambda: covars[k, component],
               "diag": lambda: np.diag(covars[k, component]),
               "spherical": lambda: covars[k, component] * np.eye(d)}[self.covariance_type]()
        return rng.multivariate_normal(state["means"][k, component], cov)

    @property
    def _components(self) -> GaussianEmission:
        """The ``K * M`` components as a `GaussianEmission` (tied covariances repeated per component)."""
        return GaussianEmission("full" if self.covariance_type == "tied" else self.covariance_type)

    def _flat(self, state: State) -> State:
        """Means and covariances of the ``K * M`` components, leading batch dims kept."""
        means, covars = state["means"], state["covars"]
        batch, (k, m, d) = means.shape[:-3], means.shape[-3:]
        if self.covariance_type == "tied":
            covars = covars.unsqueeze(-3).expand(*batch, k, m, d, d)
        event = {"spherical": 0, "diag": 1, "full": 2, "tied": 2}[self.covariance_type]
        return {"means": means.reshape(*batch, k * m, d),
                "covars": covars.reshape(*batch, k * m, *covars.shape[covars.dim() - event:])}

    def _log_weighted(self, features: torch.Tensor, state: State) -> torch.Tensor:
        """``log w_km + log N(x | mu_km, Sigma_km)``: ``(*B, ..., K, M)``."""
        weights = state["weights"]
        batch, (k, m) = weights.shape[:-2], weights.shape[-2:]
        density = self._components.log_density(features, self._flat(state))
        log_weights = weights.log().view(*batch, *[1] * (features.dim() - 1), k, m)
        return density.view(*density.shape[:-1], k, m) + log_weights

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The components' `GaussianEmission.features`: ``[x, x^2, 1]`` (diag/spherical) or ``[x, 1]``."""
        return self._components.features(x)

    def log_density(self, features: torch.Tensor, state: State) -> torch.Tensor:
        return torch.logsumexp(self._log_weighted(features, state), -1)

    def _covar_priors(self, d: int) -> tuple[Any, Any]:
        """hmmlearn's ``_init_covar_priors``: the covariances' prior, defaults filled in per type."""
        m = self.n_mix
        prior, weight = {"full": (0.0, -(1.0 + d + 1.0)), "tied": (0.0, -(m + d + 1.0)),
                         "diag": (-1.5, 0.0), "spherical": (-(m + 2.0) / 2.0, 0.0)}[self.covariance_type]
        return (prior if self.covars_prior is None else self.covars_prior,
                weight if self.covars_weight is None else self.covars_weight)

    def m_step(self, gamma: torch.Tensor, features: torch.Tensor, state: State, updates: str) -> State:
        """hmmlearn's ``_accumulate_sufficient_statistics`` + ``_do_mstep`` of ``GMMHMM`` (Dirichlet, Normal
        and inverse Gamma/Wishart priors); ``gamma``: state posteriors ``(rows, K)``."""
        if not set("mcw") & set(updates):
            return {}
        means, weights = state["means"], state["weights"]
        k, m, d = means.shape
        post_mix = torch.softmax(self._log_weighted(features, state), -1)  # within-state responsibilities
        post_comp_mix = (gamma.unsqueeze(-1) * post_mix).reshape(-1, k * m)  # (rows, K*M)
        sums = post_comp_mix.T @ features  # [sum r x, (sum r x^2,) sum r] per component
        post_mix_sum, obs = sums[:, -1].view(k, m), sums[:, :d].view(k, m, d)
        new: State = {}
        if "w" in updates:
            alphas_minus_one = torch.broadcast_to(_as_tensor(self.weights_prior, gamma) - 1, (k, m))
            weights = new["weights"] = ((post_mix_sum + alphas_minus_one)
                                        / (gamma.sum(0) + alphas_minus_one.sum(1))[:, None])
        means_prior = torch.broadcast_to(_as_tensor(self.means_prior, gamma), (k, m, d))
        means_weight = torch.broadcast_to(_as_tensor(self.means_weight, gamma), (k, m))
        if "m" in updates:
            m_n = means_weight[..., None] * means_prior + obs
            m_d = post_mix_sum + means_weight
            m_d = torch.where((weights == 0) & (m_n == 0).all(-1), torch.ones_like(m_d), m_d)  # unused components
            new["means"] = m_n / m_d[..., None]
        if "c" in updates:
            if self.covariance_type in ("diag", "spherical"):
                second = sums[:, d : 2 * d].view(k, m, d)
            else:
                outer = (features[:, :d, None] * features[:, None, :d]).view(-1, d * d)
                second = (post_comp_mix.T @ outer).view(k, m, d, d)
            new["covars"] = self._covariances(second, obs, post_mix_sum, means, new.get("means", means),
                                              means_prior, means_weight, gamma.sum(0))
        return new

    def _covariances(self, second: torch.Tensor, obs: torch.Tensor, post_mix_sum: torch.Tensor, old: torch.Tensor,
                     means: torch.Tensor, means_prior: torch.Tensor, means_weight: torch.Tensor,
                     post_sum: torch.Tensor) -> torch.Tensor:
        """hmmlearn's covariance update from the responsibility-weighted second moments ``second`` (``(K, M, D)``
        of squares, or ``(K, M, D, D)`` of outer products), sums ``obs`` and counts around the previous means
        ``old``, with the prior centred on the new ``means``."""
        k, m, d = means.shape
        covars_prior, covars_weight = (_as_tensor(value, means) for value in self._covar_priors(d))
        centered = means - means_prior
        if self.covariance_type in ("diag", "spherical"):
            c_n = second - 2 * old * obs + old**2 * post_mix_sum[..., None]  # sum r (x - old)^2
            prior_n = means_weight[..., None] * centered**2
            if self.covariance_type == "spherical":
                c_n, prior_n = c_n.sum(-1), prior_n.sum(-1)
                c_d = d * (post_mix_sum + 1) + 2 * (covars_prior + 1)
            else:
                c_d = post_mix_sum[..., None] + 1 + 2 * (covars_prior + 1)
            return (prior_n + 2 * covars_weight + c_n) / c_d
        outer_obs = obs.unsqueeze(-1) * old.unsqueeze(-2)
        c_n = second - outer_obs - outer_obs.mT + old.unsqueeze(-1) * old.unsqueeze(-2) * post_mix_sum[..., None, None]
        prior_n = means_weight[..., None, None] * centered.unsqueeze(-1) * centered.unsqueeze(-2)
        psis_t = covars_prior.expand(k, m, d, d) if self.covariance_type == "full" else covars_prior.expand(k, d, d)
        if self.covariance_type == "full":
            c_d = post_mix_sum + 1 + covars_weight + d + 1
            return (psis_t.mT + prior_n + c_n) / c_d[..., None, None]
        c_d = post_sum + m + torch.broadcast_to(covars_weight, (k,)) + d + 1
        return (psis_t.mT + prior_n.sum(1) + c_n.sum(1)) / c_d[:, None, None]

    def initial_state(self, X: torch.Tensor, k: int, random_state: Any, needed: set[str]) -> dict[str, np.ndarray]:
        """hmmlearn's init: KMeans into ``K`` clusters, then KMeans into ``M`` within each (a cluster with fewer
        than ``M`` rows: ``M`` draws around the centroid of the centres, from numpy's global generator as in
        hmmlearn); weights ``1/M``; every covariance the data's, plus ``min_covar`` on the diagonal."""
        rows, m = X.detach().cpu().numpy(), self.n_mix
        d = rows.shape[1]
        covariance: np.ndarray | None = None

        def data_covariance() -> np.ndarray:
            return np.atleast_2d(np.cov(rows.T)) + self.min_covar * np.eye(d)

        main = KMeans(n_clusters=k, random_state=random_state, n_init=10)
        labels = main.fit_predict(rows)
        centroid = main.cluster_centers_.mean(0)
        means = []
        for label in range(k):  # KMeans runs even when the means are kept, so that random_state advances as in hmmlearn
            cluster = rows[labels == label]
            if cluster.shape[0] >= m:
                means.append(KMeans(n_clusters=m, random_state=random_state, n_init=10).fit(cluster).cluster_centers_)
            else:
                covariance = data_covariance() if covariance is None else covariance
                means.append(np.random.multivariate_normal(centroid, cov=covariance, size=m))
        new: dict[str, np.ndarray] = {}
        if "weights" in needed:
            new["weights"] = np.full((k, m), 1 / m)
        if "means" in needed:
            new["means"] = np.stack(means)
        if "covars" in needed:
            cov = data_covariance() if covariance is None else covariance
            new["covars"] = {"tied": np.tile(cov, (k, 1, 1)), "full": np.tile(cov, (k, m, 1, 1)),
                             "diag": np.tile(np.diag(cov), (k, m, 1)),
                             "spherical": np.full((k, m), cov.mean())}[self.covariance_type]
        return new

    def n_scalars(self, k: int, d: int) -> dict[str, int]:
        """hmmlearn's counts, including its ``"w": M - 1`` (not ``K (M - 1)``)."""
        tied = self.covariance_type == "tied"
        covariance = gaussian.n_covariance_parameters("full" if tied else self.covariance_type,
                                                      k if tied else k * self.n_mix, d)
        return {"m": k * self.n_mix * d, "c": covariance, "w": self.n_mix - 1}

    def sample_state(self, model: Any, k: int, d: int) -> State:
        """Per state: ``weights ~ Dirichlet(1)``, and `gaussian.sample_component_sites` of its ``M`` components
        (a tied state's one covariance as the GMM's tied one)."""
        if self.prior_mean is None or self.prior_spread is None:
            raise ValueError("the mixture emission's story needs prior_mean and prior_spread; fit the model first")
        ones = torch.ones(self.n_mix, dtype=self.prior_mean.dtype, device=self.prior_mean.device)
        with pyro.plate("hmm_states", k):
            weights = pyro.sample("weights", dist.Dirichlet(ones))
            sites = gaussian.sample_component_sites(self.covariance_type, self.n_mix, self.prior_mean,
                                                    self.prior_spread)
        return self.state_from_sites({"weights": weights, **sites})

    def sites_from_state(self, state: State) -> State:
        """Weights floored away from zero (`numerics.floored_rows`) and covariances as the densities use them
        (`GaussianEmission.sites_from_state`, which reads any leading shape), as sites."""
        sites = self._components.sites_from_state({"means": state["means"], "covars": state["covars"]})
        return {"weights": numerics.floored_rows(state["weights"]), **sites}

    def state_from_sites(self, sites: State) -> State:
        return {"weights": sites["weights"], "means": sites["means"],
                "covars": gaussian.covariances_from_sites(sites, self.covariance_type)}

    def sample(self, state: State, sample_shape: torch.Size) -> torch.Tensor:
        """One draw per state ``(*sample_shape, K, D)``: a component from the weights, then its Gaussian."""
        k, m, d = state["means"].shape
        draws = self._components.sample(self._flat(state), sample_shape).view(*sample_shape, k, m, d)
        component = dist.Categorical(probs=state["weights"]).sample(sample_shape)  # (*sample_shape, K)
        return draws.gather(-2, component[..., None, None].expand(*sample_shape, k, 1, d)).squeeze(-2)
