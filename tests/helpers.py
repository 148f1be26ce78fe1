"""Small generative stories used across the tests (written as a user would write them)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ppl_dgm import Capabilities, GenerativeModel, X, Z, data_plate


class DiagonalGaussian(GenerativeModel):
    """``x ~ N(loc, diag(scale^2))``: no latent variables, exact likelihood."""

    capabilities = Capabilities(likelihood="exact", data="continuous")

    def __init__(self, dim: int = 2) -> None:
        super().__init__()
        self.event_shape = (dim,)
        self.loc = nn.Parameter(torch.zeros(dim))
        self.raw_scale = nn.Parameter(torch.zeros(dim))

    def model(self, x=None, n=None):
        with data_plate(x, n):
            return pyro.sample(X, dist.Normal(self.loc, F.softplus(self.raw_scale)).to_event(1), obs=x)


class LinearGaussian(GenerativeModel):
    """``z ~ N(0, I_k)``, ``x | z ~ N(W z + b, sigma^2 I_D)``; guide ``N(A x + c, diag(s^2))``.

    The marginal is ``x ~ N(b, W W^T + sigma^2 I)``: :meth:`exact_log_prob` gives it in closed form.
    """

    capabilities = Capabilities(likelihood="bound", data="continuous")

    def __init__(self, dim: int = 5, latent_dim: int = 2) -> None:
        super().__init__()
        self.event_shape = (dim,)
        self.latent_dim = latent_dim
        self.weight = nn.Parameter(0.1 * torch.randn(dim, latent_dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.raw_noise = nn.Parameter(torch.zeros(()))
        self.encoder = nn.Linear(dim, latent_dim)
        self.raw_posterior_scale = nn.Parameter(torch.zeros(latent_dim))

    def model(self, x=None, n=None):
        with data_plate(x, n):
            prior = dist.Normal(torch.zeros(self.latent_dim), 1.0).to_event(1)
            z = pyro.sample(Z, prior)
            loc = z @ self.weight.T + self.bias
            return pyro.sample(X, dist.Normal(loc, F.softplus(self.raw_noise)).to_event(1), obs=x)

    def guide(self, x=None, n=None):
        with data_plate(x, n):
            scale = F.softplus(self.raw_posterior_scale)
            pyro.sample(Z, dist.Normal(self.encoder(x), scale).to_event(1))

    def exact_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Closed-form ``log p(x)`` per example (nats)."""
        with torch.no_grad():
            cov = self.weight @ self.weight.T + F.softplus(self.raw_noise) ** 2 * torch.eye(self.event_shape[0])
            return dist.MultivariateNormal(self.bias, cov).log_prob(x)


class Implicit(GenerativeModel):
    """A sampler without a density (likelihood ``"none"``): ``x`` is recorded with ``pyro.deterministic``."""

    capabilities = Capabilities(likelihood="none")

    def model(self, x=None, n=None):
        with data_plate(x, n):
            return pyro.deterministic(X, torch.randn(n or len(x), 2))
