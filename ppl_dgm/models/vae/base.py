"""What every VAE of the family shares: the likelihood head, encoder and decoder networks, the story
``z ~ p(z)``, ``x | z ~ p(x | decoder(z))`` with an amortized guide ``q(z | x)``, and the latent views."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any, Literal

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from torch.distributions import kl_divergence

from ppl_dgm.core import Capabilities, GenerativeModel, X, Z, data_plate
from ppl_dgm.models.vae.likelihoods import Likelihood, PixelLikelihood
from ppl_dgm.nn import MLP

Activation = Literal["relu", "elu", "tanh", "gelu", "silu"]
MIN_POSTERIOR_SCALE = 1e-4
"""Lower bound on the guide's standard deviations."""


def check_positive(name: str, value: Any) -> None:
    """``ValueError`` unless ``value`` is a positive integer."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class AmortizedVAE(GenerativeModel):
    """Base of the VAE family: ``z ~ prior()``, ``x | z ~ observation(z)``; guide ``z ~ posterior(x)``.

    A variant says what is new about it by overriding `prior`, `posterior`, `observation` or the
    story itself; `kl_weight` (1 here) scales the latent terms of a training objective (a beta-VAE)
    and never the likelihood `ppl_dgm.log_likelihood` scores. Subclasses pass ``encoder_in``,
    ``encoder_out`` and ``decoder_in`` when their networks read or write more than ``x`` and ``z``.

    Args:
        input_dim: pixels ``D`` of an example (data shape ``(N, D)``).
        latent_dim: size ``k`` of ``z``.
        hidden_dims: widths of the hidden layers of encoder and decoder (mirrored).
        likelihood: per-pixel likelihood, see `PixelLikelihood`.
        num_levels: integer values the data take, ``0..num_levels-1`` (default 17, or 2 for bernoulli).
        activation: nonlinearity of the networks.
        dropout: dropout rate of the hidden layers while fitting.
    """

    def __init__(self, input_dim: int, latent_dim: int, hidden_dims: Sequence[int], likelihood: Likelihood,
                 num_levels: int | None, activation: Activation, dropout: float, *, encoder_in: int | None = None,
                 encoder_out: int | None = None, decoder_in: int | None = None) -> None:
        super().__init__()
        check_positive("input_dim", input_dim)
        check_positive("latent_dim", latent_dim)
        self.head = PixelLikelihood(likelihood, input_dim, num_levels)
        self.input_dim, self.latent_dim = input_dim, latent_dim
        self.likelihood, self.num_levels = likelihood, self.head.num_levels
        self.event_shape = (input_dim,)
        hidden = tuple(hidden_dims)
        self.encoder = MLP(encoder_in or input_dim, hidden, encoder_out or 2 * latent_dim, activation, dropout)
        self.decoder = MLP(decoder_in or latent_dim, tuple(reversed(hidden)), self.head.out_features, activation,
                           dropout)
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_scale", torch.ones(latent_dim))

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        return Capabilities(likelihood="bound", data=self.head.data)

    @property
    def kl_weight(self) -> float:
        """Factor on the latent sites' log-densities in training objectives (1: the plain bound)."""
        return 1.0

    def check_data(self, x: torch.Tensor) -> None:
        """Reject data this likelihood cannot score (shape, non-finite, off-support values)."""
        self.head.check_data(x)

    def prior(self, **ctx: Any) -> dist.Distribution:
        """``p(z)``, event shape ``(k,)``: standard normal here."""
        return dist.Normal(self.prior_loc, self.prior_scale).to_event(1)

    def encode(self, x: torch.Tensor, **ctx: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation ``(N, k)`` each of the Gaussian ``q(z | x)`` (before any flow)."""
        loc, raw_scale = self.encoder(self.head.scaled(x)).chunk(2, dim=-1)
        return loc, F.softplus(raw_scale) + MIN_POSTERIOR_SCALE

    def posterior(self, x: torch.Tensor, **ctx: Any) -> dist.Distribution:
        """``q(z | x)``, batch shape ``(N,)``, event shape ``(k,)``: a diagonal Gaussian here."""
        return dist.Normal(*self.encode(x, **ctx)).to_event(1)

    def observation(self, z: torch.Tensor, **ctx: Any) -> dist.Distribution:
        """``p(x | z)`` for latents ``(N, k)``; event shape ``(D,)``."""
        return self.head(self.decoder(z))

    def _latent_scale(self) -> Any:
        weight = self.kl_weight
        return nullcontext() if weight == 1.0 else poutine.scale(scale=weight)

    def model(self, x: torch.Tensor | None = None, n: int | None = None, **ctx: Any) -> torch.Tensor:
        """``z ~ p(z)``; ``x ~ p(x | z)`` for each example in plate ``"data"``."""
        with data_plate(x, n):
            with self._latent_scale():
                z = pyro.sample(Z, self.prior(**ctx))
            return pyro.sample(X, self.observation(z, **ctx), obs=x)

    def guide(self, x: torch.Tensor | None = None, n: int | None = None, **ctx: Any) -> None:
        """``z ~ q(z | x)``; with ``x=None`` falls back to the prior."""
        with data_plate(x, n), self._latent_scale():
            pyro.sample(Z, self.prior(**ctx) if x is None else self.posterior(x, **ctx))

    @torch.no_grad()
    def posterior_mean(self, x: torch.Tensor, **ctx: Any) -> torch.Tensor:
        """``E_q[z | x]``, shape ``(N, k)`` (the code views and active-unit counts read)."""
        return self.encode(x, **ctx)[0]

    @torch.no_grad()
    def decode_mean(self, z: torch.Tensor, **ctx: Any) -> torch.Tensor:
        """Mean of ``p(x | z)`` for latents ``(N, k)``: images ``(N, D)`` in data units."""
        return self.head.mean(self.observation(z, **ctx))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, **ctx: Any) -> torch.Tensor:
        """Mean of ``p(x | z)`` at the posterior mean of ``z``; shape ``(N, D)``."""
        return self.decode_mean(self.posterior_mean(x, **ctx), **ctx)

    @torch.no_grad()
    def kl_per_dim(self, x: torch.Tensor, **ctx: Any) -> torch.Tensor | None:
        """``KL(q(z_j | x) || p(z_j))`` per example and latent dimension, ``(N, k)`` nats, where both are
        factorized Gaussians (``None`` where the KL does not split by dimension)."""
        q, p = self.posterior(x, **ctx), self.prior(**ctx)
        if not (isinstance(q, dist.Independent) and isinstance(q.base_dist, dist.Normal)
                and isinstance(p, dist.Independent) and isinstance(p.base_dist, dist.Normal)):
            return None
        return kl_divergence(q.base_dist, p.base_dist)
