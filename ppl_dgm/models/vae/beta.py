"""beta-VAE (Higgins et al., 2017): the KL term of the training objective weighted by ``beta``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ppl_dgm.models.registry import register_model
from ppl_dgm.models.vae.base import Activation, AmortizedVAE
from ppl_dgm.models.vae.likelihoods import Likelihood


def check_weight(name: str, value: Any, *, positive: bool) -> float:
    """``value`` as a float; ``ValueError`` unless it is a finite number, ``> 0`` (``positive``) or ``>= 0``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r} (1 gives the plain ELBO)")
    return float(value)


@register_model("betavae")
class BetaVAE(AmortizedVAE):
    """beta-VAE (Higgins et al., 2017, "beta-VAE: Learning basic visual concepts with a constrained
    variational framework", ICLR): the VAE's story and guide, trained on
    ``E_q[log p(x | z)] - beta * KL(q(z | x) || p(z))``.

    ``beta > 1`` presses the posterior towards the factorized prior (fewer, more independent active
    latents, blurrier reconstructions) at the price of the likelihood; ``beta < 1`` loosens it. ``beta``
    acts in training objectives only (the latent sites are scaled by `kl_weight`); `ppl_dgm.log_likelihood`
    scores the unscaled model, so the test NLL of a beta-VAE is comparable with the plain VAE's.
    Validation losses (early stopping) use the same weighted objective as training.

    Args:
        input_dim: number of dimensions ``D`` of an example (data shape ``(N, D)``).
        latent_dim: size of ``z``.
        hidden_dims: widths of the hidden layers of encoder and decoder (mirrored).
        likelihood: per-pixel likelihood (see `ppl_dgm.models.VAE`).
        num_levels: number of integer values the data takes, ``0..num_levels-1``.
        activation: nonlinearity of the networks.
        dropout: dropout rate of the hidden layers while fitting.
        beta: weight of the KL term, a finite number ``> 0`` (1: the plain VAE).
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
        beta: float = 4.0,
    ) -> None:
        beta = check_weight("beta", beta, positive=True)
        super().__init__(input_dim, latent_dim, hidden_dims, likelihood, num_levels, activation, dropout)
        self.beta = beta

    @property
    def kl_weight(self) -> float:
        """``beta``: the factor on ``log p(z) - log q(z | x)`` in training objectives."""
        return self.beta
