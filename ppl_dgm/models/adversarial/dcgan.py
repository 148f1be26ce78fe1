"""Deep convolutional GAN (Radford et al., 2016) sized for small square images."""

from __future__ import annotations

from ppl_dgm.models.adversarial.base import AdversarialModel, check_count
from ppl_dgm.models.adversarial.networks import conv_discriminator, conv_generator, dcgan_init, image_side
from ppl_dgm.models.registry import register_model


@register_model("dcgan")
class DCGAN(AdversarialModel):
    """DCGAN: ``x = G(z)`` with strided transposed convolutions, batch norm and ReLU in ``G`` (tanh
    output), strided convolutions, batch norm and LeakyReLU(0.2) in ``D``, every weight drawn from
    ``N(0, 0.02)``, Adam with ``beta1 = 0.5``; the non-saturating loss.

    Radford, Metz & Chintala, "Unsupervised Representation Learning with Deep Convolutional
    Generative Adversarial Networks", ICLR 2016. On an ``8x8`` image ``G`` goes ``1x1 -> 2x2 -> 4x4
    -> 8x8`` and ``D`` the other way. ``G`` keeps batch-norm running statistics, which draws use in
    evaluation mode (after ``fit``).

    Args:
        input_dim: pixels of the square image ``side * side``, ``side`` a multiple of 4 (64 for digits).
        latent_dim: size of ``z``.
        channels: feature maps of the widest-resolution layer; the next layer has twice as many.
        num_levels: the data lie in ``[0, num_levels - 1]`` (17 for the digits' values 0..16).
    """

    def __init__(self, input_dim: int = 64, latent_dim: int = 32, channels: int = 32, num_levels: int = 17) -> None:
        super().__init__(input_dim, latent_dim, num_levels)
        check_count("channels", channels)
        side = image_side(input_dim)
        self.generator = conv_generator(latent_dim, side, channels, norm="batch")
        self.discriminator = conv_discriminator(side, channels, norm="batch")
        dcgan_init(self)
