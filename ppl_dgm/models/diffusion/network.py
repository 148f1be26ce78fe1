"""The denoising network: a residual MLP on flattened images, conditioned on the step by a sinusoidal embedding."""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding (Vaswani et al., 2017) of step indices ``t`` (shape ``(N,)``), shape ``(N, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class _Block(nn.Module):
    """``h + W2 silu(norm(W1 silu(h)) + E(emb))``: one residual block, the step added in the middle."""

    def __init__(self, width: int, embed_dim: int, dropout: float) -> None:
        super().__init__()
        self.inner = nn.Linear(width, width)
        self.step = nn.Linear(embed_dim, width)
        self.norm = nn.LayerNorm(width)
        self.outer = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        u = self.norm(self.inner(nn.functional.silu(h))) + self.step(emb)
        return h + self.outer(self.dropout(nn.functional.silu(u)))


class Denoiser(nn.Module):
    """Residual MLP ``(x_t, t) -> outputs``: ``(N, in_features)`` and steps ``(N,)`` to ``(N, out_features)``.

    Args:
        in_features: width of a flattened example.
        out_features: width of the output.
        width: hidden width.
        num_blocks: residual blocks.
        embed_dim: width of the step embedding.
        dropout: dropout inside the blocks while training.
    """

    def __init__(self, in_features: int, out_features: int, width: int = 512, num_blocks: int = 3,
                 embed_dim: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.embed = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))
        self.inp = nn.Linear(in_features, width)
        self.blocks = nn.ModuleList(_Block(width, embed_dim, dropout) for _ in range(num_blocks))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, out_features))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.embed(timestep_embedding(t, self.embed_dim).to(x.dtype))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)
