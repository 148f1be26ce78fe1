"""Variational autoencoder (Kingma & Welling, 2014) with an amortized Gaussian guide."""

from __future__ import annotations

from collections.abc import Sequence

from ppl_dgm.models.registry import register_model
from ppl_dgm.models.vae.base import Activation, AmortizedVAE
from ppl_dgm.models.vae.likelihoods import Likelihood


@register_model("vae")
class VAE(AmortizedVAE):
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
        activation: Activation = "elu",
        dropout: float = 0.3,
    ) -> None:
        super().__init__(input_dim, latent_dim, hidden_dims, likelihood, num_levels, activation, dropout)
