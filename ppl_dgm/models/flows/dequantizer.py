"""Variational dequantization (Ho et al., 2019): a conditional flow ``q(u | x)`` on the unit cube."""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
import zuko
from torch import nn
from torch.distributions.transforms import AffineTransform, SigmoidTransform

_GAP = 1e-5
"""``u`` lies in ``[0, 1 - _GAP)``: ``x + u`` stays below ``x + 1`` after rounding (float32 up to ~100)."""


class Dequantizer(nn.Module):
    """``q(y | x)`` with ``y = x + u``, ``u = (1 - 1e-5) sigmoid(h)``, ``h`` from ``N(0, I)`` through
    ``num_layers`` zuko affine couplings conditioned on ``x`` (scaled to ``[0, 1]``), so ``y`` stays in
    the bin ``[x, x + 1)`` of the integer image ``x``.

    Args:
        input_dim: dimensions ``D``.
        low: the lowest integer level of the data.
        high: one past the highest level (the context is ``(x - low) / (high - low)``).
        num_layers: couplings (halves alternate).
        hidden_dims: widths of each coupling's network.
    """

    def __init__(self, input_dim: int, low: float, high: float, num_layers: int = 2,
                 hidden_dims: Sequence[int] = (128, 128)) -> None:
        super().__init__()
        self.low, self.width = float(low), float(high - low)
        order = torch.arange(input_dim)
        self.layers = nn.ModuleList(
            zuko.flows.MaskedAutoregressiveTransform(input_dim, input_dim, passes=2,
                                                     order=order if i % 2 == 0 else order.flip(0),
                                                     hidden_features=tuple(hidden_dims))
            for i in range(num_layers)
        )

    def forward(self, x: torch.Tensor) -> dist.TransformedDistribution:
        """The distribution ``q(y | x)`` for integer images ``x`` ``(N, D)``: batch ``(N,)``, event ``(D,)``."""
        context = (x - self.low) / self.width
        base = dist.Normal(torch.zeros_like(x), torch.ones_like(x)).to_event(1)
        coupling = [layer(context).inv for layer in reversed(self.layers)]  # zuko maps h -> noise
        return dist.TransformedDistribution(base, [*coupling, SigmoidTransform(), AffineTransform(x, 1 - _GAP)])
