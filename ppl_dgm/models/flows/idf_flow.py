"""Integer bijections of IDF: additive couplings with rounded translations, and fixed permutations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ppl_dgm.nn import MLP


def round_straight_through(t: torch.Tensor) -> torch.Tensor:
    """``round(t)`` forward; the identity's gradient backward (Hoogeboom et al., 2019, Sec. 3.2). Same shape."""
    return t + (torch.round(t) - t).detach()


class IntegerCoupling(nn.Module):
    """``z_1 = x_1``, ``z_k = x_k + round(t_k(x_1, ..., x_{k-1}))`` for the parts ``k = 2..P`` of the coordinates:
    a bijection of ``Z^D`` onto itself whatever the ``t_k`` are (``P = 2``: the usual split in halves; more
    parts: Tomczak's multi-part IDF coupling, closer to an autoregressive model).

    Each ``t_k`` is an MLP of ``(x_{<k} - centre) / centre``; part ``k`` holds coordinates
    ``[k D // P, (k + 1) D // P)`` (0-based).

    Args:
        dim: number of coordinates ``D`` (at least ``num_parts``).
        num_parts: number of parts ``P`` (at least 2).
        hidden_dims: widths of the MLPs' hidden layers.
        centre: value subtracted from, and divided into, the inputs of the ``t_k`` (data units).
        activation: nonlinearity of the MLPs.
        dropout: dropout rate of the MLPs' hidden layers in training mode.
    """

    def __init__(self, dim: int, num_parts: int, hidden_dims: Sequence[int], centre: float,
                 activation: Literal["relu", "elu", "tanh", "gelu", "silu"] = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        self.bounds = [k * dim // num_parts for k in range(num_parts + 1)]
        self.centre = float(centre)
        self.nets = nn.ModuleList(
            MLP(self.bounds[k], hidden_dims, self.bounds[k + 1] - self.bounds[k], activation, dropout)
            for k in range(1, num_parts)
        )

    def translation(self, k: int, x_before: torch.Tensor) -> torch.Tensor:
        """Integer translation ``round(t_k(x_{<k}))`` of part ``k`` (1-based from the second part), shape
        ``(N, size of part k)``, straight-through gradient; ``x_before`` is ``(N, D_{<k})``."""
        return round_straight_through(self.nets[k - 1]((x_before - self.centre) / self.centre))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, D)`` integers -> ``(N, D)`` integers (all parts at once)."""
        shifts = [self.translation(k, x[:, : self.bounds[k]]) for k in range(1, len(self.bounds) - 1)]
        return torch.cat([x[:, : self.bounds[1]], x[:, self.bounds[1]:] + torch.cat(shifts, -1)], dim=-1)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """The inverse of `forward`, exact on integers: ``x_k = z_k - round(t_k(x_{<k}))``, part after part."""
        x = z[:, : self.bounds[1]]
        for k in range(1, len(self.bounds) - 1):
            x = torch.cat([x, z[:, self.bounds[k]: self.bounds[k + 1]] - self.translation(k, x)], dim=-1)
        return x


class IntegerFlow(nn.Module):
    """A stack of `IntegerCoupling` s, each preceded by a fixed random permutation of the coordinates.

    The permutations are drawn once from a generator seeded with 0 and kept as buffers (saved with the weights).

    Args:
        dim: number of coordinates ``D`` (at least 2).
        num_couplings: number of couplings.
        num_parts, hidden_dims, centre, activation, dropout: of each coupling (see `IntegerCoupling`).
    """

    def __init__(self, dim: int, num_couplings: int, num_parts: int, hidden_dims: Sequence[int], centre: float,
                 activation: Literal["relu", "elu", "tanh", "gelu", "silu"] = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        self.couplings = nn.ModuleList(
            IntegerCoupling(dim, num_parts, hidden_dims, centre, activation, dropout) for _ in range(num_couplings)
        )
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("permutations", torch.stack([torch.randperm(dim, generator=generator)
                                                          for _ in range(num_couplings)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``z = f(x)``: ``(N, D)`` integers (float dtype) -> ``(N, D)`` integers."""
        for permutation, coupling in zip(self.permutations, self.couplings, strict=True):
            x = coupling(x[:, permutation])
        return x

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """``x = f^{-1}(z)``, exact on integers; shapes as `forward`."""
        for permutation, coupling in zip(reversed(self.permutations), reversed(self.couplings), strict=True):
            z = coupling.inverse(z)
            z = z[:, torch.argsort(permutation)]
        return z
