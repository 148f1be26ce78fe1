"""Amortized flow layers of the flow-posterior VAE: Pyro's conditional planar (with a stable log-determinant),
Householder and IAF transforms, and our own conditional Householder-Sylvester transform (Pyro's Sylvester flow
has no conditional form)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Literal, get_args

import pyro.distributions.transforms as T
import torch
import torch.nn.functional as F
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.transforms.planar import ConditionedPlanar
from pyro.nn import ConditionalAutoRegressiveNN, DenseNN
from torch.distributions import Transform, constraints

Flow = Literal["planar", "householder", "sylvester", "iaf"]
FLOWS: tuple[str, ...] = get_args(Flow)
DIAGONAL_BOUND = 0.999
"""``|r1_ii|``, ``|r2_ii|`` of a Sylvester layer stay below this, so ``1 + tanh'(a) r1_ii r2_ii >= 1 - 0.999**2``."""


class ConditionedStablePlanar(ConditionedPlanar):
    """Pyro's planar map ``z + u_hat tanh(w.z + b)`` (Rezende & Mohamed, 2015) with a log-determinant that stays
    finite where Pyro's does not.

    Pyro makes the map invertible by ``w.u_hat = -1 + softplus(w.u) > -1`` and scores ``log|1 + tanh'(.) w.u_hat|``
    from the rounded ``u_hat``; for ``w.u`` below about ``-15`` (float32) or ``-35`` (float64) the computed
    ``w.u_hat`` reaches ``-1`` and the log-determinant ``-inf`` where ``tanh(.) = 0``. The same quantity written as
    ``log(a^2 + (1 - a^2) softplus(w.u))``, ``a = tanh(w.z + b)``, is exact algebra and stays finite. The map, its
    parameters and its cache are Pyro's.
    """

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        bias, u, w = self._params() if callable(self._params) else self._params
        act = torch.tanh((w * x).sum(-1, keepdim=True) + bias)
        slack = F.softplus((u * w).sum(-1, keepdim=True))  # 1 + w.u_hat
        self._cached_logDetJ = torch.log(act.pow(2) + (1.0 - act.pow(2)) * slack).squeeze(-1)
        return x + self.u_hat(u, w) * act


class ConditionalStablePlanar(T.ConditionalPlanar):
    """Pyro's ``ConditionalPlanar`` whose conditioned maps are `ConditionedStablePlanar`.

    Args:
        nn: maps a context ``(..., c)`` to ``(b (..., 1), u (..., k), w (..., k))``.
    """

    def condition(self, context: torch.Tensor) -> ConditionedStablePlanar:
        """The map for context ``h`` ``(..., c)``."""
        return ConditionedStablePlanar(partial(self._params, context))


def householder_reflect(v: torch.Tensor, z: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """Apply the reflections ``H_i = I - 2 v_i v_i^T / |v_i|^2`` to vectors ``z`` ``(..., k)``.

    ``v`` ``(..., M, k)`` holds ``M`` reflection vectors per example (broadcast against ``z``'s batch). Returns
    ``H_M ... H_1 z`` (that is ``Q^T z`` for ``Q = H_1 ... H_M``), or ``Q z = H_1 ... H_M z`` with ``reverse``.
    """
    unit = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    order = reversed(range(unit.shape[-2])) if reverse else range(unit.shape[-2])
    for i in order:
        u = unit[..., i, :]
        z = z - 2.0 * (u * z).sum(-1, keepdim=True) * u
    return z


class ConditionedSylvester(Transform):
    """The Householder-Sylvester map for one context (van den Berg et al., 2018, "H-SNF"):

    ``z' = z + Q R1 tanh(R2 Q^T z + b)``, ``Q`` a product of Householder reflections, ``R1``, ``R2`` upper
    triangular ``(k, k)`` with ``diag(R1)`` and ``diag(R2)`` equal to ``DIAGONAL_BOUND * tanh(.)``, so
    ``|r1_ii r2_ii| < 1`` (even where ``tanh`` rounds to 1) and ``log|det J| = sum_i log(1 + tanh'(a_i) r1_ii r2_ii)``
    (``a = R2 Q^T z + b``) is finite: the map is invertible. It has no closed-form inverse: like Pyro's planar
    layer it only scores values it produced itself (its cache holds the last ``(z, z')`` pair).

    Args:
        params: a callable returning ``(v (..., M, k), r1 (..., k, k), r2 (..., k, k), b (..., k))``; the
            strict lower triangles of ``r1``, ``r2`` are ignored and their diagonals mapped as above.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, params: Callable[[], tuple[torch.Tensor, ...]]) -> None:
        super().__init__(cache_size=1)
        self._params = params
        self._cached_log_det: torch.Tensor | None = None

    def triangular(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``R1``, ``R2`` ``(..., k, k)``: upper triangular with diagonals in ``(-DIAGONAL_BOUND, DIAGONAL_BOUND)``
        (the invertibility constraint)."""
        _, r1, r2, _ = self._params()
        return tuple(r.triu(1) + torch.diag_embed(DIAGONAL_BOUND * torch.tanh(r.diagonal(dim1=-2, dim2=-1)))
                     for r in (r1, r2))

    def _call(self, z: torch.Tensor) -> torch.Tensor:
        v, _, _, b = self._params()
        r1, r2 = self.triangular()
        rotated = householder_reflect(v, z)  # Q^T z
        pre = (r2 @ rotated.unsqueeze(-1)).squeeze(-1) + b
        act = torch.tanh(pre)
        diag = r1.diagonal(dim1=-2, dim2=-1) * r2.diagonal(dim1=-2, dim2=-1)
        self._cached_log_det = torch.log1p((1.0 - act.pow(2)) * diag).sum(-1)
        return z + householder_reflect(v, (r1 @ act.unsqueeze(-1)).squeeze(-1), reverse=True)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        raise KeyError("the Sylvester transform has no closed-form inverse: it scores only values it produced "
                       "(found none in its cache); score q(z | x) on the draws of the same distribution object")

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``log|det dz'/dz|`` ``(...)`` in nats, from the forward pass that produced ``y``."""
        x_old, y_old = self._cached_x_y
        if x is not x_old or y is not y_old:
            self(x)
        return self._cached_log_det


class ConditionalSylvester(ConditionalTransformModule):
    """Amortized Householder-Sylvester layer: a network maps the context ``h`` ``(..., c)`` to the parameters
    ``(v, R1, R2, b)`` of a `ConditionedSylvester` map on ``R^k``.

    Args:
        input_dim: ``k``, the size of ``z``.
        context_dim: ``c``, the size of the context.
        hidden_dims: hidden widths of the parameter network (Pyro's ``DenseNN``).
        num_reflections: ``M``, Householder reflections in ``Q``.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, input_dim: int, context_dim: int, hidden_dims: list[int], num_reflections: int) -> None:
        super().__init__()
        self.input_dim, self.num_reflections = input_dim, num_reflections
        k = input_dim
        self.nn = DenseNN(context_dim, hidden_dims, param_dims=[num_reflections * k, k * k, k * k, k])

    def _params(self, context: torch.Tensor) -> tuple[torch.Tensor, ...]:
        k = self.input_dim
        v, r1, r2, b = self.nn(context)
        return v.unflatten(-1, (self.num_reflections, k)), r1.unflatten(-1, (k, k)), r2.unflatten(-1, (k, k)), b

    def condition(self, context: torch.Tensor) -> ConditionedSylvester:
        """The map for context ``h`` ``(..., c)``."""
        return ConditionedSylvester(partial(self._params, context))


def conditional_flows(flow: Flow, latent_dim: int, context_dim: int, num_flows: int, hidden_dim: int
                      ) -> torch.nn.ModuleList:
    """``num_flows`` amortized layers of kind ``flow`` acting on ``z`` ``(..., k)`` given a context ``(..., c)``.

    ``"planar"``: Pyro's ``ConditionalPlanar``, ``z + u_hat tanh(w.z + b)``, with `ConditionedStablePlanar`'s
    log-determinant; ``"householder"``: Pyro's
    ``ConditionalHouseholder``, one reflection per layer; ``"sylvester"``: `ConditionalSylvester` with ``k``
    reflections; ``"iaf"``: Pyro's ``ConditionalAffineAutoregressive`` in its gated ("stable") form,
    ``sigma * z + (1 - sigma) * m`` with ``(m, sigma)`` autoregressive in ``z`` (a MADE that also reads the
    context), the variable order reversed from one layer to the next. Parameter networks have one hidden
    layer of ``hidden_dim`` units.
    """
    if flow not in FLOWS:
        raise ValueError(f"flow must be one of {', '.join(FLOWS)}, got {flow!r}")
    hidden = [hidden_dim]

    def layer(i: int) -> ConditionalTransformModule:
        if flow == "planar":
            return ConditionalStablePlanar(DenseNN(context_dim, hidden, param_dims=[1, latent_dim, latent_dim]))
        if flow == "householder":
            return T.conditional_householder(latent_dim, context_dim, hidden, count_transforms=1)
        if flow == "sylvester":
            return ConditionalSylvester(latent_dim, context_dim, hidden, num_reflections=latent_dim)
        order = torch.arange(latent_dim)
        made = ConditionalAutoRegressiveNN(latent_dim, context_dim, hidden,
                                           permutation=order.flip(0) if i % 2 else order)
        return T.ConditionalAffineAutoregressive(made, stable=True)

    return torch.nn.ModuleList(layer(i) for i in range(num_flows))
