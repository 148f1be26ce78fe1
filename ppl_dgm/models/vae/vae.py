"""Variational autoencoder (Kingma & Welling, 2014) with an amortized Gaussian guide."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F

from ppl_dgm.core import Capabilities, GenerativeModel, X, Z, data_plate
from ppl_dgm.distributions import DiscretizedLogistic
from ppl_dgm.models.registry import register_model
from ppl_dgm.nn import MLP
from ppl_dgm.validation import check_integer_levels, check_tensor

Likelihood = Literal["categorical", "bernoulli", "gaussian", "discretized_logistic"]
_PARAMS_PER_DIM = {"bernoulli": 1, "gaussian": 2, "discretized_logistic": 2}
_MIN_SCALE = 1e-3  # lower bound on decoder scales, in units of (num_levels - 1)


@register_model("vae")
class VAE(GenerativeModel):
    """VAE: ``z ~ N(0, I)``, ``x | z ~ p(x | decoder(z))``, guide ``q(z | x) = N(mu(x), sigma(x))``.

    Defaults suit sklearn's digits: 64 pixels with integer values ``0..16``.

    Args:
        input_dim: number of dimensions ``D`` of an example (data shape ``(N, D)``).
        latent_dim: size of ``z``.
        hidden_dims: widths of the hidden layers of encoder and decoder (mirrored).
        likelihood: ``"categorical"`` (one probability per level and pixel), ``"bernoulli"``
            (binary data), ``"gaussian"`` (a density; scored with dequantization on integer
            data) or ``"discretized_logistic"`` (logistic mass on integer bins).
        num_levels: number of integer values the data takes, ``0..num_levels-1``
            (default 17, or 2 for ``"bernoulli"``). The encoder sees ``x / (num_levels-1)``.
        activation: nonlinearity of the networks.
        dropout: dropout rate of the hidden layers while fitting (a regularizer for small data).
    """

    def __init__(
        self,
        input_dim: int = 64,
        latent_dim: int = 16,
        hidden_dims: Sequence[int] = (512, 512),
        likelihood: Likelihood = "categorical",
        num_levels: int | None = None,
        activation: Literal["relu", "elu", "tanh", "gelu", "silu"] = "elu",
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if likelihood not in ("categorical", *_PARAMS_PER_DIM):
            raise ValueError(
                f"likelihood must be one of categorical, {', '.join(_PARAMS_PER_DIM)}; got {likelihood!r}"
            )
        num_levels = num_levels if num_levels is not None else (2 if likelihood == "bernoulli" else 17)
        if likelihood == "bernoulli" and num_levels != 2:
            raise ValueError(f"the bernoulli likelihood needs num_levels=2, got {num_levels}")
        for name, value in (("input_dim", input_dim), ("latent_dim", latent_dim), ("num_levels", num_levels)):
            if not isinstance(value, int) or value < (2 if name == "num_levels" else 1):
                raise ValueError(f"{name} must be a positive integer (num_levels >= 2), got {value!r}")
        self.input_dim, self.latent_dim = input_dim, latent_dim
        self.likelihood, self.num_levels = likelihood, num_levels
        self.event_shape = (input_dim,)
        per_dim = num_levels if likelihood == "categorical" else _PARAMS_PER_DIM[likelihood]
        self.encoder = MLP(input_dim, hidden_dims, 2 * latent_dim, activation, dropout)
        self.decoder = MLP(latent_dim, tuple(reversed(hidden_dims)), per_dim * input_dim, activation, dropout)
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_scale", torch.ones(latent_dim))

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        data = "continuous" if self.likelihood == "gaussian" else "discrete"
        return Capabilities(likelihood="bound", data=data)

    def check_data(self, x: torch.Tensor) -> None:
        """Reject data this likelihood cannot score (shape, non-finite, off-support values)."""
        check_tensor(x, "x", event_shape=self.event_shape)
        if self.likelihood != "gaussian":
            check_integer_levels(x, self.num_levels)

    def observation(self, z: torch.Tensor) -> dist.Distribution:
        """The distribution ``p(x | z)`` for latents of shape ``(N, latent_dim)``; event ``(D,)``."""
        out = self.decoder(z)
        span = self.num_levels - 1
        if self.likelihood == "categorical":
            logits = out.unflatten(-1, (self.input_dim, self.num_levels))
            return dist.Categorical(logits=logits).to_event(1)
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out).to_event(1)
        loc, raw_scale = out.chunk(2, dim=-1)
        scale = span * (F.softplus(raw_scale) + _MIN_SCALE)
        if self.likelihood == "gaussian":
            return dist.Normal(span * torch.sigmoid(loc), scale).to_event(1)
        return DiscretizedLogistic(span * torch.sigmoid(loc), scale, self.num_levels).to_event(1)

    def model(self, x: torch.Tensor | None = None, n: int | None = None) -> torch.Tensor:
        """``z ~ N(0, I)``; ``x ~ p(x | z)`` for each example in plate ``"data"``."""
        with data_plate(x, n):
            prior = dist.Normal(self.prior_loc, self.prior_scale).to_event(1)
            z = pyro.sample(Z, prior)
            return pyro.sample(X, self.observation(z), obs=x)

    def guide(self, x: torch.Tensor | None = None, n: int | None = None) -> None:
        """``z ~ N(mu(x), sigma(x))`` from the encoder; with ``x=None`` falls back to the prior."""
        with data_plate(x, n):
            if x is None:
                pyro.sample(Z, dist.Normal(self.prior_loc, self.prior_scale).to_event(1))
                return
            loc, raw_scale = self.encoder(x / (self.num_levels - 1)).chunk(2, dim=-1)
            pyro.sample(Z, dist.Normal(loc, F.softplus(raw_scale) + 1e-4).to_event(1))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of ``p(x | z)`` at the posterior mean of ``z``; shape ``(N, D)``."""
        loc, _ = self.encoder(x / (self.num_levels - 1)).chunk(2, dim=-1)
        observation = self.observation(loc)
        if self.likelihood == "categorical":  # torch's Categorical has no mean over its levels
            levels = torch.arange(self.num_levels, dtype=loc.dtype, device=loc.device)
            return observation.base_dist.probs @ levels
        return observation.mean
