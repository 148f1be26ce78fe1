"""Flow presets: NICE, RealNVP, MAF, IAF, NSF and Glow as `FlowModel`s."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import zuko
from pyro.distributions.transforms import AffineCoupling, GeneralizedChannelPermute, Permute
from torch import nn
from torch.distributions import Transform
from torch.distributions.transforms import ReshapeTransform

from ppl_dgm.models.flows.density import Dequantization, FlowModel
from ppl_dgm.models.flows.transforms import (
    Activation,
    ActNorm,
    ConvCouplingNet,
    CouplingNet,
    squeeze_permutation,
)
from ppl_dgm.models.registry import register_model
from ppl_dgm.nn.mlp import ACTIVATIONS


def _check_count(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")


class _CouplingFlow(FlowModel):
    """Couplings of the first ``D // 2`` coordinates by the rest, with a fixed random permutation
    (seeded, kept as a buffer) before each; ``max_log_scale=0`` makes them additive."""

    def __init__(self, input_dim: int, bounds: Sequence[float] | None, alpha: float, dequantization: Dequantization,
                 num_layers: int, hidden_dims: Sequence[int], max_log_scale: float, activation: Activation,
                 dropout: float, actnorm: bool) -> None:
        super().__init__(input_dim, bounds, alpha, dequantization)
        _check_count(num_layers=num_layers)
        _check_dropout(dropout)
        keep = input_dim // 2
        generator = torch.Generator().manual_seed(0)
        for i in range(num_layers):  # in 2-D a random order can repeat; a swap makes the couplings alternate
            order = torch.randperm(input_dim, generator=generator) if input_dim > 2 else torch.arange(input_dim).flip(0)
            self.register_buffer(f"perm{i}", order)
        self.couplings = nn.ModuleList(
            AffineCoupling(keep, CouplingNet(keep, input_dim - keep, hidden_dims, max_log_scale, activation, dropout))
            for _ in range(num_layers)
        )
        self.actnorms = nn.ModuleList(ActNorm((input_dim,)) for _ in range(num_layers if actnorm else 0))

    def layer_transforms(self) -> list[Transform]:
        """Per layer, base side first: coupling, (actnorm), permutation."""
        out: list[Transform] = []
        for i, coupling in enumerate(self.couplings):
            out.append(coupling)
            if self.actnorms:
                out.append(self.actnorms[i])
            out.append(Permute(getattr(self, f"perm{i}")))
        return out

    def flow_transforms(self) -> list[Transform]:
        return self.layer_transforms()


@register_model("nice")
class NICE(_CouplingFlow):
    """NICE (Dinh, Krueger & Bengio, 2015, arXiv:1410.8516): additive couplings
    ``y_b = x_b + m(x_a)`` (volume preserving) with random permutations between them, and a learned
    diagonal scaling ``exp(s)`` (with a shift: an `ActNorm`) on the base side, the only volume change.

    Args:
        input_dim: dimensions ``D`` of an example.
        num_layers: number of additive couplings.
        hidden_dims: widths of each coupling's MLP.
        activation: nonlinearity of the MLPs.
        dropout: dropout rate of the MLPs' hidden layers while fitting.
        bounds: data interval for the logit preprocessing (``(0, 17)`` for digits) or ``None``; see `FlowModel`.
        alpha: margin of the logit.
        dequantization: ``"uniform"`` or ``"variational"`` (a learned ``q(u | x)``); see `FlowModel`.
    """

    def __init__(self, input_dim: int = 64, num_layers: int = 4, hidden_dims: Sequence[int] = (256, 256),
                 activation: Activation = "relu", dropout: float = 0.1,
                 bounds: Sequence[float] | None = None, alpha: float = 0.05,
                 dequantization: Dequantization = "uniform") -> None:
        super().__init__(input_dim, bounds, alpha, dequantization, num_layers, hidden_dims, 0.0, activation, dropout,
                         actnorm=False)
        self.scaling = ActNorm((input_dim,))

    def flow_transforms(self) -> list[Transform]:
        return [self.scaling, *self.layer_transforms()]


@register_model("realnvp")
class RealNVP(_CouplingFlow):
    """RealNVP (Dinh, Sohl-Dickstein & Bengio, 2017, arXiv:1605.08803): affine couplings
    ``y_b = x_b * exp(s(x_a)) + t(x_a)`` with ``s`` bounded by ``max_log_scale * tanh`` (unbounded
    scales overfit small data), each followed by an `ActNorm` and a random permutation.

    Args:
        input_dim: dimensions ``D`` of an example.
        num_layers: number of couplings.
        hidden_dims: widths of each coupling's MLP.
        max_log_scale: bound on ``|s|`` per coupling and dimension.
        activation: nonlinearity of the MLPs.
        dropout: dropout rate of the MLPs' hidden layers while fitting.
        bounds: data interval for the logit preprocessing (``(0, 17)`` for digits) or ``None``; see `FlowModel`.
        alpha: margin of the logit.
        dequantization: ``"uniform"`` or ``"variational"`` (a learned ``q(u | x)``); see `FlowModel`.
    """

    def __init__(self, input_dim: int = 64, num_layers: int = 6, hidden_dims: Sequence[int] = (256, 256),
                 max_log_scale: float = 2.0, activation: Activation = "relu", dropout: float = 0.1,
                 bounds: Sequence[float] | None = None, alpha: float = 0.05,
                 dequantization: Dequantization = "uniform") -> None:
        if not max_log_scale > 0:
            raise ValueError(f"max_log_scale must be positive, got {max_log_scale!r}")
        super().__init__(input_dim, bounds, alpha, dequantization, num_layers, hidden_dims, max_log_scale, activation,
                         dropout, actnorm=True)


class _AutoregressiveFlow(FlowModel):
    """``num_layers`` zuko masked autoregressive transforms (data -> base, parallel), orders
    alternately ascending and descending, each a univariate transform of every coordinate given
    the previous ones; ``inverse`` puts them the other way round (IAF)."""

    inverse = False

    def __init__(self, input_dim: int, bounds: Sequence[float] | None, alpha: float, dequantization: Dequantization,
                 num_layers: int, hidden_dims: Sequence[int], activation: Activation, dropout: float,
                 **univariate) -> None:
        super().__init__(input_dim, bounds, alpha, dequantization)
        _check_count(num_layers=num_layers)
        _check_dropout(dropout)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")

        def hidden_activation() -> nn.Module:
            return nn.Sequential(ACTIVATIONS[activation](), nn.Dropout(dropout))

        order = torch.arange(input_dim)
        self.layers = nn.ModuleList(
            zuko.flows.MaskedAutoregressiveTransform(
                input_dim, order=order if i % 2 == 0 else order.flip(0), hidden_features=tuple(hidden_dims),
                activation=hidden_activation, **univariate)
            for i in range(num_layers)
        )

    def flow_transforms(self) -> list[Transform]:
        # zuko maps data -> base; TransformedDistribution lists base -> data
        layers = [layer() for layer in self.layers]
        return layers if self.inverse else [t.inv for t in reversed(layers)]


@register_model("maf")
class MAF(_AutoregressiveFlow):
    """MAF (Papamakarios, Pavlakou & Murray, 2017, arXiv:1705.07057): ``z_i = (x_i - mu_i(x_<i))
    exp(-a_i(x_<i))`` through a MADE network (zuko's ``MaskedAutoregressiveTransform``, log-scale
    softly bounded); density in one pass, sampling in ``D`` passes per layer.

    Args:
        input_dim: dimensions ``D`` of an example.
        num_layers: number of autoregressive layers (order reversed between layers).
        hidden_dims: widths of each MADE.
        activation: nonlinearity of the MADEs.
        dropout: dropout rate of the MADEs' hidden layers while fitting.
        bounds: data interval for the logit preprocessing (``(0, 17)`` for digits) or ``None``; see `FlowModel`.
        alpha: margin of the logit.
        dequantization: ``"uniform"`` or ``"variational"`` (a learned ``q(u | x)``); see `FlowModel`.
    """

    def __init__(self, input_dim: int = 64, num_layers: int = 5, hidden_dims: Sequence[int] = (256, 256),
                 activation: Activation = "relu", dropout: float = 0.1,
                 bounds: Sequence[float] | None = None, alpha: float = 0.05,
                 dequantization: Dequantization = "uniform") -> None:
        super().__init__(input_dim, bounds, alpha, dequantization, num_layers, hidden_dims, activation, dropout)


@register_model("iaf")
class IAF(MAF):
    """IAF (Kingma et al., 2016, arXiv:1606.04934): the MAF layers turned around, ``x_i = z_i
    exp(a_i(z_<i)) + mu_i(z_<i)``, so sampling takes one pass and the density of new data ``D``
    passes per layer (slow to fit by maximum likelihood; meant for fast sampling). Same arguments as `MAF`.
    """

    inverse = True


@register_model("nsf")
class NSF(_AutoregressiveFlow):
    """Neural spline flow (Durkan et al., 2019, arXiv:1906.04032), autoregressive: each coordinate
    through a monotonic rational-quadratic spline on ``[-tail_bound, tail_bound]`` (identity
    outside) whose knots a MADE computes from the previous coordinates (zuko's ``MonotonicRQSTransform``).

    Args:
        input_dim: dimensions ``D`` of an example.
        num_layers: number of autoregressive layers (order reversed between layers).
        bins: spline bins per coordinate.
        tail_bound: half-width of the spline's interval (in standardized units).
        hidden_dims: widths of each MADE.
        activation: nonlinearity of the MADEs.
        dropout: dropout rate of the MADEs' hidden layers while fitting.
        bounds: data interval for the logit preprocessing (``(0, 17)`` for digits) or ``None``; see `FlowModel`.
        alpha: margin of the logit.
        dequantization: ``"uniform"`` or ``"variational"`` (a learned ``q(u | x)``); see `FlowModel`.
    """

    def __init__(self, input_dim: int = 64, num_layers: int = 3, bins: int = 8, tail_bound: float = 5.0,
                 hidden_dims: Sequence[int] = (256, 256), activation: Activation = "relu", dropout: float = 0.1,
                 bounds: Sequence[float] | None = None, alpha: float = 0.05,
                 dequantization: Dequantization = "uniform") -> None:
        _check_count(bins=bins)
        if not tail_bound > 0:
            raise ValueError(f"tail_bound must be positive, got {tail_bound!r}")

        def spline(widths: torch.Tensor, heights: torch.Tensor, derivatives: torch.Tensor) -> Transform:
            return zuko.transforms.MonotonicRQSTransform(widths, heights, derivatives, bound=tail_bound)

        super().__init__(input_dim, bounds, alpha, dequantization, num_layers, hidden_dims, activation, dropout,
                         univariate=spline, shapes=((bins,), (bins,), (bins - 1,)))


@register_model("glow")
class Glow(FlowModel):
    """Glow (Kingma & Dhariwal, 2018, arXiv:1807.03039) for square images: the ``D = S * S`` pixels
    viewed as ``1 x S x S``, squeezed to ``4 x S/2 x S/2``, then ``num_steps`` steps of actnorm, an
    invertible 1x1 convolution with LU-decomposed weight (Pyro's ``GeneralizedChannelPermute``) and an
    affine coupling of half the channels by the other half (3x3-1x1-3x3 convolutions, tanh-bounded
    log-scale). Single scale (8x8 digits are small).

    Args:
        input_dim: ``S * S`` with ``S`` even (64 for digits).
        num_steps: number of flow steps.
        hidden_channels: channels of the coupling networks.
        max_log_scale: bound on the couplings' log-scales.
        dropout: dropout rate in the coupling networks while fitting.
        bounds: data interval for the logit preprocessing (``(0, 17)`` for digits) or ``None``; see `FlowModel`.
        alpha: margin of the logit.
        dequantization: ``"uniform"`` or ``"variational"`` (a learned ``q(u | x)``); see `FlowModel`.
    """

    def __init__(self, input_dim: int = 64, num_steps: int = 8, hidden_channels: int = 64,
                 max_log_scale: float = 2.0, dropout: float = 0.1,
                 bounds: Sequence[float] | None = None, alpha: float = 0.05,
                 dequantization: Dequantization = "uniform") -> None:
        super().__init__(input_dim, bounds, alpha, dequantization)
        size = math.isqrt(input_dim)
        if size * size != input_dim or size % 2:
            raise ValueError(f"Glow needs square images of even side: input_dim = S * S with S even (64 for 8x8 "
                             f"digits); got input_dim={input_dim}. Use RealNVP or NSF for vector data")
        _check_count(num_steps=num_steps, hidden_channels=hidden_channels)
        _check_dropout(dropout)
        if not max_log_scale > 0:
            raise ValueError(f"max_log_scale must be positive, got {max_log_scale!r}")
        self.shape = (4, size // 2, size // 2)
        self.register_buffer("unsqueeze", torch.argsort(squeeze_permutation(1, size)))
        self.actnorms = nn.ModuleList(ActNorm((4, 1, 1)) for _ in range(num_steps))
        self.convs = nn.ModuleList(GeneralizedChannelPermute(channels=4) for _ in range(num_steps))
        self.couplings = nn.ModuleList(
            AffineCoupling(2, ConvCouplingNet(2, 2, size // 2, hidden_channels, max_log_scale, dropout), dim=-3)
            for _ in range(num_steps)
        )

    def flow_transforms(self) -> list[Transform]:
        # base side first: the inverse of each step (coupling, 1x1 conv, actnorm), then unsqueeze
        steps: list[Transform] = [ReshapeTransform((self.input_dim,), self.shape)]
        for actnorm, conv, coupling in zip(self.actnorms, self.convs, self.couplings, strict=True):
            steps += [coupling, conv, actnorm]
        return [*steps, ReshapeTransform(self.shape, (self.input_dim,)), Permute(self.unsqueeze)]
