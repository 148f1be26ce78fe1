"""Generative adversarial networks: GAN, DCGAN, WGAN, WGAN-GP, conditional GAN and a style-based generator,
each a Pyro story ``z ~ N(0, I)``, ``x = G(z)`` fitted by the adversarial engine."""

from ppl_dgm.models.adversarial.base import AdversarialModel
from ppl_dgm.models.adversarial.cgan import CGAN
from ppl_dgm.models.adversarial.dcgan import DCGAN
from ppl_dgm.models.adversarial.gan import GAN
from ppl_dgm.models.adversarial.style import StyleGAN
from ppl_dgm.models.adversarial.wgan import WGAN, WGANGP, gradient_penalty

__all__ = ["CGAN", "DCGAN", "GAN", "WGAN", "WGANGP", "AdversarialModel", "StyleGAN", "gradient_penalty"]
