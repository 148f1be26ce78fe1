"""Poisson emissions for the HMM package: each hidden state emits ``D`` independent counts, with
hmmlearn 0.3.3's ``PoissonHMM`` arithmetic (densities, Gamma-prior M-step, method-of-moments init)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from sklearn.utils import check_random_state

from ppl_dgm.models.classical.hmm.emissions import Emission, State, _as_tensor
from ppl_dgm.validation import check_integer_levels

PRIOR_MEAN_FLOOR = 1e-3
"""Smallest prior mean of a rate in the story, so that features that are always zero keep a proper prior."""
PRIOR_CONCENTRATION = 1.0
"""Gamma shape of the story's prior over each rate: an exponential prior whose mean is the data's mean."""


@dataclass
class PoissonEmission(Emission):
    """Each state ``k`` emits ``D`` independent Poisson counts with rates ``lambdas[k]`` (hmmlearn's ``PoissonHMM``).

    The M-step is hmmlearn's Gamma-prior update ``lambdas = (alpha + n ybar_k) / (beta + n)``, where ``ybar_k``
    is state ``k``'s posterior-weighted mean and ``n`` is, as in hmmlearn 0.3.3, the total posterior mass
    of all states (the number of rows), not state ``k``'s.

    Args:
        lambdas_prior: Gamma prior shape ``alpha`` (scalar or broadcastable to ``(K, D)``); 0: maximum likelihood.
        lambdas_weight: Gamma prior rate ``beta``, same shapes.
        prior_mean: the story's prior mean of every rate, ``(D,)`` (the data's per-feature mean).
    """

    lambdas_prior: Any = 0.0
    lambdas_weight: Any = 0.0
    prior_mean: torch.Tensor | None = None
    letters = "l"
    state_names = ("lambdas",)
    event_dim_size = None
    data = "discrete"
    prior_buffers = ("prior_mean",)

    @classmethod
    def from_hmm(cls, hmm: Any) -> PoissonEmission:
        return cls(hmm.lambdas_prior, hmm.lambdas_weight, hmm._buffers.get("prior_mean"))

    def check_rows(self, X: torch.Tensor, n_features: int | None) -> torch.Tensor:
        """The rows (in the model's dtype) once they are checked to be counts: non-negative integers."""
        check_integer_levels(X, int(X.max()) + 1, "X")
        return super().check_rows(X, n_features)

    def check_values(self, x: torch.Tensor, n_features: int | None) -> None:
        """Counts: non-negative integers."""
        check_integer_levels(x, int(x.max()) + 1)

    def check_state(self, state: State, k: int, n_features: int | None) -> int:
        """hmmlearn's check of ``lambdas_`` ``(K, D)`` (a vector is one row), plus non-negative rates."""
        lambdas = state["lambdas"]
        d = int(lambdas.shape[-1]) if n_features is None else n_features
        if lambdas.dim() > 2 or lambdas.reshape(-1, lambdas.shape[-1]).shape != (k, d):
            raise ValueError(f"lambdas_ must have shape (n_components, n_features) = ({k}, {d}), "
                             f"got {tuple(lambdas.shape)}; pass one rate per state and feature")
        if bool((lambdas < 0).any()):
            raise ValueError("lambdas_ must be non-negative; pass Poisson rates >= 0")
        return d

    def draw(self, state: dict[str, np.ndarray], k: int, rng: np.random.RandomState) -> np.ndarray:
        return rng.poisson(state["lambdas"][k])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[x, -sum_d log x_d!, 1]`` ``(..., D + 2)``: the densities are one matrix product with it
        (integer tensors are read as float64)."""
        x = x if x.is_floating_point() else x.double()
        ones = torch.ones(*x.shape[:-1], 1, dtype=x.dtype, device=x.device)
        return torch.cat([x, -torch.lgamma(x + 1).sum(-1, keepdim=True), ones], -1)

    def log_density(self, features: torch.Tensor, state: State) -> torch.Tensor:
        """``sum_d x_d log lambda_kd - lambda_kd - log x_d!`` (scipy's ``poisson.logpmf``; a zero rate
        gives a log-density of practically ``-inf`` at positive counts and 0 at zero counts)."""
        lambdas = state["lambdas"]
        batch, k = lambdas.shape[:-2], lambdas.shape[-2]
        log_rates = lambdas.log().clamp_min(torch.finfo(lambdas.dtype).min)  # 0 * log 0 = 0, as scipy's xlogy
        ones = torch.ones(*batch, 1, k, dtype=lambdas.dtype, device=lambdas.device)
        weights = torch.cat([log_rates.mT, ones, -lambdas.sum(-1).unsqueeze(-2)], -2)  # (*B, D + 2, K)
        out = features.reshape(-1, features.shape[-1]) @ weights
        return out.view(*batch, *features.shape[:-1], k)

    def m_step(self, gamma: torch.Tensor, features: torch.Tensor, state: State, updates: str) -> State:
        if "l" not in updates:
            return {}
        d = state["lambdas"].shape[-1]
        post, obs = gamma.sum(0), gamma.T @ features[:, :d]
        n = post.sum()
        alphas, betas = _as_tensor(self.lambdas_prior, gamma), _as_tensor(self.lambdas_weight, gamma)
        return {"lambdas": (alphas + n * (obs / post[:, None])) / (betas + n)}

    def initial_state(self, X: torch.Tensor, k: int, random_state: Any, needed: set[str]) -> dict[str, np.ndarray]:
        """hmmlearn's method of moments: every rate drawn from a Gamma with the mean and variance of all
        the values of ``X``, from ``check_random_state(random_state)``."""
        if "lambdas" not in needed:
            return {}
        rows = X.detach().cpu().numpy()
        mean, var = rows.mean(), rows.var()
        rng = check_random_state(random_state)
        return {"lambdas": rng.gamma(shape=mean**2 / var, scale=var / mean, size=(k, X.shape[1]))}

    def n_scalars(self, k: int, d: int) -> dict[str, int]:
        return {"l": k * d}

    def sample_state(self, model: Any, k: int, d: int) -> State:
        """``lambdas[k, d] ~ Gamma(1, 1 / m_d)``: exponential priors with the data's per-feature mean ``m_d``."""
        if self.prior_mean is None:
            raise ValueError("the Poisson emission's story needs prior_mean; fit the model on data first")
        mean = self.prior_mean.clamp_min(PRIOR_MEAN_FLOOR)
        prior = dist.Gamma(torch.full_like(mean, PRIOR_CONCENTRATION), PRIOR_CONCENTRATION / mean)
        return {"lambdas": pyro.sample("lambdas", prior.expand([k, d]).to_event(2))}

    def sites_from_state(self, state: State) -> State:
        """Rates floored at the square root of the smallest normal float (a guide's log stays finite)."""
        lambdas = state["lambdas"]
        return {"lambdas": lambdas.clamp_min(torch.finfo(lambdas.dtype).tiny ** 0.5)}

    def state_from_sites(self, sites: State) -> State:
        return {"lambdas": sites["lambdas"]}

    def sample(self, state: State, sample_shape: torch.Size) -> torch.Tensor:
        return dist.Poisson(state["lambdas"]).sample(sample_shape)
