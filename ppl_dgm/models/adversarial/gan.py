"""The original GAN (Goodfellow et al., 2014) with fully connected networks and the non-saturating loss."""

from __future__ import annotations

from collections.abc import Sequence

from ppl_dgm.models.adversarial.base import AdversarialModel, check_widths
from ppl_dgm.models.adversarial.networks import Activation, mlp_discriminator, mlp_generator
from ppl_dgm.models.registry import register_model


@register_model("gan")
class GAN(AdversarialModel):
    """GAN: ``z ~ N(0, I)``, ``x = G(z)`` with multi-layer perceptrons for the generator ``G`` and the
    discriminator ``D``, trained by the non-saturating loss (``G`` maximizes ``log D(G(z))``).

    Goodfellow et al., "Generative Adversarial Nets", NeurIPS 2014.

    Args:
        input_dim: number of dimensions ``D`` of an example (data shape ``(N, D)``).
        latent_dim: size of ``z``.
        hidden_dims: widths of the hidden layers of ``G``; ``D`` uses them reversed.
        num_levels: the data lie in ``[0, num_levels - 1]`` (17 for the digits' values 0..16).
        activation: nonlinearity of both networks.
        dropout: dropout rate between the discriminator's layers while fitting (a regularizer for
            small data sets, where ``D`` otherwise memorizes the training images).
    """

    def __init__(self, input_dim: int = 64, latent_dim: int = 32, hidden_dims: Sequence[int] = (256, 256),
                 num_levels: int = 17, activation: Activation = "elu", dropout: float = 0.0) -> None:
        super().__init__(input_dim, latent_dim, num_levels)
        check_widths("hidden_dims", hidden_dims)
        self.generator = mlp_generator(latent_dim, hidden_dims, input_dim, activation)
        self.discriminator = mlp_discriminator(input_dim, tuple(reversed(hidden_dims)), activation, dropout)
