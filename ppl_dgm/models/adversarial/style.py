"""A small style-based generator (Karras et al., 2019): mapping network, learned constant, AdaIN, noise, mixing."""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ppl_dgm.core import X, Z, data_plate
from ppl_dgm.models.adversarial.base import AdversarialModel, check_count, input_gradient_norms
from ppl_dgm.models.adversarial.networks import LEAK, Norm, conv_discriminator, dcgan_init, image_side
from ppl_dgm.models.registry import register_model

NOISE = "noise"
"""Name of the sample site of the per-layer noise images (flattened and concatenated per example)."""


class EqualizedLinear(nn.Module):
    """Linear layer with an equalized, scaled learning rate (Karras et al., 2018, 2019): the weight is stored
    as ``N(0, 1 / lr_multiplier^2)`` and used times ``lr_multiplier / sqrt(in_features)`` (the bias times
    ``lr_multiplier``), so Adam's steps move the used weight ``lr_multiplier`` times as far. StyleGAN's mapping
    network learns at 0.01 of the synthesis network's rate. Shape ``(..., in_features) -> (..., out_features)``.

    Args:
        in_features: input width.
        out_features: output width.
        lr_multiplier: factor on the effective learning rate of this layer.
    """

    def __init__(self, in_features: int, out_features: int, lr_multiplier: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.weight_gain = lr_multiplier / in_features ** 0.5
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_features) -> (..., out_features)``."""
        return F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)


def mapping_network(latent_dim: int, style_dim: int, num_layers: int, lr_multiplier: float) -> nn.Sequential:
    """StyleGAN's mapping ``(N, latent_dim) -> (N, style_dim)``: `EqualizedLinear` layers with LeakyReLU(0.2)
    between them, on pixel-normalized input ``z / rms(z)``."""
    widths = [latent_dim] + [style_dim] * num_layers
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers += [nn.LeakyReLU(LEAK)] if i else []
        layers.append(EqualizedLinear(a, b, lr_multiplier))
    return nn.Sequential(*layers)


class StyleLayer(nn.Module):
    """One synthesis layer: optional 2x nearest upsampling and 3x3 convolution, then per-pixel noise scaled by
    a learned per-channel weight, a bias, LeakyReLU(0.2), instance normalization, and AdaIN with the style
    ``(1 + scale(w), shift(w))``. Shape ``(N, C_in, H, W) -> (N, C_out, H', W')``.

    Args:
        in_channels: channels of the input maps.
        out_channels: channels of the output maps (must equal ``in_channels`` without ``conv``).
        style_dim: size of the style vector ``w``.
        conv: whether the layer starts with a 3x3 convolution.
        upsample: whether it doubles the resolution first.
    """

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, conv: bool, upsample: bool) -> None:
        super().__init__()
        self.upsample = upsample
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False) if conv else None
        self.noise_weight = nn.Parameter(torch.zeros(out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.style = nn.Linear(style_dim, 2 * out_channels)

    def forward(self, h: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Maps ``h`` ``(N, C_in, H, W)``, style ``w`` ``(N, style_dim)`` and noise ``(N, 1, H', W')`` to
        ``(N, C_out, H', W')``."""
        if self.upsample:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
        if self.conv is not None:
            h = self.conv(h)
        h = h + self.noise_weight[:, None, None] * noise + self.bias[:, None, None]
        h = F.instance_norm(F.leaky_relu(h, LEAK))
        scale, shift = self.style(w)[:, :, None, None].chunk(2, dim=1)
        return (1.0 + scale) * h + shift


@register_model("stylegan")
class StyleGAN(AdversarialModel):
    """Style-based GAN: a mapping network ``w = f(z)``, a synthesis network that starts from a learned
    constant ``4x4`` input and, in each layer, adds scaled per-pixel noise and modulates the normalized
    maps by the style ``w`` (AdaIN), doubling the resolution up to the image's side; a 1x1 convolution
    and tanh make the image. The story draws ``z`` and the noise images at sites ``"z"`` and ``"noise"``.
    While fitting, a share ``mixing_probability`` of the generated images take ``w`` of a second ``z``
    from a random layer on (style mixing regularization). The discriminator is DCGAN's (strided
    convolutions, LeakyReLU, ``N(0, 0.02)`` initialization; batch norm unless told otherwise) with a
    minibatch standard deviation map; the loss is non-saturating, with an optional R1 penalty on real images.

    Karras, Laine & Aila, "A Style-Based Generator Architecture for Generative Adversarial Networks",
    CVPR 2019 (minibatch standard deviation and equalized learning rate: Karras et al., "Progressive
    Growing of GANs", ICLR 2018; R1: Mescheder, Geiger & Nowozin, "Which Training Methods for GANs do
    actually Converge?", ICML 2018).

    Args:
        input_dim: pixels of the square image ``side * side``, ``side = 4 * 2^k`` (64 for digits).
        latent_dim: size of ``z``.
        style_dim: size of ``w``.
        mapping_layers: linear layers of the mapping network (LeakyReLU between them).
        mapping_lr_multiplier: the mapping network's learning rate relative to the rest (0.01 in the paper;
            at the full rate a deep mapping collapses onto a few styles, and so the samples onto a few digits).
        channels: feature maps of every synthesis layer and of the discriminator's first layer.
        num_levels: the data lie in ``[0, num_levels - 1]`` (17 for the digits' values 0..16).
        mixing_probability: share of generated images with mixed styles while fitting (0.9 in the paper, for
            18 layers; 0.5 here, where 4 layers make every crossover change much of the image).
        r1_weight: weight ``gamma / 2`` of the penalty ``E[||grad D(real)||^2]`` (0: none).
        discriminator_norm: normalization in the DCGAN-style discriminator, ``"batch"``, ``"layer"`` or
            ``"none"``.
        minibatch_std: append the minibatch standard deviation map to the discriminator's last features
            (Karras et al., 2018), which counters mode collapse.
    """

    def __init__(self, input_dim: int = 64, latent_dim: int = 32, style_dim: int = 32, mapping_layers: int = 3,
                 channels: int = 32, num_levels: int = 17, mixing_probability: float = 0.5, r1_weight: float = 0.0,
                 mapping_lr_multiplier: float = 0.01, discriminator_norm: Norm = "batch",
                 minibatch_std: bool = True) -> None:
        super().__init__(input_dim, latent_dim, num_levels)
        for name, value in (("style_dim", style_dim), ("mapping_layers", mapping_layers), ("channels", channels)):
            check_count(name, value)
        if not 0.0 <= mixing_probability <= 1.0:
            raise ValueError(f"mixing_probability must lie in [0, 1], got {mixing_probability!r}")
        if not mapping_lr_multiplier > 0.0:
            raise ValueError(f"mapping_lr_multiplier must be a positive number, got {mapping_lr_multiplier!r}")
        if not r1_weight >= 0.0:
            raise ValueError(f"r1_weight must be a non-negative number, got {r1_weight!r}")
        side = image_side(input_dim)
        doublings = (side // 4).bit_length() - 1
        if 4 << doublings != side:
            raise ValueError(f"StyleGAN needs an image side of 4 * 2^k, got {side}")
        self.mixing_probability, self.r1_weight = float(mixing_probability), float(r1_weight)
        self.mapping = mapping_network(latent_dim, style_dim, mapping_layers, mapping_lr_multiplier)
        self.constant = nn.Parameter(torch.randn(1, channels, 4, 4))
        layers = [StyleLayer(channels, channels, style_dim, conv=False, upsample=False),
                  StyleLayer(channels, channels, style_dim, conv=True, upsample=False)]
        for _ in range(doublings):
            layers += [StyleLayer(channels, channels, style_dim, conv=True, upsample=True),
                       StyleLayer(channels, channels, style_dim, conv=True, upsample=False)]
        self.layers = nn.ModuleList(layers)
        self.to_image = nn.Conv2d(channels, 1, 1)
        self.sides = [4 * 2 ** (i // 2) for i in range(len(layers))]
        self.noise_dim = sum(s * s for s in self.sides)
        if discriminator_norm not in ("batch", "layer", "none"):
            raise ValueError(f"discriminator_norm must be 'batch', 'layer' or 'none', got {discriminator_norm!r}")
        self.discriminator = conv_discriminator(side, channels, norm=discriminator_norm, minibatch_std=minibatch_std)
        dcgan_init(self.discriminator)
        self.register_buffer("noise_loc", torch.zeros(self.noise_dim), persistent=False)

    @property
    def num_styles(self) -> int:
        """Number of synthesis layers, each with its own style input."""
        return len(self.layers)

    def styles(self, z: torch.Tensor) -> torch.Tensor:
        """The mapping network on pixel-normalized latents: ``(N, latent_dim) -> (N, style_dim)``."""
        return self.mapping(z * torch.rsqrt(z.pow(2).mean(-1, keepdim=True) + 1e-8))

    def mix_styles(self, first: torch.Tensor, second: torch.Tensor, crossover: torch.Tensor) -> torch.Tensor:
        """Per-layer styles ``(N, num_styles, style_dim)``: layer ``l`` of example ``n`` takes ``first[n]`` if
        ``l < crossover[n]``, else ``second[n]``; ``first``/``second`` ``(N, style_dim)``, ``crossover`` ``(N,)``
        integers (``num_styles``: no mixing)."""
        layer = torch.arange(self.num_styles, device=first.device)
        take_second = (layer >= crossover[:, None])[..., None]
        return torch.where(take_second, second[:, None], first[:, None])

    def render(self, ws: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The synthesis network: per-layer styles ``(N, num_styles, style_dim)`` and noise ``(N, noise_dim)``
        -> images ``(N, D)`` in the data range."""
        h = self.constant.expand(ws.shape[0], -1, -1, -1)
        images = noise.split([s * s for s in self.sides], dim=-1)
        for i, (layer, side) in enumerate(zip(self.layers, self.sides, strict=True)):
            h = layer(h, ws[:, i], images[i].reshape(-1, 1, side, side))
        return self.from_unit(torch.tanh(self.to_image(h)).flatten(1))

    def synthesize(self, z: torch.Tensor, noise: torch.Tensor | None = None, **ctx: Any) -> torch.Tensor:
        """``G(z, noise)`` with one style ``w = f(z)`` in every layer: ``(N, latent_dim)``, ``(N, noise_dim)``
        (default: fresh standard normal noise) -> images ``(N, D)`` in the data range."""
        if noise is None:
            noise = torch.randn(z.shape[0], self.noise_dim, dtype=z.dtype, device=z.device)
        w = self.styles(z)
        return self.render(w[:, None].expand(-1, self.num_styles, -1), noise)

    def model(self, x: torch.Tensor | None = None, n: int | None = None) -> torch.Tensor:
        """``z ~ N(0, I)``, ``noise ~ N(0, I)``, ``x = G(z, noise)`` recorded at site ``"x"``, shape ``(n, D)``."""
        self.refuse_observed(x)
        with data_plate(None, n):
            z = pyro.sample(Z, self.prior())
            noise = pyro.sample(NOISE, dist.Normal(self.noise_loc, 1.0).to_event(1))
            return pyro.deterministic(X, self.synthesize(z, noise), event_dim=1)

    def generate(self, n: int, **ctx: Any) -> torch.Tensor:
        """``n`` draws for the discriminator, ``(n, D)``; in training mode a share ``mixing_probability`` of
        them mixes the styles of two latents at a crossover layer drawn uniformly from ``1..num_styles-1``."""
        like = {"dtype": self.prior_loc.dtype, "device": self.prior_loc.device}
        z = torch.randn(2, n, self.latent_dim, **like)
        noise = torch.randn(n, self.noise_dim, **like)
        if not self.training or self.mixing_probability == 0.0:
            return self.synthesize(z[0], noise)
        first, second = self.styles(z.flatten(0, 1)).unflatten(0, (2, n))
        crossover = torch.randint(1, self.num_styles, (n,), device=z.device)
        mixed = torch.rand(n, device=z.device) < self.mixing_probability
        return self.render(self.mix_styles(first, second, torch.where(mixed, crossover, self.num_styles)), noise)

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor, **ctx: Any) -> torch.Tensor:
        """The non-saturating discriminator loss plus ``r1_weight * E[||grad D(real)||^2]`` (in unit space)."""
        loss = super().discriminator_loss(real, fake)
        if self.r1_weight:
            loss = loss + self.r1_weight * input_gradient_norms(self.discriminator, self.to_unit(real)).pow(2).mean()
        return loss
