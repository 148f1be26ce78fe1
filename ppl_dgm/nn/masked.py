"""Causal (masked) convolutions over images in raster order, and a PixelCNN stack built from them."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

MaskType = Literal["A", "B"]


class MaskedConv2d(nn.Conv2d):
    """2-D convolution whose kernel sees only the pixels before the centre in raster order
    (van den Oord et al., 2016, Pixel Recurrent Neural Networks).

    The kernel keeps the rows above its centre and, in the centre row, the columns left of it;
    type ``"A"`` also drops the centre (the first layer: output ``i`` never sees input ``i``),
    type ``"B"`` keeps it (later layers: output ``i`` may use features already computed at ``i``).
    Stacking one type-A layer and any number of type-B layers keeps the output at pixel ``i``
    independent of the input at pixels ``>= i``. Padding is ``kernel_size // 2`` ("same" size).

    Args:
        in_channels: channels ``C_in`` of the input ``(N, C_in, H, W)``.
        out_channels: channels ``C_out`` of the output ``(N, C_out, H, W)``.
        kernel_size: odd side length of the square kernel.
        mask_type: ``"A"`` (centre excluded) or ``"B"`` (centre included).
        bias: whether to add a learned bias per output channel.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask_type: MaskType,
                 bias: bool = True) -> None:
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive integer, got {kernel_size!r}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        centre = kernel_size // 2
        mask = torch.zeros(kernel_size, kernel_size)
        mask[:centre] = 1.0
        mask[centre, : centre + (mask_type == "B")] = 1.0
        self.mask_type = mask_type
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, H, W) -> (N, C_out, H, W)`` with the masked kernel."""
        return self._conv_forward(x, self.weight * self.mask, self.bias)


class GatedResidualBlock(nn.Module):
    """``h + W_out * dropout(tanh(a) * sigmoid(b))``, ``(a, b) = MaskedConv2d_B(elu(h))``: a gated
    residual block that keeps causality (van den Oord et al., 2016, Conditional Image Generation
    with PixelCNN Decoders). Shape ``(N, C, H, W) -> (N, C, H, W)``.

    Args:
        channels: channels ``C``.
        kernel_size: odd side of the type-B masked kernel.
        dropout: probability of zeroing a gated unit in training mode.
    """

    def __init__(self, channels: int, kernel_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = MaskedConv2d(channels, 2 * channels, kernel_size, "B")
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, C, H, W)``."""
        a, b = self.conv(F.elu(h)).chunk(2, dim=1)
        return h + self.out(self.dropout(torch.tanh(a) * torch.sigmoid(b)))


class PixelCNN(nn.Module):
    """Causal network over images in raster order: the output at pixel ``i`` depends only on the
    input at pixels ``< i``. A type-A `MaskedConv2d`, then `GatedResidualBlock` s, then two 1x1
    convolutions. With ``first_kernel_size >= 2 * max(H, W) - 1`` the first layer alone sees every
    earlier pixel, so the stack has no blind spot.

    Args:
        in_channels: channels of the input ``(N, in_channels, H, W)``.
        out_channels: channels of the output ``(N, out_channels, H, W)``.
        channels: hidden channels.
        num_blocks: gated residual blocks after the first layer.
        first_kernel_size: odd side of the type-A kernel.
        kernel_size: odd side of the type-B kernels of the blocks.
        dropout: dropout rate inside the blocks and before the output layer.
    """

    def __init__(self, in_channels: int, out_channels: int, channels: int = 64, num_blocks: int = 4,
                 first_kernel_size: int = 15, kernel_size: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        self.first = MaskedConv2d(in_channels, channels, first_kernel_size, "A")
        self.blocks = nn.Sequential(*(GatedResidualBlock(channels, kernel_size, dropout) for _ in range(num_blocks)))
        self.head = nn.Sequential(nn.ELU(), nn.Conv2d(channels, channels, 1), nn.ELU(), nn.Dropout(dropout),
                                  nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, H, W) -> (N, out_channels, H, W)``, causal in raster order."""
        return self.head(self.blocks(self.first(x)))
