"""Flow pieces that neither Pyro nor zuko provides: actnorm and the conditioner networks of couplings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from torch import nn

from ppl_dgm.nn import MLP

Activation = Literal["relu", "elu", "tanh", "gelu", "silu"]


class ActNorm(TransformModule):
    """Activation normalization (Kingma & Dhariwal, 2018): ``y = x * exp(s) + b`` with ``s, b``
    shared over the positions of a channel; initialized from data so that the data side is
    standardized (`initialize`).

    Args:
        shape: shape of ``s`` and ``b``, broadcast against one event: ``(D,)`` for vectors,
            ``(C, 1, 1)`` for images ``(C, H, W)``. The event dimension is ``len(shape)``.
    """

    bijective = True

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__(cache_size=0)
        self.shape = tuple(shape)
        self.loc = nn.Parameter(torch.zeros(self.shape))
        self.log_scale = nn.Parameter(torch.zeros(self.shape))
        self.register_buffer("initialized", torch.tensor(False))

    @constraints.dependent_property(is_discrete=False)
    def domain(self):
        return constraints.independent(constraints.real, len(self.shape))

    codomain = domain

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.log_scale.exp() + self.loc

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.loc) * torch.exp(-self.log_scale)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``sum(s)`` over one event (``s`` broadcast to the event shape), shape ``x.shape[:-event_dim]``."""
        event_dim = len(self.shape)
        per_event = self.log_scale.expand(x.shape[x.dim() - event_dim:]).sum()
        return per_event.expand(x.shape[: x.dim() - event_dim])

    @torch.no_grad()
    def initialize(self, y: torch.Tensor) -> None:
        """Set ``b`` and ``s`` to the mean and log standard deviation of data-side values ``y``
        (shape ``(N, *event)``), over the examples and the positions sharing a parameter; once."""
        if bool(self.initialized):
            return
        event_dim = len(self.shape)
        lead = y.dim() - event_dim
        dims = [*range(lead), *(lead + i for i, size in enumerate(self.shape) if size == 1)]
        self.loc.copy_(y.mean(dims, keepdim=True).reshape(self.shape))
        self.log_scale.copy_(y.std(dims, keepdim=True).clamp_min(1e-3).log().reshape(self.shape))
        self.initialized.fill_(True)


def _bounded(raw: torch.Tensor, bound: float) -> torch.Tensor:
    """``bound * tanh(raw / bound)``: about ``raw`` near 0, never beyond ``+-bound``."""
    return bound * torch.tanh(raw / bound)


class CouplingNet(nn.Module):
    """Conditioner of an affine coupling (Pyro's ``AffineCoupling`` hypernet): an MLP from the kept
    part ``x1`` ``(..., in_features)`` to a shift and a log-scale ``(..., out_features)`` each.

    Args:
        in_features: size of the kept part.
        out_features: size of the transformed part.
        hidden: widths of the hidden layers.
        max_log_scale: the log-scale is ``max_log_scale * tanh(raw / max_log_scale)``; ``0``
            makes the coupling additive (NICE, log-scale identically 0).
        activation: nonlinearity.
        dropout: dropout rate of the hidden layers while fitting.
    """

    def __init__(self, in_features: int, out_features: int, hidden: Sequence[int], max_log_scale: float,
                 activation: Activation = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        self.max_log_scale = float(max_log_scale)
        outputs = 2 * out_features if self.max_log_scale else out_features
        self.net = MLP(in_features, hidden, outputs, activation, dropout)
        _shrink_last_layer(self.net[-1])

    def forward(self, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shift and log-scale of the transformed part, each ``(..., out_features)``."""
        out = self.net(x1)
        if not self.max_log_scale:
            return out, torch.zeros_like(out)
        shift, raw = out.chunk(2, dim=-1)
        return shift, _bounded(raw, self.max_log_scale)


class ConvCouplingNet(nn.Module):
    """Conditioner of a channel coupling on images (Glow): the kept channels, flattened
    ``(..., c_in * H * W)`` as Pyro's ``AffineCoupling`` passes them, through a 3x3 - 1x1 - 3x3
    convolution stack to a shift and a bounded log-scale ``(..., c_out * H * W)`` each.

    Args:
        c_in: kept channels.
        c_out: transformed channels.
        image_size: ``H = W``.
        hidden: channels of the hidden convolutions.
        max_log_scale: bound of the log-scale (``tanh``-bounded as in `CouplingNet`).
        dropout: dropout rate after each hidden convolution while fitting.
    """

    def __init__(self, c_in: int, c_out: int, image_size: int, hidden: int, max_log_scale: float,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.c_in, self.size, self.max_log_scale = c_in, image_size, float(max_log_scale)
        self.net = nn.Sequential(
            nn.Conv2d(c_in, hidden, 3, padding=1), nn.ReLU(), nn.Dropout(dropout),
            nn.Conv2d(hidden, hidden, 1), nn.ReLU(), nn.Dropout(dropout),
            nn.Conv2d(hidden, 2 * c_out, 3, padding=1),
        )
        _shrink_last_layer(self.net[-1])

    def forward(self, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shift and log-scale, each ``(..., c_out * H * W)``."""
        lead = x1.shape[:-1]
        out = self.net(x1.reshape(-1, self.c_in, self.size, self.size))
        shift, raw = out.flatten(1).reshape(*lead, -1).unflatten(-1, (2, -1)).unbind(-2)
        return shift, _bounded(raw, self.max_log_scale)


def _shrink_last_layer(layer: nn.Module) -> None:
    """Start a conditioner near the identity map (small, but nonzero, so gradients reach every layer)."""
    with torch.no_grad():
        layer.weight.mul_(1e-2)
        layer.bias.zero_()


def squeeze_permutation(channels: int, size: int) -> torch.Tensor:
    """Indices that reorder a flattened ``(C, H, W)`` image into the flattened squeezed
    ``(4C, H/2, W/2)`` image (each 2x2 block spread over 4 channels, RealNVP's squeeze);
    ``x_flat[..., perm]`` squeezes. Shape ``(C * H * W,)``, int64."""
    index = torch.arange(channels * size * size).reshape(channels, size // 2, 2, size // 2, 2)
    return index.permute(0, 2, 4, 1, 3).reshape(-1)
