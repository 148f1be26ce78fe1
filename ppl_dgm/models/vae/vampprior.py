"""VampPrior VAE (Tomczak & Welling, 2018): the prior a mixture of the guide at learned pseudo-inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro.distributions as dist
import torch
from torch import nn

from ppl_dgm.models.registry import register_model
from ppl_dgm.models.vae.base import Activation, AmortizedVAE, check_positive
from ppl_dgm.models.vae.likelihoods import Likelihood

PSEUDO_INPUT_MARGIN = 0.05
"""Training images start the pseudo-inputs clipped to ``[margin, 1 - margin]`` of the data range (their
sigmoid parameterization is finite there and its gradient not vanishing)."""


@register_model("vampprior")
class VampPriorVAE(AmortizedVAE):
    """VampPrior VAE: ``z ~ (1/K) sum_k q(z | u_k)``, ``x | z ~ p(x | decoder(z))``; guide ``q(z | x) =
    N(mu(x), sigma(x))``, the same encoder that makes the prior's components.

    The "variational mixture of posteriors" prior approximates the aggregate posterior ``(1/N) sum_n q(z | x_n)``
    (the prior that maximizes the ELBO) by ``K`` learned pseudo-inputs ``u_k``, images in the data range
    ``(0, num_levels - 1)`` (a sigmoid of free parameters). It sits at site ``"z"`` as a
    ``MixtureSameFamily`` of diagonal Gaussians, so the ELBO, the IWAE bound and ``ppl_dgm.log_likelihood``
    need nothing new; the prior costs one encoder pass over the ``K`` pseudo-inputs per call. `setup` starts
    the pseudo-inputs at ``K`` distinct training images drawn at random (the authors' code starts them at random
    noise by default, training images being its option): the prior starts where the codes of the data are,
    and the pseudo-inputs start in the data's range.
    `kl_per_dim` is ``None``: the KL to a mixture prior does not split by dimension.

    Tomczak & Welling, "VAE with a VampPrior", AISTATS 2018.

    Args:
        input_dim: number of dimensions ``D`` of an example (data shape ``(N, D)``).
        latent_dim: size of ``z``.
        hidden_dims: widths of the hidden layers of encoder and decoder (mirrored).
        likelihood: per-pixel likelihood (see `ppl_dgm.models.VAE`).
        num_levels: number of integer values the data takes, ``0..num_levels-1``.
        activation: nonlinearity of the networks.
        dropout: dropout rate of the hidden layers while fitting.
        num_pseudo_inputs: ``K``, the components of the prior; at most the number of training examples.
    """

    def __init__(
        self,
        input_dim: int = 64,
        latent_dim: int = 16,
        hidden_dims: Sequence[int] = (512, 512),
        likelihood: Likelihood = "categorical",
        num_levels: int | None = None,
        activation: Activation = "elu",
        dropout: float = 0.3,
        num_pseudo_inputs: int = 100,
    ) -> None:
        check_positive("num_pseudo_inputs", num_pseudo_inputs)
        super().__init__(input_dim, latent_dim, hidden_dims, likelihood, num_levels, activation, dropout)
        self.num_pseudo_inputs = num_pseudo_inputs
        self.pseudo_logits = nn.Parameter(torch.zeros(num_pseudo_inputs, input_dim))
        self.register_buffer("pseudo_inputs_set", torch.tensor(False))

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """The pseudo-inputs ``u_k``, ``(K, D)`` images in data units ``(0, num_levels - 1)``."""
        return (self.num_levels - 1) * torch.sigmoid(self.pseudo_logits)

    def setup(self, x: torch.Tensor, **ctx: Any) -> None:
        """Start the pseudo-inputs at ``K`` distinct training images ``x`` ``(N, D)`` drawn at random (torch's
        generator), once: a model set up before (a second fit, a loaded checkpoint) keeps its own.

        Raises:
            ValueError: ``K`` is larger than ``N``.
        """
        n, k = x.shape[0], self.num_pseudo_inputs
        if k > n:
            raise ValueError(f"{type(self).__name__} has num_pseudo_inputs={k} but the training data has only {n} "
                             f"examples: pass num_pseudo_inputs <= {n} (e.g. -O num_pseudo_inputs={max(1, n // 10)})")
        if bool(self.pseudo_inputs_set):
            return
        chosen = x[torch.randperm(n, device=x.device)[:k]]
        fraction = self.head.scaled(chosen).clamp(PSEUDO_INPUT_MARGIN, 1 - PSEUDO_INPUT_MARGIN)
        with torch.no_grad():
            self.pseudo_logits.copy_(torch.logit(fraction))
            self.pseudo_inputs_set.fill_(True)

    def prior(self, **ctx: Any) -> dist.Distribution:
        """``p(z) = (1/K) sum_k N(z; mu(u_k), sigma(u_k))``: a ``MixtureSameFamily``, event shape ``(k,)``."""
        loc, scale = self.encode(self.pseudo_inputs)
        components = dist.Normal(loc, scale).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=loc.new_zeros(self.num_pseudo_inputs)), components)

    @torch.no_grad()
    def kl_per_dim(self, x: torch.Tensor, **ctx: Any) -> None:
        """``None``: ``KL(q(z | x) || p(z))`` against a mixture prior does not split by dimension."""
        return None
