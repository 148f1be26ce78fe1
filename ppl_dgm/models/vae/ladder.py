"""Hierarchical VAE with a ladder (top-down, precision-weighted) inference path (Sønderby et al., 2016)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import kl_divergence

from ppl_dgm.core import X, data_plate
from ppl_dgm.models.registry import register_model
from ppl_dgm.models.vae.base import MIN_POSTERIOR_SCALE, Activation, AmortizedVAE, check_positive
from ppl_dgm.models.vae.likelihoods import Likelihood
from ppl_dgm.nn import MLP
from ppl_dgm.nn.mlp import ACTIVATIONS

Gaussian = tuple[torch.Tensor, torch.Tensor]
"""A diagonal Gaussian as ``(loc, scale)``, each ``(..., k)``."""


def precision_weighted(a: Gaussian, b: Gaussian) -> Gaussian:
    """The normalized product of two diagonal Gaussians ``N(a) * N(b)``, per dimension.

    ``scale**2 = 1 / (1/scale_a**2 + 1/scale_b**2)`` and ``loc = scale**2 * (loc_a/scale_a**2 + loc_b/scale_b**2)``:
    the two means weighted by their precisions (Sønderby et al., 2016, eq. 19-20). Computed from the variances,
    ``loc = (loc_a var_b + loc_b var_a) / (var_a + var_b)``, which stays finite for tiny scales.

    Args:
        a: ``(loc, scale)``, each ``(..., k)`` (broadcastable with ``b``).
        b: ``(loc, scale)``, each ``(..., k)``.

    Returns:
        ``(loc, scale)`` of the combined Gaussian, each of the broadcast shape.
    """
    var_a, var_b = a[1].square(), b[1].square()
    total = var_a + var_b
    return (a[0] * var_b + b[0] * var_a) / total, (var_a * var_b / total).sqrt()


def _gaussian(out: torch.Tensor) -> Gaussian:
    """Split a network output ``(..., 2k)`` into a mean and a positive scale, each ``(..., k)``."""
    loc, raw_scale = out.chunk(2, dim=-1)
    return loc, F.softplus(raw_scale) + MIN_POSTERIOR_SCALE


@register_model("hvae")
class HierarchicalVAE(AmortizedVAE):
    """Ladder VAE (Sønderby et al., 2016): ``L >= 2`` stochastic layers with a top-down inference path.

    Story: ``z_L ~ N(0, I)``; ``z_i | z_{i+1} ~ N(mu_i(z_{i+1}), sigma_i(z_{i+1}))`` for ``i = L-1 .. 1``;
    ``x | z_1 ~ p(x | decoder(z_1))``. Guide: a deterministic bottom-up pass ``d_1 = f_1(x)``,
    ``d_i = f_i(d_{i-1})`` gives each layer a Gaussian estimate ``N(mu_hat_i, sigma_hat_i)``; the top-down pass
    draws ``z_L ~ N(mu_hat_L, sigma_hat_L)`` and then ``z_i ~ q(z_i | z_{i+1}, x)``, the precision-weighted
    combination (`precision_weighted`) of the bottom-up estimate with the model's own conditional prior
    ``p(z_i | z_{i+1})`` -- the top-down networks are shared by model and guide. Sites ``"z1"`` (bottom) ..
    ``"zL"`` (top), all local to plate ``"data"`` and reparameterized, so ``objective="iwae"``,
    `ppl_dgm.log_likelihood` and the PSIS diagnostic apply unchanged.

    The code views (`posterior_mean`, `decode_mean`) speak of the top layer ``z_L``; `kl_per_dim` concatenates
    all layers, bottom first (``[z_1 | z_2 | ... | z_L]``); `kl_per_layer` sums it per layer. Upper layers
    collapsing onto their prior (KL near 0) is the classic failure; ``kl_warmup`` counters it by ramping the
    latent terms' weight from ``1/kl_warmup`` to 1 over the first ``kl_warmup`` gradient steps (training only:
    validation, scores and checkpoints see the plain bound).

    Args:
        input_dim: pixels ``D`` of an example (data shape ``(N, D)``).
        latent_dims: sizes of ``z_1 .. z_L``, bottom (next to ``x``) first; at least two layers.
        hidden_dims: widths of the hidden layers between ``x`` and the ladder (bottom-up) and between ``z_1``
            and ``x`` (decoder, mirrored).
        ladder_width: width of the deterministic layers ``d_i`` and of the hidden layer of each top-down
            network ``z_{i+1} -> p(z_i | z_{i+1})``.
        likelihood: per-pixel likelihood, see `PixelLikelihood` (the discretized logistic suits the digits).
        num_levels: integer values the data take, ``0..num_levels-1`` (default 17, or 2 for bernoulli).
        activation: nonlinearity of the networks.
        dropout: dropout rate of the hidden layers while fitting.
        kl_warmup: gradient steps over which the weight of the latent terms rises to 1 (0: no warm-up; the
            default 1000 is 100 epochs of the digits at batch size 100).

    References:
        Sønderby, Raiko, Maaløe, Sønderby & Winther (2016), Ladder Variational Autoencoders, NeurIPS.
    """

    def __init__(
        self,
        input_dim: int = 64,
        latent_dims: Sequence[int] = (16, 8),
        hidden_dims: Sequence[int] = (512, 512),
        ladder_width: int = 256,
        likelihood: Likelihood = "discretized_logistic",
        num_levels: int | None = None,
        activation: Activation = "elu",
        dropout: float = 0.3,
        kl_warmup: int = 1000,
    ) -> None:
        dims = list(latent_dims) if isinstance(latent_dims, Sequence) and not isinstance(latent_dims, str) else None
        if dims is None or len(dims) < 2:
            raise ValueError(f"latent_dims must list at least two layer sizes, bottom (z1) first, e.g. [16, 8]; got "
                             f"{latent_dims!r} (for a single stochastic layer use the plain VAE)")
        for i, k in enumerate(dims):
            check_positive(f"latent_dims[{i}]", k)
        check_positive("ladder_width", ladder_width)
        if not isinstance(kl_warmup, int) or isinstance(kl_warmup, bool) or kl_warmup < 0:
            raise ValueError(f"kl_warmup must be a non-negative integer (gradient steps; 0 turns warm-up off), "
                             f"got {kl_warmup!r}")
        super().__init__(input_dim, dims[-1], hidden_dims, likelihood, num_levels, activation, dropout,
                         encoder_out=ladder_width, decoder_in=dims[0])
        self.latent_dims, self.ladder_width, self.kl_warmup = tuple(dims), ladder_width, kl_warmup
        self.act = ACTIVATIONS[activation]()
        # bottom-up: d_i = act(up[i-1](d_{i-1})) for i >= 2 (d_1 = act(encoder(x))); layer i's estimate from d_i
        self.up = nn.ModuleList(nn.Linear(ladder_width, ladder_width) for _ in dims[1:])
        self.estimate = nn.ModuleList(nn.Linear(ladder_width, 2 * k) for k in dims)
        # top-down: p(z_i | z_{i+1}) for i = 1 .. L-1
        self.down = nn.ModuleList(MLP(dims[i + 1], (ladder_width,), 2 * dims[i], activation, dropout)
                                  for i in range(len(dims) - 1))
        self.register_buffer("warmup_step", torch.zeros((), dtype=torch.long))

    @property
    def sites(self) -> tuple[str, ...]:
        """Latent site names, bottom first: ``("z1", ..., "zL")``."""
        return tuple(f"z{i + 1}" for i in range(len(self.latent_dims)))

    @property
    def kl_weight(self) -> float:
        """Weight of the latent terms: ``min(1, (step + 1) / kl_warmup)`` while training, else 1."""
        if not self.training or self.kl_warmup == 0:
            return 1.0
        return min(1.0, (int(self.warmup_step) + 1) / self.kl_warmup)

    def conditional_prior(self, i: int, z_above: torch.Tensor) -> Gaussian:
        """``p(z_i | z_{i+1})`` for the 0-based layer ``i < L-1``: ``(loc, scale)`` each ``(N, k_i)``."""
        return _gaussian(self.down[i](z_above))

    def bottom_up(self, x: torch.Tensor) -> list[Gaussian]:
        """The deterministic pass: each layer's Gaussian estimate ``(mu_hat_i, sigma_hat_i)``, each ``(N, k_i)``,
        bottom first."""
        d = self.act(self.encoder(self.head.scaled(x)))
        estimates = [_gaussian(self.estimate[0](d))]
        for up, head in zip(self.up, self.estimate[1:], strict=True):
            d = self.act(up(d))
            estimates.append(_gaussian(head(d)))
        return estimates

    def top_down(self, x: torch.Tensor, draw: Any) -> list[tuple[Gaussian, Gaussian, torch.Tensor]]:
        """The inference pass from the top: per layer (top first) ``(q, p, z)`` with ``q`` the guide's
        ``(loc, scale)``, ``p`` the prior's (``N(0, I)`` at the top, else ``p(z_i | z_{i+1})``) and
        ``z = draw(name, q)`` the value passed down; each tensor ``(N, k_i)``."""
        estimates = self.bottom_up(x)
        q = estimates[-1]
        z = draw(self.sites[-1], q)
        layers = [(q, (self.prior_loc.expand_as(q[0]), self.prior_scale.expand_as(q[1])), z)]
        for i in reversed(range(len(self.latent_dims) - 1)):
            p = self.conditional_prior(i, z)
            q = precision_weighted(estimates[i], p)
            z = draw(self.sites[i], q)
            layers.append((q, p, z))
        return layers

    def _sample_prior(self) -> torch.Tensor:
        """Sample sites ``"zL"`` .. ``"z1"`` from the top-down prior; returns ``z_1``."""
        z = pyro.sample(self.sites[-1], self.prior())
        for i in reversed(range(len(self.latent_dims) - 1)):
            z = pyro.sample(self.sites[i], dist.Normal(*self.conditional_prior(i, z)).to_event(1))
        return z

    def model(self, x: torch.Tensor | None = None, n: int | None = None, **ctx: Any) -> torch.Tensor:
        """``z_L ~ N(0, I)``, ``z_i ~ p(z_i | z_{i+1})`` down to ``z_1``, ``x ~ p(x | z_1)``, in plate ``"data"``."""
        with data_plate(x, n):
            with self._latent_scale():
                z = self._sample_prior()
            return pyro.sample(X, self.observation(z), obs=x)

    def guide(self, x: torch.Tensor | None = None, n: int | None = None, **ctx: Any) -> None:
        """The ladder: bottom-up estimates, then top-down ``q(z_i | z_{i+1}, x)``; with ``x=None`` the prior."""
        if x is not None and self.training and torch.is_grad_enabled() and self.kl_warmup:
            self.warmup_step += 1
        with data_plate(x, n), self._latent_scale():
            if x is None:
                self._sample_prior()
            else:
                self.top_down(x, lambda name, q: pyro.sample(name, dist.Normal(*q).to_event(1)))

    @torch.no_grad()
    def posterior_mean(self, x: torch.Tensor, **ctx: Any) -> torch.Tensor:
        """``E_q[z_L | x] = mu_hat_L(x)``, the top layer's code, shape ``(N, k_L)``."""
        return self.bottom_up(x)[-1][0]

    @torch.no_grad()
    def decode_mean(self, z: torch.Tensor, **ctx: Any) -> torch.Tensor:
        """Mean of ``p(x | z_1)`` for top codes ``z_L`` ``(N, k_L)``, with each lower layer at its conditional prior
        mean ``z_i = mu_i(z_{i+1})``: images ``(N, D)`` in data units."""
        for i in reversed(range(len(self.latent_dims) - 1)):
            z = self.conditional_prior(i, z)[0]
        return self.head.mean(self.observation(z))

    @torch.no_grad()
    def kl_per_dim(self, x: torch.Tensor, num_samples: int = 16, **ctx: Any) -> torch.Tensor:
        """Per example and latent dimension of every layer, ``E_q[KL(q(z_ij | z_{i+1}, x) || p(z_ij | z_{i+1}))]``
        in nats, shape ``(N, k_1 + ... + k_L)``, laid out bottom first ``[z_1 | z_2 | ... | z_L]``.

        Exact for the top layer; for the others the KL is exact given ``z_{i+1}`` and averaged over
        ``num_samples`` guide draws of the layers above (torch's global generator). The row sums estimate
        ``KL(q(z | x) || p(z))`` of the whole hierarchy (the chain rule of the KL).
        """
        check_positive("num_samples", num_samples)
        n = x.shape[0]
        layers = self.top_down(x.repeat(num_samples, 1), lambda name, q: dist.Normal(*q).rsample())
        kls = [kl_divergence(dist.Normal(*q), dist.Normal(*p)) for q, p, _ in layers]
        return torch.cat(kls[::-1], dim=-1).unflatten(0, (num_samples, n)).mean(0)

    @torch.no_grad()
    def kl_per_layer(self, x: torch.Tensor, num_samples: int = 16, **ctx: Any) -> torch.Tensor:
        """`kl_per_dim` summed within each layer: shape ``(N, L)`` nats, bottom (``z_1``) first."""
        return torch.stack([part.sum(-1) for part in self.kl_per_dim(x, num_samples).split(self.latent_dims, -1)], -1)

    @torch.no_grad()
    def layer_means(self, x: torch.Tensor, num_samples: int = 16, **ctx: Any) -> list[torch.Tensor]:
        """``E_q[z_i | x]`` for every layer, bottom first, each ``(N, k_i)``: exact at the top, averaged over
        ``num_samples`` guide draws below (for active units per layer, Burda et al., 2016)."""
        check_positive("num_samples", num_samples)
        n = x.shape[0]
        layers = self.top_down(x.repeat(num_samples, 1), lambda name, q: dist.Normal(*q).rsample())
        return [q[0].unflatten(0, (num_samples, n)).mean(0) for q, _, _ in reversed(layers)]
