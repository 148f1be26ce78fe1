"""`FlowModel`: a density flow as a Pyro ``TransformedDistribution`` rebuilt from its modules on each call."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import Transform
from torch.distributions.transforms import AffineTransform, SigmoidTransform

from ppl_dgm.core import Capabilities, GenerativeModel, X, data_plate
from ppl_dgm.evaluation.dequantization import dequantize, needs_dequantization
from ppl_dgm.models.flows.dequantizer import Dequantizer
from ppl_dgm.models.flows.transforms import ActNorm
from ppl_dgm.validation import check_integer_levels, check_tensor

Dequantization = Literal["uniform", "variational"]
DEQUANTIZED = "y"
"""Site of the dequantized image ``y = x + u`` (a local latent) with ``dequantization="variational"``."""


class FlowModel(GenerativeModel):
    """Base of the density flows: ``z ~ N(0, I_D)``, ``x = g(z)`` with ``g`` an invertible map, so
    ``log p(x) = log N(g^{-1}(x); 0, I) + log |det d g^{-1}(x) / dx|`` exactly.

    With ``dequantization="variational"`` the story is one of integer images instead: ``y ~ flow``,
    ``x = floor(y)`` (clamped to the levels), and the guide is a conditional flow ``q(y | x)`` on the bin
    ``[x, x + 1)`` (`Dequantizer`); then ``log P(x) >= E_q[log p(y) - log q(y | x)]`` and the model is a
    latent-variable model scored by importance weighting (``likelihood="bound"``, ``data="discrete"``).

    ``g`` is ``preprocessing ∘ standardization ∘ flow``: a subclass writes `flow_transforms`
    (base side first). Every model then ends with a data-initialized `ActNorm` (standardizes each
    dimension) and, with ``bounds``, the inverse of the logit preprocessing of Dinh et al. (2017)
    (``y = logit(alpha + (1 - 2 alpha) (x - low) / (high - low))``); the Jacobians of both are part of
    the density.

    Args:
        input_dim: dimensions ``D`` of an example (data shape ``(N, D)``).
        bounds: ``(low, high)``: the data lie in ``[low, high)`` (digits dequantized: ``(0, 17)``)
            and are mapped to the real line by the logit; ``None`` for real-valued data (2-D toys).
        alpha: the logit's margin (a fraction of ``high - low``), so ``[low, high)`` maps to
            ``[logit(alpha), logit(1 - alpha))``; the model's support is slightly wider than ``bounds``.
        dequantization: ``"uniform"``: a density, fitted and scored on ``x + U[0, 1)`` when the data are
            integers (by `ppl_dgm.fit` and `ppl_dgm.log_likelihood`); ``"variational"``: a learned ``q(u | x)``
            (needs integer ``bounds``; the data are the levels ``low .. high - 1``).
    """

    def __init__(self, input_dim: int = 64, bounds: Sequence[float] | None = None, alpha: float = 0.05,
                 dequantization: Dequantization = "uniform") -> None:
        super().__init__()
        if not isinstance(input_dim, int) or isinstance(input_dim, bool) or input_dim < 2:
            raise ValueError(f"input_dim must be an integer >= 2, got {input_dim!r}")
        if bounds is not None and (len(bounds) != 2 or not float(bounds[0]) < float(bounds[1])):
            raise ValueError(f"bounds must be (low, high) with low < high, or None for real-valued data; "
                             f"got {bounds!r}")
        if not 0.0 < alpha < 0.5:
            raise ValueError(f"alpha must lie in (0, 0.5), got {alpha!r}")
        if dequantization not in ("uniform", "variational"):
            raise ValueError(f"dequantization must be 'uniform' or 'variational', got {dequantization!r}")
        self.input_dim, self.alpha, self.dequantization = input_dim, float(alpha), dequantization
        self.bounds = None if bounds is None else (float(bounds[0]), float(bounds[1]))
        if dequantization == "variational":
            if self.bounds is None or not all(float(b).is_integer() for b in self.bounds):
                raise ValueError("dequantization='variational' models integer levels low .. high - 1: pass integer "
                                 f"bounds=(low, high), e.g. (0, 17) for digits; got bounds={bounds!r}")
            self.dequantizer = Dequantizer(input_dim, *self.bounds)
        self.event_shape = (input_dim,)
        self.standardize = ActNorm((input_dim,))
        self.register_buffer("base_loc", torch.zeros(input_dim))
        self.register_buffer("base_scale", torch.ones(input_dim))

    def flow_transforms(self) -> list[Transform]:
        """The learned bijections from the base ``z`` ``(..., D)`` towards the data, base side first."""
        raise NotImplementedError

    def preprocessing(self) -> list[Transform]:
        """Standardization, then (with ``bounds``) ``sigmoid`` and an affine map onto the data interval."""
        if self.bounds is None:
            return [self.standardize]
        low, high = self.bounds
        width = (high - low) / (1 - 2 * self.alpha)
        return [self.standardize, SigmoidTransform(), AffineTransform(low - self.alpha * width, width)]

    def transforms(self) -> list[Transform]:
        """All bijections from base to data: `flow_transforms` then `preprocessing`."""
        return [*self.flow_transforms(), *self.preprocessing()]

    def distribution(self) -> dist.TransformedDistribution:
        """The flow as a distribution over ``(D,)`` events; built anew on each call from the modules."""
        base = dist.Normal(self.base_loc, self.base_scale).to_event(1)
        return dist.TransformedDistribution(base, self.transforms())

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        if self.dequantization == "variational":
            return Capabilities(likelihood="bound", data="discrete")
        return Capabilities(likelihood="exact", data="continuous")

    def model(self, x: torch.Tensor | None = None, n: int | None = None) -> torch.Tensor:
        """``x ~ flow`` for each example in plate ``"data"``; with variational dequantization ``y ~ flow``
        and ``x = floor(y)`` clamped to the levels (a point mass given ``y``)."""
        with data_plate(x, n):
            if self.dequantization == "uniform":
                return pyro.sample(X, self.distribution(), obs=x)
            y = pyro.sample(DEQUANTIZED, self.distribution())
            low, high = self.bounds
            return pyro.sample(X, dist.Delta(y.floor().clamp(low, high - 1), event_dim=1), obs=x)

    def guide(self, x: torch.Tensor | None = None, n: int | None = None) -> None:
        """Variational dequantization only: ``y ~ q(y | x)`` (the flow itself when drawing, ``x=None``)."""
        if self.dequantization == "uniform":
            return
        with data_plate(x, n):
            pyro.sample(DEQUANTIZED, self.distribution() if x is None else self.dequantizer(x))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density of ``x`` ``(N, D)`` in nats, shape ``(N,)`` (uniform dequantization only)."""
        if self.dequantization == "variational":
            return super().log_prob(x)  # raises: use ppl_dgm.log_likelihood
        return self.distribution().log_prob(x)

    @torch.no_grad()
    def setup(self, x: torch.Tensor) -> None:
        """Data-dependent initialization: every `ActNorm` not yet initialized standardizes what reaches
        it when the training data ``x`` ``(N, D)`` are mapped towards the base (once per model).
        Integer data are dequantized first (``x + U[0, 1)``), as the flow sees them when fitted."""
        was_training = self.training
        self.eval()
        y = x.to(self.base_loc)
        if self.dequantization == "variational" or needs_dequantization(self, y):
            y = dequantize(y)
        for transform in reversed(self.transforms()):
            if isinstance(transform, ActNorm):
                transform.initialize(y)
            y = transform.inv(y)
        self.train(was_training)

    def support(self) -> tuple[float, float]:
        """The interval ``(low, high)`` the density lives on (``(-inf, inf)`` without ``bounds``)."""
        if self.bounds is None:
            return -math.inf, math.inf
        low, high = self.bounds
        margin = self.alpha * (high - low) / (1 - 2 * self.alpha)
        return low - margin, high + margin

    def check_data(self, x: torch.Tensor) -> None:
        """Reject data of the wrong shape, non-finite, or outside the support of the density."""
        check_tensor(x, "x", event_shape=self.event_shape)
        if self.dequantization == "variational":
            low, high = self.bounds
            check_integer_levels(x - low, int(high - low))
            return
        low, high = self.support()
        if self.bounds is not None and (float(x.min()) < low or float(x.max()) > high):
            raise ValueError(
                f"x has values in [{float(x.min()):g}, {float(x.max()):g}], outside the support ({low:g}, {high:g}) "
                f"of a flow with bounds={self.bounds}; pass bounds=(low, high) that cover the data, or bounds=None "
                "for real-valued data"
            )
