"""Hyperspherical VAE (Davidson et al., 2018): a von Mises-Fisher guide and a uniform prior on the sphere."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro.distributions as dist
import torch
import torch.nn.functional as F

from ppl_dgm.models.registry import register_model
from ppl_dgm.models.vae.base import Activation, AmortizedVAE
from ppl_dgm.models.vae.likelihoods import Likelihood
from ppl_dgm.models.vae.von_mises_fisher import HypersphericalUniform, VonMisesFisher, log_sphere_area

MIN_CONCENTRATION = 1.0
"""Added to the softplus of the encoder's concentration output (Davidson et al. add 1 likewise)."""


@register_model("svae")
class SVAE(AmortizedVAE):
    """Hyperspherical VAE, S-VAE (Davidson, Falorsi, De Cao, Kipf & Tomczak, 2018, "Hyperspherical
    Variational Auto-Encoders", UAI): ``z ~ U(S^{m-1})``, ``x | z ~ p(x | decoder(z))``, guide
    ``q(z | x) = vMF(mu(x), kappa(x))`` on the unit sphere in ``R^m``.

    The uniform prior has no centre: nothing pulls the codes towards one point, as the standard normal
    prior of a Gaussian VAE pulls them towards the origin, so in a low-dimensional latent space (a circle
    for ``m = 2``, the 2-sphere for ``m = 3``) the codes can spread over the whole sphere.
    The guide's samples are reparameterized (Wood's rejection sampler + a Householder reflection); the
    rejection step's gradient correction (Naesseth et al., 2017) is carried by ``VonMisesFisher.score_parts``.
    ppl_dgm's ``"elbo"`` and ``"iwae"`` add it as a score-function surrogate (``LogWeights.score``, no
    baseline), as Pyro's own ELBOs do, so the ``kappa``-gradient is unbiased (see the docs page).
    ``KL(q || p) = log |S^{m-1}| - H(q)`` is in closed form (`kl`); it does not split by
    coordinate, so `kl_per_dim` is ``None``.

    Args:
        input_dim: number of dimensions ``D`` of an example (data shape ``(N, D)``).
        latent_dim: ambient dimension ``m >= 2`` of ``z``; the codes live on ``S^{m-1}`` (``m - 1`` degrees of
            freedom). The default 10 fitted the digits best of 3, 10 and 16 (docs page).
        hidden_dims: widths of the hidden layers of encoder and decoder (mirrored).
        likelihood: per-pixel likelihood (see `ppl_dgm.models.VAE`).
        num_levels: number of integer values the data takes, ``0..num_levels-1``.
        activation: nonlinearity of the networks.
        dropout: dropout rate of the hidden layers while fitting.
    """

    def __init__(
        self,
        input_dim: int = 64,
        latent_dim: int = 10,
        hidden_dims: Sequence[int] = (512, 512),
        likelihood: Likelihood = "categorical",
        num_levels: int | None = None,
        activation: Activation = "elu",
        dropout: float = 0.3,
    ) -> None:
        if isinstance(latent_dim, int) and not isinstance(latent_dim, bool) and latent_dim == 1:
            raise ValueError("latent_dim must be >= 2 for an SVAE (z lives on the sphere S^(latent_dim-1) in "
                             "R^latent_dim; S^0 is two points): use latent_dim=2 for a circle")
        super().__init__(input_dim, latent_dim, hidden_dims, likelihood, num_levels, activation, dropout,
                         encoder_out=latent_dim + 1)

    def prior(self, **ctx: Any) -> dist.Distribution:
        """``p(z) = U(S^{m-1})``, event shape ``(m,)``: density ``1 / |S^{m-1}|``."""
        return HypersphericalUniform(self.latent_dim, device=self.prior_loc.device, dtype=self.prior_loc.dtype)

    def encode(self, x: torch.Tensor, **ctx: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean direction ``mu`` ``(N, m)`` (unit norm) and concentration ``kappa`` ``(N,)`` of ``q(z | x)``."""
        out = self.encoder(self.head.scaled(x))
        loc = F.normalize(out[..., :-1], dim=-1)
        return loc, F.softplus(out[..., -1]) + MIN_CONCENTRATION

    def posterior(self, x: torch.Tensor, **ctx: Any) -> dist.Distribution:
        """``q(z | x) = vMF(mu(x), kappa(x))``, batch shape ``(N,)``, event shape ``(m,)``."""
        return VonMisesFisher(*self.encode(x, **ctx))

    @torch.no_grad()
    def posterior_mean(self, x: torch.Tensor, **ctx: Any) -> torch.Tensor:
        """``E_q[z | x] = A_m(kappa) mu``, shape ``(N, m)`` (inside the ball: its norm shrinks as ``kappa`` falls)."""
        return self.posterior(x, **ctx).mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, **ctx: Any) -> torch.Tensor:
        """Mean of ``p(x | z)`` at the posterior mode ``z = mu(x)`` (on the sphere, where the decoder was
        trained); shape ``(N, D)``."""
        return self.decode_mean(self.encode(x, **ctx)[0], **ctx)

    @torch.no_grad()
    def kl(self, x: torch.Tensor, **ctx: Any) -> torch.Tensor:
        """``KL(q(z | x) || U(S^{m-1})) = log |S^{m-1}| - H(vMF(mu, kappa))`` per example, ``(N,)`` nats."""
        return log_sphere_area(self.latent_dim) - self.posterior(x, **ctx).entropy()

    @torch.no_grad()
    def kl_per_dim(self, x: torch.Tensor, **ctx: Any) -> None:
        """``None``: the KL of a vMF against the uniform prior does not split by coordinate (see `kl`)."""
        return None
