"""Wasserstein GANs: the critic kept Lipschitz by weight clipping (WGAN) or by a gradient penalty (WGAN-GP)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from ppl_dgm.models.adversarial.base import (
    AdversarialModel,
    OptimizerKind,
    check_count,
    check_widths,
    input_gradient_norms,
)
from ppl_dgm.models.adversarial.networks import (
    Network,
    conv_discriminator,
    conv_generator,
    dcgan_init,
    image_side,
    mlp_discriminator,
    mlp_generator,
)
from ppl_dgm.models.registry import register_model


def gradient_penalty(critic: Any, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """``E[(||grad critic(u_hat)||_2 - 1)^2]`` at ``u_hat = alpha real + (1 - alpha) fake`` (Gulrajani et
    al., 2017), differentiable in the critic's parameters.

    Args:
        critic: maps ``(N, D)`` to ``(N,)`` or ``(N, 1)`` scores.
        real: rows ``(N, D)`` where the critic's input space samples the data.
        fake: generated rows ``(N, D)`` in the same space.
        alpha: interpolation weights ``(N, 1)`` (default: drawn from ``U[0, 1)``).

    Returns:
        Scalar tensor (squared units of the critic per unit of its input).
    """
    if alpha is None:
        alpha = torch.rand(real.shape[0], 1, dtype=real.dtype, device=real.device)
    between = alpha * real.detach() + (1.0 - alpha) * fake.detach()
    return ((input_gradient_norms(critic, between) - 1.0) ** 2).mean()


class _Wasserstein(AdversarialModel):
    """Generator and critic of a Wasserstein GAN, the critic's loss ``E[f(fake)] - E[f(real)]`` (whose negative
    estimates the Wasserstein-1 distance, up to the critic's Lipschitz constant) and the generator's ``-E[f(fake)]``."""

    def __init__(self, input_dim: int, latent_dim: int, network: Network, channels: int,
                 hidden_dims: Sequence[int], num_levels: int, n_critic: int) -> None:
        super().__init__(input_dim, latent_dim, num_levels)
        check_count("n_critic", n_critic)
        if network == "conv":
            check_count("channels", channels)
            side = image_side(input_dim)
            self.generator = conv_generator(latent_dim, side, channels, norm="batch")
            self.discriminator = conv_discriminator(side, channels, norm="none")
            dcgan_init(self)
        elif network == "mlp":
            check_widths("hidden_dims", hidden_dims)
            self.generator = mlp_generator(latent_dim, hidden_dims, input_dim)
            self.discriminator = mlp_discriminator(input_dim, tuple(reversed(hidden_dims)), "relu")
        else:
            raise ValueError(f"network must be 'conv' or 'mlp', got {network!r}")
        self.n_critic = n_critic

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor, **ctx: Any) -> torch.Tensor:
        """``E[f(fake)] - E[f(real)]`` for images ``(N, D)`` in the data range; a scalar in critic units."""
        return self.critic(fake).mean() - self.critic(real).mean()

    def generator_loss(self, fake: torch.Tensor, **ctx: Any) -> torch.Tensor:
        """``-E[f(fake)]`` for generated images ``(N, D)``; a scalar in critic units."""
        return -self.critic(fake).mean()


@register_model("wgan")
class WGAN(_Wasserstein):
    """WGAN: a critic ``f`` trained to maximize ``E[f(real)] - E[f(G(z))]`` with every weight clipped to
    ``[-clip_value, clip_value]`` after each update (a crude Lipschitz bound), ``n_critic`` critic updates
    per generator update, RMSProp.

    Arjovsky, Chintala & Bottou, "Wasserstein Generative Adversarial Networks", ICML 2017 (their
    defaults: ``clip_value=0.01``, ``n_critic=5``, RMSProp with ``lr=5e-5``).

    Args:
        input_dim: number of dimensions ``D`` (``side * side`` with ``side`` a multiple of 4 for ``"conv"``).
        latent_dim: size of ``z``.
        network: ``"conv"`` (DCGAN generator; critic without batch norm) or ``"mlp"``.
        channels: feature maps of the convolutional networks.
        hidden_dims: hidden widths of the fully connected networks (the critic's reversed).
        num_levels: the data lie in ``[0, num_levels - 1]`` (17 for the digits' values 0..16).
        n_critic: critic updates per generator update.
        clip_value: bound on the absolute value of every critic parameter.
    """

    optimizer_kind: ClassVar[OptimizerKind] = "rmsprop"
    optimizer_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, input_dim: int = 64, latent_dim: int = 32, network: Network = "conv", channels: int = 32,
                 hidden_dims: Sequence[int] = (256, 256), num_levels: int = 17, n_critic: int = 5,
                 clip_value: float = 0.01) -> None:
        super().__init__(input_dim, latent_dim, network, channels, hidden_dims, num_levels, n_critic)
        if isinstance(clip_value, bool) or not isinstance(clip_value, (int, float)) or not clip_value > 0:
            raise ValueError(f"clip_value must be a positive number, got {clip_value!r}")
        self.clip_value = float(clip_value)

    @torch.no_grad()
    def after_discriminator_step(self) -> None:
        """Clip every critic parameter to ``[-clip_value, clip_value]``, in place."""
        for p in self.discriminator_parameters():
            p.clamp_(-self.clip_value, self.clip_value)


@register_model("wgangp")
class WGANGP(_Wasserstein):
    """WGAN-GP: the Wasserstein critic loss plus ``penalty_weight * E[(||grad f(u_hat)|| - 1)^2]`` at
    random interpolates ``u_hat`` of real and generated images (in the networks' unit space), no
    normalization across the batch in the critic, Adam with ``betas=(0, 0.9)``.

    Gulrajani, Ahmed, Arjovsky, Dumoulin & Courville, "Improved Training of Wasserstein GANs",
    NeurIPS 2017 (their defaults: ``penalty_weight=10``, ``n_critic=5``, ``lr=1e-4``).

    Args:
        input_dim: number of dimensions ``D`` (``side * side`` with ``side`` a multiple of 4 for ``"conv"``).
        latent_dim: size of ``z``.
        network: ``"conv"`` (DCGAN generator; critic without batch norm) or ``"mlp"``.
        channels: feature maps of the convolutional networks.
        hidden_dims: hidden widths of the fully connected networks (the critic's reversed).
        num_levels: the data lie in ``[0, num_levels - 1]`` (17 for the digits' values 0..16).
        n_critic: critic updates per generator update.
        penalty_weight: weight ``lambda`` of the gradient penalty.
    """

    optimizer_options: ClassVar[dict[str, Any]] = {"betas": (0.0, 0.9)}

    def __init__(self, input_dim: int = 64, latent_dim: int = 32, network: Network = "conv", channels: int = 32,
                 hidden_dims: Sequence[int] = (256, 256), num_levels: int = 17, n_critic: int = 5,
                 penalty_weight: float = 10.0) -> None:
        super().__init__(input_dim, latent_dim, network, channels, hidden_dims, num_levels, n_critic)
        if isinstance(penalty_weight, bool) or not isinstance(penalty_weight, (int, float)) or not penalty_weight >= 0:
            raise ValueError(f"penalty_weight must be a non-negative number, got {penalty_weight!r}")
        self.penalty_weight = float(penalty_weight)

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor, **ctx: Any) -> torch.Tensor:
        """The Wasserstein critic loss plus the weighted gradient penalty; images ``(N, D)`` in the data range."""
        penalty = gradient_penalty(self.discriminator, self.to_unit(real), self.to_unit(fake))
        return super().discriminator_loss(real, fake) + self.penalty_weight * penalty
