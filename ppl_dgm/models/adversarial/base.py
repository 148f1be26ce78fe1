"""The GAN family's common story and the members the adversarial engine drives."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ppl_dgm.core import Capabilities, GenerativeModel, X, Z, data_plate
from ppl_dgm.levels import UnitRangeLevels

OptimizerKind = Literal["adam", "rmsprop"]


def check_count(name: str, value: Any, low: int = 1) -> None:
    """``ValueError`` unless ``value`` is an integer ``>= low``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def check_widths(name: str, value: Any) -> None:
    """``ValueError`` unless ``value`` is a non-empty sequence of positive integers."""
    if isinstance(value, (str, bytes)) or not value or any(
            not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in value):
        raise ValueError(f"{name} must be a non-empty list of positive integers, got {value!r}")


def input_gradient_norms(critic: nn.Module | Any, u: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of ``d critic(u_n) / d u_n`` for each row of ``u`` ``(N, D)``; shape ``(N,)``,
    differentiable (for penalties on the gradient: WGAN-GP's, R1)."""
    u = u.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(u).sum(), u, create_graph=True)
    return grad.flatten(1).norm(dim=1)


class AdversarialModel(UnitRangeLevels, GenerativeModel):
    """Base of the GANs: the story ``z ~ N(0, I)``, ``x = G(z)`` recorded with ``pyro.deterministic``.

    Subclasses build ``self.generator`` (latents ``(N, latent_dim)`` -> ``(N, D)`` in ``(-1, 1)``) and
    ``self.discriminator`` (``(N, D)`` in ``[-1, 1]`` -> ``(N, 1)``). Both work in the *unit space*
    ``u = 2 x / (num_levels - 1) - 1``; the story maps the generator's output back to the data range
    ``[0, num_levels - 1]``. There is no likelihood (``Capabilities(likelihood="none")``): models are
    compared by sample quality. `ppl_dgm.infer.adversarial.AdversarialEngine` fits them through the
    members below (the losses, the two parameter groups, the optimizer kind, ``n_critic``), so a new
    GAN overrides only what differs.

    Args:
        input_dim: number of dimensions ``D`` of an example (data shape ``(N, D)``).
        latent_dim: size of ``z``.
        num_levels: the data lie in ``[0, num_levels - 1]`` (17 for the digits' values 0..16).
    """

    capabilities: ClassVar[Capabilities] = Capabilities(likelihood="none", data="continuous")
    default_engine: ClassVar[str] = "adversarial"
    optimizer_kind: ClassVar[OptimizerKind] = "adam"
    """Optimizer of both networks: ``"adam"`` (AdamW) or ``"rmsprop"``."""
    optimizer_options: ClassVar[dict[str, Any]] = {"betas": (0.5, 0.999)}
    """Keyword arguments of that optimizer besides ``lr`` and ``weight_decay`` (Radford et al.'s Adam betas)."""
    n_critic: int = 1
    """Discriminator updates per generator update."""

    def __init__(self, input_dim: int, latent_dim: int, num_levels: int) -> None:
        super().__init__()
        for name, value, low in (("input_dim", input_dim, 1), ("latent_dim", latent_dim, 1),
                                 ("num_levels", num_levels, 2)):
            check_count(name, value, low)
        self.input_dim, self.latent_dim, self.num_levels = input_dim, latent_dim, num_levels
        self.event_shape = (input_dim,)
        self.register_buffer("prior_loc", torch.zeros(latent_dim), persistent=False)
        self.register_buffer("prior_scale", torch.ones(latent_dim), persistent=False)

    # -- the story --------------------------------------------------------------------------------------

    def prior(self) -> dist.Distribution:
        """``N(0, I)`` over ``z``, event shape ``(latent_dim,)``."""
        return dist.Normal(self.prior_loc, self.prior_scale).to_event(1)

    def synthesize(self, z: torch.Tensor, **ctx: Any) -> torch.Tensor:
        """``G(z)`` in the data range: latents ``(N, latent_dim)`` -> images ``(N, D)`` in ``[0, num_levels - 1]``."""
        return self.from_unit(self.generator(z))

    def model(self, x: torch.Tensor | None = None, n: int | None = None) -> torch.Tensor:
        """``z ~ N(0, I)``, ``x = G(z)`` for ``n`` examples in plate ``"data"``; ``x`` recorded at site
        ``"x"`` with ``pyro.deterministic``, shape ``(n, D)``."""
        self.refuse_observed(x)
        with data_plate(None, n):
            z = pyro.sample(Z, self.prior())
            return pyro.deterministic(X, self.synthesize(z), event_dim=1)

    def refuse_observed(self, x: torch.Tensor | None) -> None:
        """``ValueError`` when the story is asked to observe data: an implicit model has no density to score it."""
        if x is not None:
            raise ValueError(f"{type(self).__name__} is an implicit model (x = G(z), no likelihood), so its story "
                             "cannot observe x; fit it with ppl_dgm.fit (the adversarial engine), draw with "
                             "ppl_dgm.draw(model, n), and compare it by sample quality (ppl_dgm.evaluation)")

    # -- what the adversarial engine calls ----------------------------------------------------------

    def generate(self, n: int, **ctx: Any) -> torch.Tensor:
        """``n`` fresh draws ``G(z)`` in the data range, differentiable in the generator's parameters;
        shape ``(n, D)``. What the engine shows the discriminator (a training-time variant of the story,
        e.g. with style mixing)."""
        z = torch.randn(n, self.latent_dim, dtype=self.prior_loc.dtype, device=self.prior_loc.device)
        return self.synthesize(z, **ctx)

    def critic(self, x: torch.Tensor, **ctx: Any) -> torch.Tensor:
        """Discriminator score of images ``(N, D)`` in the data range (a logit of "real", or a critic
        value); shape ``(N,)``."""
        return self.discriminator(self.to_unit(x)).squeeze(-1)

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor, **ctx: Any) -> torch.Tensor:
        """Cross-entropy of the discriminator on real (label 1) and generated (label 0) images,
        ``E[softplus(-D(real))] + E[softplus(D(fake))]``; images ``(N, D)`` in the data range, a scalar in nats."""
        return F.softplus(-self.critic(real, **ctx)).mean() + F.softplus(self.critic(fake, **ctx)).mean()

    def generator_loss(self, fake: torch.Tensor, **ctx: Any) -> torch.Tensor:
        """The non-saturating generator loss ``E[softplus(-D(fake))] = -E[log sigmoid D(G(z))]``
        (Goodfellow et al., 2014); ``fake`` ``(N, D)``, a scalar in nats."""
        return F.softplus(-self.critic(fake, **ctx)).mean()

    def after_discriminator_step(self) -> None:
        """Called after each discriminator update (e.g. to clip its weights); does nothing by default."""

    def generator_parameters(self) -> list[nn.Parameter]:
        """Parameters the generator's optimizer updates (everything but the discriminator's)."""
        critic = {id(p) for p in self.discriminator_parameters()}
        return [p for p in self.parameters() if id(p) not in critic]

    def discriminator_parameters(self) -> list[nn.Parameter]:
        """Parameters the discriminator's optimizer updates."""
        return list(self.discriminator.parameters())
