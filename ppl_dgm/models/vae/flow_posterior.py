"""VAE with a normalizing-flow posterior: ``q(z | x)`` a Gaussian pushed through amortized planar, Householder,
Sylvester or inverse autoregressive transforms."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro.distributions as dist
import torch
import torch.nn.functional as F

from ppl_dgm.models.registry import register_model
from ppl_dgm.models.vae.base import MIN_POSTERIOR_SCALE, Activation, AmortizedVAE, check_positive
from ppl_dgm.models.vae.flow_posterior_transforms import Flow, conditional_flows
from ppl_dgm.models.vae.likelihoods import Likelihood

MEAN_SAMPLES = 256
"""Draws of ``q(z | x)`` behind `FlowPosteriorVAE.posterior_mean`."""


@register_model("flowvae")
class FlowPosteriorVAE(AmortizedVAE):
    """VAE whose guide is a normalizing flow: ``z_0 ~ N(mu(x), sigma(x))``, ``z = f_K o ... o f_1(z_0; h(x))``,

    ``log q(z | x) = log N(z_0; mu, sigma) - sum_k log|det df_k / dz_{k-1}|``; the story is the plain VAE's,
    ``z ~ N(0, I)``, ``x | z ~ p(x | decoder(z))``. The encoder outputs ``mu``, ``sigma`` and a context ``h(x)``;
    the parameters of every layer ``f_k`` are a small network of ``h`` (amortized flows), so the posterior of
    each image can be skewed, rotated or bent where the diagonal Gaussian of the plain VAE cannot. A closer
    guide tightens the ELBO and lowers the variance of importance-weighted estimates.

    Layers (``flow``): ``"planar"`` (Rezende & Mohamed, 2015, "Variational inference with normalizing flows",
    ICML) ``z + u_hat tanh(w.z + b)``; ``"householder"`` (Tomczak & Welling, 2016, "Improving variational
    auto-encoders using Householder flow", arXiv:1611.09630) one reflection per layer, volume preserving (a
    full-covariance Gaussian guide); ``"sylvester"`` (van den Berg, Hasenclever, Tomczak & Welling, 2018,
    "Sylvester normalizing flows for variational inference", UAI) in its Householder form,
    ``z + Q R1 tanh(R2 Q^T z + b)`` with ``Q`` a product of ``k`` reflections; ``"iaf"`` (Kingma, Salimans,
    Jozefowicz, Chen, Sutskever & Welling, 2016, "Improved variational inference with inverse autoregressive
    flow", NeurIPS) gated affine autoregressive layers whose MADE also reads ``h``. Planar and Sylvester
    layers have no closed-form inverse: the guide's ``log q`` is scored on its own draws through the
    transforms' cache, which is what the ELBO, the IWAE bound and `ppl_dgm.log_likelihood` do.

    Args:
        input_dim: number of dimensions ``D`` of an example (data shape ``(N, D)``).
        latent_dim: size ``k`` of ``z`` (at least 2).
        hidden_dims: widths of the hidden layers of encoder and decoder (mirrored).
        likelihood: per-pixel likelihood (see `ppl_dgm.models.VAE`).
        num_levels: number of integer values the data takes, ``0..num_levels-1``.
        activation: nonlinearity of the networks.
        dropout: dropout rate of the hidden layers while fitting.
        flow: ``"planar"``, ``"householder"``, ``"sylvester"`` or ``"iaf"`` (the default: with
            Householder the best of the four on the digits when trained with ``objective="iwae"``).
        num_flows: number ``K`` of flow layers.
        context_dim: size of the context ``h(x)`` the encoder hands the flow layers.
        flow_hidden: hidden units of each layer's parameter network (for ``"iaf"``: of its MADE, ``>= k``).
    """

    def __init__(
        self,
        input_dim: int = 64,
        latent_dim: int = 16,
        hidden_dims: Sequence[int] = (512, 512),
        likelihood: Likelihood = "discretized_logistic",
        num_levels: int | None = None,
        activation: Activation = "elu",
        dropout: float = 0.3,
        flow: Flow = "iaf",
        num_flows: int = 4,
        context_dim: int = 64,
        flow_hidden: int = 128,
    ) -> None:
        for name, value in (("num_flows", num_flows), ("context_dim", context_dim), ("flow_hidden", flow_hidden)):
            check_positive(name, value)
        check_positive("latent_dim", latent_dim)
        if latent_dim < 2:
            raise ValueError(f"a flow posterior needs latent_dim >= 2, got {latent_dim} (use VAE for one latent)")
        if flow == "iaf" and flow_hidden < latent_dim:
            raise ValueError(f"the IAF's MADE needs flow_hidden >= latent_dim, got {flow_hidden} < {latent_dim}")
        super().__init__(input_dim, latent_dim, hidden_dims, likelihood, num_levels, activation, dropout,
                         encoder_out=2 * latent_dim + context_dim)
        self.flow, self.num_flows, self.context_dim, self.flow_hidden = flow, num_flows, context_dim, flow_hidden
        self.flows = conditional_flows(flow, latent_dim, context_dim, num_flows, flow_hidden)

    def _encoded(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Base mean and standard deviation ``(N, k)`` and the flows' context ``h(x)`` ``(N, c)``."""
        k = self.latent_dim
        out = self.encoder(self.head.scaled(x))
        return out[..., :k], F.softplus(out[..., k:2 * k]) + MIN_POSTERIOR_SCALE, out[..., 2 * k:]

    def encode(self, x: torch.Tensor, **ctx: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation ``(N, k)`` each of the Gaussian base of ``q(z | x)`` (before the flow)."""
        return self._encoded(x)[:2]

    def posterior(self, x: torch.Tensor, **ctx: Any) -> dist.TransformedDistribution:
        """``q(z | x)``: Pyro's ``TransformedDistribution`` of the Gaussian base through the flow conditioned on
        ``h(x)``; batch shape ``(N,)``, event shape ``(k,)``. Its ``log_prob`` is right for its own draws."""
        loc, scale, context = self._encoded(x)
        base = dist.Normal(loc, scale).to_event(1)
        return dist.ConditionalTransformedDistribution(base, list(self.flows)).condition(context)

    @torch.no_grad()
    def posterior_mean(self, x: torch.Tensor, **ctx: Any) -> torch.Tensor:
        """``E_q[z | x]`` ``(N, k)`` by Monte Carlo over `MEAN_SAMPLES` draws; the base noise comes from a
        generator of its own with a fixed seed, so the result is deterministic and the global RNG untouched."""
        q = self.posterior(x)
        generator = torch.Generator().manual_seed(0)
        loc, scale = q.base_dist.base_dist.loc, q.base_dist.base_dist.scale
        noise = torch.randn((MEAN_SAMPLES, *loc.shape), generator=generator, dtype=loc.dtype).to(loc.device)
        z = loc + scale * noise
        for transform in q.transforms:
            z = transform(z)
        return z.mean(0)

    @torch.no_grad()
    def kl_per_dim(self, x: torch.Tensor, **ctx: Any) -> None:
        """``None``: the flow mixes the dimensions of ``z``, so ``KL(q || p)`` does not split by dimension."""
        return None
