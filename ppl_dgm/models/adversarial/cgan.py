"""Conditional GAN (Mirza & Osindero, 2014): a generator of chosen digits, a label-aware discriminator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ppl_dgm.core import Capabilities, X, Z, data_plate
from ppl_dgm.models.adversarial.base import AdversarialModel, check_count, check_widths
from ppl_dgm.models.adversarial.networks import Activation, mlp_discriminator, mlp_generator
from ppl_dgm.models.registry import register_model
from ppl_dgm.nn.mlp import ACTIVATIONS
from ppl_dgm.validation import check_labels

Y = "y"
"""Name of the label's sample site (observed when labels are given)."""
Conditioning = Literal["projection", "concat"]


@register_model("cgan")
class CGAN(AdversarialModel):
    """Conditional GAN: ``y ~ Uniform{0..num_classes-1}`` (observed when given), ``z ~ N(0, I)``,
    ``x = G(z, y)``. ``G`` reads ``z`` concatenated with the one-hot label; the discriminator either
    reads the image concatenated with the one-hot label (``"concat"``, Mirza & Osindero) or scores
    ``psi(phi(x)) + embed(y) . phi(x)`` (``"projection"``, Miyato & Koyama). The discriminator is shown
    generated images with the labels of the real batch, so ``G`` learns to draw the digit it is asked for:
    ``ppl_dgm.draw(model, n, y=labels)``.

    Mirza & Osindero, "Conditional Generative Adversarial Nets", arXiv:1411.1784, 2014; Miyato &
    Koyama, "cGANs with Projection Discriminator", ICLR 2018.

    Args:
        input_dim: number of dimensions ``D`` of an example (data shape ``(N, D)``).
        latent_dim: size of ``z``.
        hidden_dims: widths of the hidden layers of ``G``; ``D`` uses them reversed.
        num_classes: labels take the values ``0..num_classes-1``.
        num_levels: the data lie in ``[0, num_levels - 1]`` (17 for the digits' values 0..16).
        conditioning: how the discriminator sees the label, ``"projection"`` or ``"concat"``.
        activation: nonlinearity of both networks.
        dropout: dropout rate between the discriminator's layers while fitting.
    """

    capabilities = Capabilities(likelihood="none", data="continuous", conditional=True)

    def __init__(self, input_dim: int = 64, latent_dim: int = 32, hidden_dims: Sequence[int] = (256, 256),
                 num_classes: int = 10, num_levels: int = 17, conditioning: Conditioning = "projection",
                 activation: Activation = "elu", dropout: float = 0.0) -> None:
        super().__init__(input_dim, latent_dim, num_levels)
        check_widths("hidden_dims", hidden_dims)
        check_count("num_classes", num_classes, 2)
        if conditioning not in ("projection", "concat"):
            raise ValueError(f"conditioning must be 'projection' or 'concat', got {conditioning!r}")
        self.num_classes, self.conditioning = num_classes, conditioning
        self.generator = mlp_generator(latent_dim + num_classes, hidden_dims, input_dim, activation)
        widths = tuple(reversed(hidden_dims))
        if conditioning == "concat":
            self.discriminator = mlp_discriminator(input_dim + num_classes, widths, activation, dropout)
        else:  # phi: all layers but the read-out; psi: the read-out; one embedding row per class
            self.discriminator = mlp_discriminator(input_dim, widths, activation, dropout, out_features=widths[-1])
            self.feature_activation = ACTIVATIONS[activation]()
            self.read_out = nn.Linear(widths[-1], 1)
            self.embedding = nn.Embedding(num_classes, widths[-1])
        self.register_buffer("class_logits", torch.zeros(num_classes), persistent=False)

    def check_labels(self, y: torch.Tensor) -> None:
        """``ValueError`` unless ``y`` is a 1-D integer tensor with values in ``0..num_classes-1``."""
        check_labels(y, self.num_classes)

    def one_hot(self, y: torch.Tensor) -> torch.Tensor:
        """Labels ``(N,)`` -> one-hot rows ``(N, num_classes)`` in the model's dtype."""
        return F.one_hot(y.long(), self.num_classes).to(self.prior_loc.dtype)

    def synthesize(self, z: torch.Tensor, y: torch.Tensor | None = None, **ctx: Any) -> torch.Tensor:
        """``G(z, y)`` in the data range: latents ``(N, latent_dim)`` and labels ``(N,)`` -> images ``(N, D)``."""
        if y is None:
            raise ValueError("CGAN needs the labels y of the images to generate")
        return self.from_unit(self.generator(torch.cat([z, self.one_hot(y)], dim=-1)))

    def critic(self, x: torch.Tensor, y: torch.Tensor | None = None, **ctx: Any) -> torch.Tensor:
        """Discriminator logit of images ``(N, D)`` in the data range with labels ``(N,)``; shape ``(N,)``."""
        if y is None:
            raise ValueError("CGAN's discriminator needs the labels y of the images it scores")
        u = self.to_unit(x)
        if self.conditioning == "concat":
            return self.discriminator(torch.cat([u, self.one_hot(y)], dim=-1)).squeeze(-1)
        features = self.feature_activation(self.discriminator(u))
        return self.read_out(features).squeeze(-1) + (self.embedding(y.long()) * features).sum(-1)

    def model(self, x: torch.Tensor | None = None, n: int | None = None, y: torch.Tensor | None = None
              ) -> torch.Tensor:
        """``y ~ Uniform`` (observed at site ``"y"`` when given), ``z ~ N(0, I)``, ``x = G(z, y)`` recorded at
        site ``"x"``; ``n`` defaults to ``len(y)``. Returns ``x`` of shape ``(n, D)``."""
        self.refuse_observed(x)
        if y is not None:
            self.check_labels(y)
            if n is not None and n != len(y):
                raise ValueError(f"asked for n={n} draws but given {len(y)} labels y")
            n = len(y)
        with data_plate(None, n):
            y = pyro.sample(Y, dist.Categorical(logits=self.class_logits), obs=y)
            z = pyro.sample(Z, self.prior())
            return pyro.deterministic(X, self.synthesize(z, y), event_dim=1)

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """The discriminator's parameters (with the projection's read-out and class embedding)."""
        heads = (self.read_out, self.embedding) if self.conditioning == "projection" else ()
        return [p for module in (self.discriminator, *heads) for p in module.parameters()]
