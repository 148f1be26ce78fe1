"""Vector-quantized VAE (van den Oord et al., 2017) with an autoregressive prior over its codes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, get_args

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ppl_dgm.models.registry import register_model
from ppl_dgm.models.vae import vqvae_engine  # noqa: F401  (registers the "vqvae" engine)
from ppl_dgm.models.vae.base import Activation, AmortizedVAE, check_positive
from ppl_dgm.models.vae.likelihoods import Likelihood
from ppl_dgm.models.vae.vqvae_prior import CodePrior, QuantizedPrior, nearest_codes

Codebook = Literal["loss", "ema"]
EMA_EPSILON = 1e-5
"""Laplace smoothing of the EMA cluster sizes (keeps unused codes finite)."""


@register_model("vqvae")
class VQVAE(AmortizedVAE):
    """VQ-VAE (van den Oord, Vinyals & Kavukcuoglu, 2017, Neural Discrete Representation Learning).

    The encoder maps ``x`` to ``M`` vectors ``z_e(x)_m`` in ``R^d``; each is replaced by its nearest
    codebook entry, ``k_m(x) = argmin_j ||z_e(x)_m - e_j||``, ``z_q = (e_{k_1}, ..., e_{k_M})``, and the
    decoder gives the likelihood ``p(x | z_q)`` (the family's pixel likelihoods). Gradients pass the
    quantization straight through (``dL/dz_e := dL/dz_q``). Training adds, per example,
    ``||sg(z_e) - z_q||^2`` (the codebook loss; or exponential moving averages of the assigned
    encodings instead, ``codebook="ema"``) and ``beta ||z_e - sg(z_q)||^2`` (the commitment loss);
    these act only in training (the ``"vqvae"`` engine adds them), never in ``ppl_dgm.log_likelihood``.

    The story: ``k ~ p(k)`` (an autoregressive MADE prior over the ``M`` indices, `CodePrior`),
    ``z = e_k``, ``x ~ p(x | z)``; the guide ``q(k | x)`` is the point mass on ``k(x)``. The
    importance weight is then ``p(x | z_q(x)) p(k(x))`` for every sample, and
    ``ppl_dgm.log_likelihood`` reports ``log p(x | z_q(x)) + log p(k(x)) <= log p(x)``, an ELBO with
    zero entropy (kind ``"estimate"``; any number of samples gives the same figure). The prior is
    fitted after the autoencoder, on its training codes, by the ``"vqvae"`` engine (`default_engine`).

    Defaults suit the digits (``M=4`` positions, ``K=32`` codes: 20 bits per image at most).

    Args:
        input_dim: pixels ``D`` of an example (data shape ``(N, D)``).
        num_positions: ``M``, code indices per example.
        code_dim: ``d``, size of each codebook entry.
        num_codes: ``K``, codebook entries.
        hidden_dims: widths of the hidden layers of encoder and decoder (mirrored).
        likelihood: per-pixel likelihood, see `ppl_dgm.models.vae.likelihoods.PixelLikelihood`.
        num_levels: integer values the data take, ``0..num_levels-1`` (default 17, or 2 for bernoulli).
        activation: nonlinearity of the networks.
        dropout: dropout rate of the hidden layers while fitting.
        beta: weight of the commitment loss.
        codebook: ``"loss"`` (entries learned by the codebook loss) or ``"ema"`` (moving averages).
        ema_decay: decay of the moving averages (``codebook="ema"``).
        prior_hidden_dims: widths of the MADE prior's hidden layers.
    """

    default_engine = "vqvae"
    evaluation_samples = 1  # the guide is a point mass: every importance weight is the same

    def __init__(
        self,
        input_dim: int = 64,
        num_positions: int = 4,
        code_dim: int = 8,
        num_codes: int = 32,
        hidden_dims: Sequence[int] = (512, 512),
        likelihood: Likelihood = "discretized_logistic",
        num_levels: int | None = None,
        activation: Activation = "elu",
        dropout: float = 0.3,
        beta: float = 0.25,
        codebook: Codebook = "ema",
        ema_decay: float = 0.99,
        prior_hidden_dims: Sequence[int] = (256,),
    ) -> None:
        for name, value in (("num_positions", num_positions), ("code_dim", code_dim), ("num_codes", num_codes)):
            check_positive(name, value)
        if codebook not in get_args(Codebook):
            raise ValueError(f"codebook must be one of {', '.join(get_args(Codebook))}; got {codebook!r}")
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta!r}")
        if not 0 < ema_decay < 1:
            raise ValueError(f"ema_decay must lie in (0, 1), got {ema_decay!r}")
        width = num_positions * code_dim
        super().__init__(input_dim, width, hidden_dims, likelihood, num_levels, activation, dropout,
                         encoder_out=width)
        self.num_positions, self.code_dim, self.num_codes = num_positions, code_dim, num_codes
        self.beta, self.codebook_update, self.ema_decay = float(beta), codebook, float(ema_decay)
        entries = torch.empty(num_codes, code_dim).uniform_(-1 / num_codes, 1 / num_codes)
        if codebook == "loss":
            self.codebook = nn.Parameter(entries)
        else:
            self.register_buffer("codebook", entries)
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", entries.clone())
        self.code_prior = CodePrior(num_positions, num_codes, prior_hidden_dims)
        self._records: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def setup(self, x: torch.Tensor, **ctx: Any) -> None:
        """Start the codebook at ``K`` encodings of random training positions (fewer dead codes) and the
        prior at uniform (it is fitted after the autoencoder)."""
        self.code_prior.reset_uniform()
        with torch.no_grad():
            z_e = self.encoder(self.head.scaled(x)).reshape(-1, self.code_dim)
            picked = z_e[torch.randint(len(z_e), (self.num_codes,), device=z_e.device)]
            self.codebook.data.copy_(picked)
            if self.codebook_update == "ema":
                self.ema_count.fill_(1.0)
                self.ema_sum.copy_(picked)

    def encode_codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encodings ``z_e(x)``, ``(N, M, d)``, and their nearest codes ``k(x)``, ``(N, M)`` long."""
        z_e = self.encoder(self.head.scaled(x)).unflatten(-1, (self.num_positions, self.code_dim))
        return z_e, nearest_codes(z_e.detach(), self.codebook.detach())

    def prior(self, **ctx: Any) -> dist.Distribution:
        """``z = e_k`` with ``k ~ p(k)``: the `QuantizedPrior` over flattened codebook strings ``(M * d,)``."""
        return QuantizedPrior(self.code_prior, self.codebook)

    def posterior(self, x: torch.Tensor, **ctx: Any) -> dist.Distribution:
        """The point mass at ``z_q(x)`` (``(N, M * d)``), carrying the straight-through gradient to the encoder."""
        z_e, codes = self.encode_codes(x)
        if self._records is not None:
            self._records.append((z_e, codes))
        z_q = self.codebook[codes].detach()
        return dist.Delta((z_q + (z_e - z_e.detach())).flatten(-2), event_dim=1)  # value z_q, gradient to z_e

    @contextmanager
    def recording(self) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
        """Within the block, every guide call appends ``(z_e, codes)`` to the list yielded (what the
        training losses and the EMA update read)."""
        self._records = records = []
        try:
            yield records
        finally:
            self._records = None

    def quantization_loss(self, z_e: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Per example ``(N,)``: ``beta ||z_e - sg(e_k)||^2`` plus, for ``codebook="loss"``,
        ``||sg(z_e) - e_k||^2`` (sums over the ``M`` positions and ``d`` coordinates)."""
        z_q = self.codebook[codes]
        loss = self.beta * (z_e - z_q.detach()).pow(2).sum((-2, -1))
        if self.codebook_update == "loss":
            loss = loss + (z_e.detach() - z_q).pow(2).sum((-2, -1))
        return loss

    @torch.no_grad()
    def ema_update(self, z_e: torch.Tensor, codes: torch.Tensor) -> None:
        """Move each entry toward the mean of the encodings assigned to it (``codebook="ema"``):
        ``n_j <- g n_j + (1-g) |{k = j}|``, ``s_j <- g s_j + (1-g) sum_{k = j} z_e``,
        ``e_j = s_j / n_j`` (``n`` Laplace-smoothed)."""
        if self.codebook_update != "ema":
            return
        one_hot = F.one_hot(codes.reshape(-1), self.num_codes).to(z_e.dtype)
        gamma = self.ema_decay
        self.ema_count.mul_(gamma).add_(one_hot.sum(0), alpha=1 - gamma)
        self.ema_sum.mul_(gamma).add_(one_hot.T @ z_e.reshape(-1, self.code_dim), alpha=1 - gamma)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + EMA_EPSILON) / (total + self.num_codes * EMA_EPSILON) * total
        self.codebook.copy_(self.ema_sum / smoothed.unsqueeze(-1))

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The code string ``k(x)`` of each example, ``(N, M)`` long (the encoder in its current mode)."""
        return self.encode_codes(x)[1]

    @torch.no_grad()
    def posterior_mean(self, x: torch.Tensor, **ctx: Any) -> torch.Tensor:
        """``z_q(x)`` flattened, ``(N, M * d)`` (the guide is a point mass there)."""
        return self.codebook[self.codes(x)].flatten(-2)

    @torch.no_grad()
    def kl_per_dim(self, x: torch.Tensor, **ctx: Any) -> None:
        """``None``: the latent is discrete and its "KL" ``-log p(k(x))`` does not split by dimension."""
        return None

    @torch.no_grad()
    def code_usage(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """How often each entry is used on ``x`` (``(K,)`` frequencies summing to 1) and the perplexity
        ``exp(-sum_j f_j log f_j)`` (between 1 and ``K``: the effective number of codes used)."""
        counts = torch.bincount(self.codes(x).reshape(-1), minlength=self.num_codes).to(torch.float64)
        freq = counts / counts.sum()
        return freq, float(torch.exp(-(freq * freq.clamp_min(1e-30).log()).sum()))
