"""The VQ-VAE's prior: an autoregressive (MADE) distribution over the ``M`` code indices of an image, and
the discrete distribution it induces on the quantized latent vectors (codebook entries at each position)."""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn.auto_reg_nn import MaskedLinear, create_mask
from torch import nn
from torch.distributions import constraints


class CodePrior(nn.Module):
    """``p(k) = prod_m p(k_m | k_<m)`` over strings ``k`` of ``M`` indices in ``0..K-1``: a MADE
    (Germain et al., 2015) on the one-hot codes, with Pyro's MADE masks widened to ``K`` inputs per
    position. It starts uniform (`reset_uniform`).

    Args:
        num_positions: ``M``, the code indices of one example.
        num_codes: ``K``, the codebook size.
        hidden_dims: widths of the masked hidden layers.
    """

    def __init__(self, num_positions: int, num_codes: int, hidden_dims: Sequence[int] = (256,)) -> None:
        super().__init__()
        hidden = [int(h) for h in hidden_dims]
        if not hidden or min(hidden) < 1:
            raise ValueError(f"prior_hidden_dims must be one or more positive widths, got {hidden_dims!r}")
        self.num_positions, self.num_codes = num_positions, num_codes
        masks, _ = create_mask(num_positions, 0, hidden, torch.arange(num_positions), num_codes)
        masks[0] = masks[0].repeat_interleave(num_codes, dim=1)  # K one-hot inputs per position
        widths = [num_positions * num_codes, *hidden, num_positions * num_codes]
        pairs = zip(widths[:-1], widths[1:], masks, strict=True)
        self.layers = nn.ModuleList(MaskedLinear(a, b, mask) for a, b, mask in pairs)
        self.reset_uniform()

    @torch.no_grad()
    def reset_uniform(self) -> None:
        """Zero the output layer: every string gets ``log p(k) = -M log K``."""
        self.layers[-1].weight.zero_()
        self.layers[-1].bias.zero_()

    def logits(self, codes: torch.Tensor) -> torch.Tensor:
        """Logits of ``p(k_m | k_<m)``, shape ``(..., M, K)``, for codes ``(..., M)`` (long)."""
        h = F.one_hot(codes, self.num_codes).flatten(-2).to(self.layers[0].weight.dtype)
        for layer in self.layers[:-1]:
            h = F.elu(layer(h))
        out = self.layers[-1](h)  # MADE's output order: index k * M + m
        return out.unflatten(-1, (self.num_codes, self.num_positions)).transpose(-1, -2)

    def log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """``log p(k)`` in nats, shape ``(...)``, for codes ``(..., M)``."""
        return dist.Categorical(logits=self.logits(codes)).log_prob(codes).sum(-1)

    @torch.no_grad()
    def sample(self, shape: torch.Size) -> torch.Tensor:
        """Codes ``shape + (M,)`` (long), drawn position by position (``M`` passes)."""
        codes = torch.zeros(*shape, self.num_positions, dtype=torch.long, device=self.layers[0].weight.device)
        for m in range(self.num_positions):
            codes[..., m] = dist.Categorical(logits=self.logits(codes)[..., m, :]).sample()
        return codes


def nearest_codes(vectors: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest codebook entry (Euclidean) for vectors ``(..., d)``; codebook ``(K, d)``;
    returns ``(...)`` long."""
    distances = vectors.pow(2).sum(-1, keepdim=True) - 2 * vectors @ codebook.T + codebook.pow(2).sum(-1)
    return distances.argmin(-1)


class QuantizedPrior(dist.TorchDistribution):
    """The law of ``z = (e_{k_1}, ..., e_{k_M})`` flattened to ``(M * d,)`` when ``k ~ p(k)``: a discrete
    distribution on the ``K^M`` codebook strings. ``log_prob(z) = log p(k(z))`` with ``k(z)`` the
    nearest codes (mass w.r.t. counting measure on the strings; exact for ``z`` on the codebook grid
    with distinct entries).

    Args:
        prior: the `CodePrior` over indices.
        codebook: entries ``(K, d)``.
        batch_shape: batch shape of the distribution.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, prior: CodePrior, codebook: torch.Tensor, batch_shape: tuple[int, ...] = ()) -> None:
        self.prior, self.codebook = prior, codebook
        event = (prior.num_positions * codebook.shape[-1],)
        super().__init__(torch.Size(batch_shape), torch.Size(event), validate_args=False)

    def expand(self, batch_shape: torch.Size, _instance: QuantizedPrior | None = None) -> QuantizedPrior:
        return QuantizedPrior(self.prior, self.codebook, torch.Size(batch_shape))

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        """Flattened codebook strings, shape ``sample_shape + batch_shape + (M * d,)``."""
        codes = self.prior.sample(torch.Size(sample_shape) + self.batch_shape)
        return self.codebook[codes].flatten(-2)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log p(k(value))``, nats, shape ``value.shape[:-1]``."""
        codes = nearest_codes(value.unflatten(-1, (self.prior.num_positions, -1)), self.codebook)
        return self.prior.log_prob(codes)
