"""Generator and discriminator networks of the GAN family, for flat images ``(N, side * side)``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ppl_dgm.nn import MLP

Norm = Literal["batch", "layer", "none"]
Network = Literal["conv", "mlp"]
Activation = Literal["relu", "elu", "tanh", "gelu", "silu"]
LEAK = 0.2
"""Negative slope of the LeakyReLUs in convolutional discriminators (Radford et al., 2016)."""


def image_side(input_dim: int) -> int:
    """Side of the square image ``input_dim`` flattens; ``ValueError`` unless it is a multiple of 4."""
    side = math.isqrt(input_dim)
    if side * side != input_dim or side % 4:
        raise ValueError(f"the convolutional networks need a square image whose side is a multiple of 4 "
                         f"(e.g. input_dim=64 for 8x8), got input_dim={input_dim}; use network='mlp'")
    return side


def _norm(kind: Norm, channels: int) -> list[nn.Module]:
    if kind == "batch":
        return [nn.BatchNorm2d(channels)]
    if kind == "layer":  # one group: normalizes over channels and pixels of each example
        return [nn.GroupNorm(1, channels)]
    return []


def conv_generator(latent_dim: int, side: int, channels: int, norm: Norm = "batch") -> nn.Sequential:
    """DCGAN generator ``(N, latent_dim) -> (N, side * side)`` in ``(-1, 1)``: a transposed convolution
    from ``1x1`` to ``(side/4)^2`` with ``2 channels`` maps, two stride-2 transposed convolutions up to
    ``side x side``, normalization and ReLU between them, tanh at the end."""
    return nn.Sequential(
        nn.Unflatten(1, (latent_dim, 1, 1)),
        nn.ConvTranspose2d(latent_dim, 2 * channels, side // 4, bias=norm == "none"),
        *_norm(norm, 2 * channels), nn.ReLU(),
        nn.ConvTranspose2d(2 * channels, channels, 4, stride=2, padding=1, bias=norm == "none"),
        *_norm(norm, channels), nn.ReLU(),
        nn.ConvTranspose2d(channels, 1, 4, stride=2, padding=1), nn.Tanh(), nn.Flatten(),
    )


class MinibatchStd(nn.Module):
    """Appends one feature map holding the standard deviation of the features across the minibatch, averaged
    over features and pixels (Karras et al., 2018): lets a discriminator see a batch's lack of variety.
    Shape ``(N, C, H, W) -> (N, C + 1, H, W)``."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, C + 1, H, W)``; a batch of one gets a zero map."""
        spread = h.std(dim=0, unbiased=False).mean() if h.shape[0] > 1 else h.new_zeros(())
        return torch.cat([h, spread.expand(h.shape[0], 1, *h.shape[2:])], dim=1)


def conv_discriminator(side: int, channels: int, norm: Norm = "batch", out_features: int = 1,
                       minibatch_std: bool = False) -> nn.Sequential:
    """DCGAN discriminator ``(N, side * side) -> (N, out_features)``: two stride-2 4x4 convolutions
    (``channels`` then ``2 channels`` maps, normalization on the second only) with LeakyReLU(0.2), then
    (with ``minibatch_std``, a `MinibatchStd` map appended) a linear read-out of the ``(side/4)^2`` maps."""
    extra = [MinibatchStd()] if minibatch_std else []
    return nn.Sequential(
        nn.Unflatten(1, (1, side, side)),
        nn.Conv2d(1, channels, 4, stride=2, padding=1), nn.LeakyReLU(LEAK),
        nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1, bias=norm == "none"),
        *_norm(norm, 2 * channels), nn.LeakyReLU(LEAK), *extra,
        nn.Flatten(), nn.Linear((2 * channels + minibatch_std) * (side // 4) ** 2, out_features),
    )


def mlp_generator(latent_dim: int, hidden_dims: Sequence[int], out_features: int,
                  activation: Activation = "relu") -> nn.Sequential:
    """Fully connected generator ``(N, latent_dim) -> (N, out_features)`` in ``(-1, 1)`` (tanh output)."""
    return nn.Sequential(MLP(latent_dim, hidden_dims, out_features, activation), nn.Tanh())


def mlp_discriminator(in_features: int, hidden_dims: Sequence[int], activation: Activation = "elu",
                      dropout: float = 0.0, out_features: int = 1) -> MLP:
    """Fully connected discriminator ``(N, in_features) -> (N, out_features)``, dropout between layers."""
    return MLP(in_features, hidden_dims, out_features, activation, dropout)


def dcgan_init(module: nn.Module) -> None:
    """Radford et al. (2016)'s initialization, in place: weights of (transposed) convolutions and
    linear layers ``~ N(0, 0.02)``, normalization scales ``~ N(1, 0.02)``, biases zero."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(layer.weight, 0.0, 0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)
