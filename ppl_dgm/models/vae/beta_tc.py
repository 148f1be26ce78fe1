"""beta-TCVAE (Chen et al., 2018): the KL term split into index-code mutual information, total correlation and
dimension-wise KL, each weighted on its own in the training objective."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro
import torch

from ppl_dgm.core import Z, data_plate
from ppl_dgm.models.registry import register_model
from ppl_dgm.models.vae.base import Activation, AmortizedVAE
from ppl_dgm.models.vae.beta import check_weight
from ppl_dgm.models.vae.beta_tc_estimators import (
    Estimator,
    KLDecomposition,
    kl_decomposition,
    kl_parts,
    log_aggregate_posterior,
    mixture_log_weights,
)
from ppl_dgm.models.vae.likelihoods import Likelihood

PENALTY = "tc_penalty"
"""Guide site (a ``pyro.factor`` in plate ``"data"``) holding the training objective's departure from the ELBO."""


@register_model("betatcvae")
class BetaTCVAE(AmortizedVAE):
    """beta-TCVAE (Chen, Li, Grosse & Duvenaud, 2018, "Isolating sources of disentanglement in variational
    autoencoders", NeurIPS): the VAE's story and Gaussian guide, trained on
    ``E_q[log p(x | z)] - alpha * I - beta * TC - gamma * DWKL`` where, with ``q(z) = 1/N sum_n q(z | x_n)``,
    the KL term ``E_x KL(q(z | x) || p(z))`` is split into the index-code mutual information
    ``I = E[log q(z | x) - log q(z)]``, the total correlation ``TC = E[log q(z) - sum_j log q(z_j)]`` and the
    dimension-wise KL ``DWKL = E[sum_j log q(z_j) - log p(z)]``.

    ``log q(z)`` and ``log q(z_j)`` are estimated by minibatch-weighted sampling over the training minibatch
    (`ppl_dgm.models.vae.beta_tc_estimators`), which needs the training set's size ``N``: `setup` (run by
    `ppl_dgm.fit`) records it, and checkpoints keep it. The departure from the ELBO,
    ``-(alpha-1) I_i - (beta-1) TC_i - (gamma-1) DWKL_i`` per example, is a ``pyro.factor`` in the guide,
    present only while the module is in training mode: `ppl_dgm.log_likelihood` (evaluation mode) and the
    validation loss of `ppl_dgm.fit` see the plain model and guide. With ``objective="iwae"`` the ``K``
    particles are ``K`` stacked copies of the minibatch and the MWS sum runs over all ``K * M`` rows; with
    weight ``1 / (N K M)`` each that is the MWS over the ``M`` examples with each example's posterior averaged
    over its ``K`` encoder passes (identical without dropout), and each particle's log-weight carries its
    own penalty (the bound is then a training objective, not a bound on ``log p(x)``). The MWS values are
    offset (by about ``-log N`` per coordinate), so the training loss `fit` reports is shifted by roughly
    ``(beta - 1) (k - 1) log N`` nats; `kl_decomposition` reports the three parts with the exact mixture.

    Args:
        input_dim: number of dimensions ``D`` of an example (data shape ``(N, D)``).
        latent_dim: size of ``z``.
        hidden_dims: widths of the hidden layers of encoder and decoder (mirrored).
        likelihood: per-pixel likelihood (see `ppl_dgm.models.VAE`).
        num_levels: number of integer values the data takes, ``0..num_levels-1``.
        activation: nonlinearity of the networks.
        dropout: dropout rate of the hidden layers while fitting.
        alpha: weight of the index-code mutual information, finite ``>= 0``.
        beta: weight of the total correlation, finite ``>= 0`` (the paper's knob; 6 by default).
        gamma: weight of the dimension-wise KL, finite ``>= 0``.
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
        alpha: float = 1.0,
        beta: float = 6.0,
        gamma: float = 1.0,
    ) -> None:
        weights = [check_weight(name, value, positive=False)
                   for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma))]
        super().__init__(input_dim, latent_dim, hidden_dims, likelihood, num_levels, activation, dropout)
        self.alpha, self.beta, self.gamma = weights
        self.register_buffer("dataset_size", torch.tensor(0))

    def setup(self, x: torch.Tensor, **ctx: Any) -> None:
        """Record the number of training examples ``N = len(x)`` the MWS estimator weights by."""
        self.dataset_size.fill_(x.shape[0])

    @property
    def penalized(self) -> bool:
        """Whether the training objective departs from the ELBO (some weight is not 1)."""
        return (self.alpha, self.beta, self.gamma) != (1.0, 1.0, 1.0)

    def guide(self, x: torch.Tensor | None = None, n: int | None = None, **ctx: Any) -> None:
        """``z ~ q(z | x)``; in training mode also the factor `PENALTY` (``-penalty`` of the log-weight)."""
        with data_plate(x, n):
            if x is None:
                pyro.sample(Z, self.prior(**ctx))
                return
            q = self.posterior(x, **ctx)
            z = pyro.sample(Z, q)
            if self.training and self.penalized:
                pyro.factor(PENALTY, self.penalty(z, q.base_dist.loc, q.base_dist.scale, **ctx), has_rsample=True)

    def penalty(self, z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, **ctx: Any) -> torch.Tensor:
        """``(alpha-1) I_i + (beta-1) TC_i + (gamma-1) DWKL_i`` per row, ``(M,)`` nats: what the training
        objective subtracts from each log-weight, by MWS over the ``M`` rows of ``z`` ``(M, k)`` drawn from the
        posteriors with means ``loc`` and deviations ``scale`` ``(M, k)``."""
        size = int(self.dataset_size)
        if size < 1:
            raise ValueError("BetaTCVAE needs the training set's size for its minibatch estimates: call "
                             "model.setup(train_x) before training (ppl_dgm.fit does)")
        log_weights = mixture_log_weights(torch.arange(z.shape[0]), z.shape[0], size, "mws").to(z)
        log_qz, log_qz_dims = log_aggregate_posterior(z, loc, scale, log_weights)
        log_qz_x = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
        mi, tc, dwkl = kl_parts(log_qz_x, log_qz, log_qz_dims, self.prior(**ctx).log_prob(z))
        return (self.alpha - 1) * mi + (self.beta - 1) * tc + (self.gamma - 1) * dwkl

    def kl_decomposition(self, x: torch.Tensor, estimator: Estimator = "stratified", dataset_size: int | None = None,
                         **ctx: Any) -> KLDecomposition:
        """``I``, ``TC``, ``DWKL`` and the KL term they sum to, nats per example averaged over ``x``: see
        `ppl_dgm.models.vae.beta_tc_estimators.kl_decomposition` (exact over ``x`` by default)."""
        return kl_decomposition(self, x, estimator, dataset_size, **ctx)
