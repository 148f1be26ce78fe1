"""The von Mises-Fisher distribution on the unit sphere (Wood's sampler with the rejection-gradient
correction of Naesseth et al., 2017) and the uniform distribution on the sphere."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from pyro.distributions import Beta, TorchDistribution, constraints
from pyro.distributions.score_parts import ScoreParts
from scipy.special import gammaln, ive, logsumexp
from torch.autograd.function import once_differentiable

SERIES_TERMS = 200
"""Terms of the power series of ``I_v`` used where scipy's scaled Bessel function underflows."""


def _log_iv_numpy(order: float, x: np.ndarray) -> np.ndarray:
    """``log I_order(x)`` in float64 for ``x > 0``: scipy's ``ive`` where it is representable, else the
    power series ``sum_k (x/2)^(2k+v) / (k! Gamma(v+k+1))`` summed in log space (``x`` small against ``v``)."""
    with np.errstate(divide="ignore"):
        out = np.log(ive(order, x)) + x
    bad = ~np.isfinite(out)
    if bad.any():
        xb = x[bad][:, None]
        k = np.arange(SERIES_TERMS)[None, :]
        terms = (2 * k + order) * np.log(xb / 2) - gammaln(k + 1) - gammaln(order + k + 1)
        out[bad] = logsumexp(terms, axis=1)
    return out


class _LogBesselIv(torch.autograd.Function):
    """``log I_v(x)`` with ``d/dx log I_v(x) = I_{v+1}(x) / I_v(x) + v / x``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, order: float) -> torch.Tensor:
        x64 = x.detach().cpu().double().numpy()
        value = _log_iv_numpy(order, x64)
        ratio = np.exp(_log_iv_numpy(order + 1, x64) - value)
        ctx.save_for_backward(torch.as_tensor(ratio + order / x64, dtype=x.dtype, device=x.device))
        return torch.as_tensor(value, dtype=x.dtype, device=x.device)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (derivative,) = ctx.saved_tensors
        return grad * derivative, None


def log_bessel_iv(order: float, x: torch.Tensor) -> torch.Tensor:
    """``log I_order(x)`` of the modified Bessel function of the first kind, elementwise, for ``x > 0``
    (any shape; differentiable once in ``x``). Computed in float64 through ``scipy.special.ive``."""
    return _LogBesselIv.apply(x, float(order))


def log_sphere_area(dim: int) -> float:
    """``log`` of the surface area of the unit sphere ``S^{dim-1}`` in ``R^dim``: ``2 pi^(dim/2) / Gamma(dim/2)``."""
    return math.log(2.0) + dim / 2 * math.log(math.pi) - math.lgamma(dim / 2)


def vmf_log_normalizer(dim: int, concentration: torch.Tensor) -> torch.Tensor:
    """``log C_m(kappa) = (m/2-1) log kappa - (m/2) log(2 pi) - log I_{m/2-1}(kappa)`` for ``m = dim``,
    so that ``C_m(kappa) exp(kappa mu.z)`` is the vMF density on ``S^{m-1}``; shape of ``concentration``."""
    order = dim / 2 - 1
    return order * concentration.log() - dim / 2 * math.log(2 * math.pi) - log_bessel_iv(order, concentration)


def mean_resultant_length(dim: int, concentration: torch.Tensor) -> torch.Tensor:
    """``A_m(kappa) = I_{m/2}(kappa) / I_{m/2-1}(kappa) = |E[z]|`` of a vMF on ``S^{m-1}``, in ``[0, 1)``."""
    return (log_bessel_iv(dim / 2, concentration) - log_bessel_iv(dim / 2 - 1, concentration)).exp()


class VonMisesFisher(TorchDistribution):
    """von Mises-Fisher distribution ``p(z) = C_m(kappa) exp(kappa mu.z)`` on the unit sphere ``S^{m-1}``.

    ``rsample`` follows Davidson et al. (2018): Wood's (1994) rejection sampler draws ``w = mu.z`` as
    ``w = h(eps, kappa)`` from an accepted ``eps ~ Beta((m-1)/2, (m-1)/2)``, a uniform direction ``v``
    orthogonal to ``e_1`` completes ``(w, sqrt(1-w^2) v)``, and a Householder reflection maps ``e_1`` to ``mu``.
    Gradients reach ``mu`` and ``kappa`` through the sample; the rejection step adds the correction term of
    Naesseth et al. (2017), ``E[f(z) d/dkappa log pi(eps | kappa)]`` where ``pi(eps | kappa) = g(h(eps, kappa)
    | kappa) |dh/d eps|`` is the density of the *accepted* ``eps`` and ``g`` that of ``w``. It is exposed the
    way Pyro expects of partially reparameterized samplers: ``score_parts(z).score_function`` is
    ``log pi(eps | kappa)`` of the ``eps`` that produced ``z`` (see `score_function`).

    Args:
        loc: mean direction ``mu``, shape ``(..., m)``, unit norm, ``m >= 2``.
        concentration: ``kappa > 0``, shape broadcastable to ``loc.shape[:-1]``.
    """

    arg_constraints = {"loc": constraints.sphere, "concentration": constraints.positive}
    support = constraints.sphere
    has_rsample = True

    def __init__(self, loc: torch.Tensor, concentration: torch.Tensor, validate_args: bool | None = None) -> None:
        if loc.dim() < 1 or loc.shape[-1] < 2:
            raise ValueError(f"loc must have shape (..., m) with m >= 2, got {tuple(loc.shape)}")
        concentration = torch.as_tensor(concentration, dtype=loc.dtype, device=loc.device)
        batch_shape = torch.broadcast_shapes(loc.shape[:-1], concentration.shape)
        self.loc = loc.expand(batch_shape + loc.shape[-1:])
        self.concentration = concentration.expand(batch_shape)
        self.dim = loc.shape[-1]
        self._cache: tuple[Any, Any] = (None, None)
        super().__init__(batch_shape, loc.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape: torch.Size, _instance: Any = None) -> VonMisesFisher:
        batch_shape = torch.Size(batch_shape)
        return VonMisesFisher(self.loc.expand(batch_shape + (self.dim,)), self.concentration.expand(batch_shape),
                              validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        """``E[z] = A_m(kappa) mu``, shape ``batch_shape + (m,)``."""
        return mean_resultant_length(self.dim, self.concentration).unsqueeze(-1) * self.loc

    @property
    def mode(self) -> torch.Tensor:
        return self.loc

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log C_m(kappa) + kappa mu.z`` (nats w.r.t. the surface measure of the sphere); ``value`` ``(..., m)``."""
        if self._validate_args:
            self._validate_sample(value)
        return vmf_log_normalizer(self.dim, self.concentration) + self.concentration * (self.loc * value).sum(-1)

    def entropy(self) -> torch.Tensor:
        """``H = -log C_m(kappa) - kappa A_m(kappa)`` (nats), shape ``batch_shape``."""
        kappa = self.concentration
        return -vmf_log_normalizer(self.dim, kappa) - kappa * mean_resultant_length(self.dim, kappa)

    def _wood_constants(self, kappa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Wood's ``b = (m-1) / (2 kappa + sqrt(4 kappa^2 + (m-1)^2))`` (stable form of
        ``(-2 kappa + sqrt(4 kappa^2 + (m-1)^2)) / (m-1)``) and ``a = (m-1 + 2 kappa + sqrt(...)) / 4``."""
        m1 = self.dim - 1
        root = torch.sqrt(4 * kappa**2 + m1**2)
        return m1 / (2 * kappa + root), (m1 + 2 * kappa + root) / 4

    def _accepted_eps(self, kappa: torch.Tensor) -> torch.Tensor:
        """Wood's rejection loop (no gradient): ``eps`` of the accepted proposals, shape of ``kappa``."""
        m1 = self.dim - 1
        with torch.no_grad():
            b, a = (t.double() for t in self._wood_constants(kappa))
            d = 4 * a * b / (1 + b) - m1 * math.log(m1)
            eps = torch.empty_like(b)
            pending = torch.ones_like(b, dtype=torch.bool)
            half = torch.full((), m1 / 2, dtype=torch.float64, device=b.device)
            while pending.any():
                bp, ap, dp = b[pending], a[pending], d[pending]
                proposal = Beta(half, half).sample(bp.shape)
                t = 2 * ap * bp / (1 - (1 - bp) * proposal)
                accept = m1 * t.log() - t + dp >= torch.rand_like(t).log()
                index = pending.nonzero(as_tuple=True)
                eps[tuple(i[accept] for i in index)] = proposal[accept]
                pending[tuple(i[accept] for i in index)] = False
        return eps.to(kappa.dtype)

    def _w_parts(self, eps: torch.Tensor, kappa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``w = h(eps, kappa)``, ``sqrt(1 - w^2)`` (both stable for large ``kappa``) and ``log |dh / d eps|``."""
        b, _ = self._wood_constants(kappa)
        den = 1 - (1 - b) * eps
        w = 1 - 2 * b * eps / den
        sine = 2 * torch.sqrt(b * eps * (1 - eps)) / den
        return w, sine, math.log(2) + b.log() - 2 * den.log()

    def score_function(self, eps: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
        """``log pi(eps | kappa) = log g(h(eps, kappa) | kappa) + log |dh/d eps|``, differentiable in ``kappa``:
        the density of an accepted ``eps``, with ``g(w) = |S^{m-2}| C_m(kappa) e^{kappa w} (1-w^2)^{(m-3)/2}``
        the density of ``w = mu.z`` on ``[-1, 1]``. Its gradient times ``f(z)`` is the correction term."""
        w, sine, log_jacobian = self._w_parts(eps, kappa)
        m = self.dim
        log_g = (log_sphere_area(m - 1) + vmf_log_normalizer(m, kappa) + kappa * w
                 + (m - 3) * sine.clamp_min(torch.finfo(sine.dtype).tiny).log())
        return log_g + log_jacobian

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        """Draws ``sample_shape + batch_shape + (m,)`` unit vectors, reparameterized in ``mu`` and ``kappa``."""
        shape = self._extended_shape(torch.Size(sample_shape))
        kappa = self.concentration.expand(shape[:-1])
        eps = self._accepted_eps(kappa)
        w, sine, _ = self._w_parts(eps, kappa)
        direction = torch.randn(shape[:-1] + (self.dim - 1,), dtype=self.loc.dtype, device=self.loc.device)
        direction = direction / direction.norm(dim=-1, keepdim=True)
        z = torch.cat([w.unsqueeze(-1), sine.unsqueeze(-1) * direction], dim=-1)
        z = self._reflect(z, self.loc.expand(shape))
        z = z / z.norm(dim=-1, keepdim=True)
        self._cache = (z, eps)
        return z

    @staticmethod
    def _reflect(z: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        """Householder reflection that maps ``e_1`` to ``loc`` (identity where ``loc`` is ``e_1``)."""
        u = -loc.clone()
        u[..., 0] = u[..., 0] + 1
        uu = (u * u).sum(-1, keepdim=True)
        tiny = torch.finfo(z.dtype).eps ** 2
        reflected = z - 2 * (z * u).sum(-1, keepdim=True) / uu.clamp_min(tiny) * u
        return torch.where(uu > tiny, reflected, z)

    def _eps_of(self, value: torch.Tensor) -> torch.Tensor:
        """The ``eps`` behind a sample: cached from `rsample`, else recovered from ``w = mu.z``
        (``eps = (1-w) / ((1+b) - (1-b) w)``; less precise for large ``kappa``)."""
        if value is self._cache[0]:
            return self._cache[1]
        with torch.no_grad():
            kappa = self.concentration.expand(value.shape[:-1])
            b, _ = self._wood_constants(kappa)
            w = (self.loc * value).sum(-1).clamp(-1, 1)
            return ((1 - w) / ((1 + b) - (1 - b) * w)).clamp(0, 1)

    def score_parts(self, value: torch.Tensor) -> ScoreParts:
        """Pyro's parts of the gradient estimator (as Pyro's ``Rejector``): the log-density, the score
        ``log pi(eps | kappa)`` of the rejection step (multiplied by ``f(z)`` in Pyro's surrogate ELBO) and the
        entropy term; shapes ``batch_shape`` (with any sample dims of ``value``)."""
        log_prob = self.log_prob(value)
        kappa = self.concentration.expand(value.shape[:-1])
        return ScoreParts(log_prob=log_prob, score_function=self.score_function(self._eps_of(value), kappa),
                          entropy_term=log_prob)


class HypersphericalUniform(TorchDistribution):
    """Uniform distribution on the unit sphere ``S^{m-1}`` in ``R^m``: ``log p(z) = -log |S^{m-1}|``.

    Args:
        dim: ambient dimension ``m >= 2``.
        device: where samples and log-densities live.
        dtype: their floating type.
    """

    support = constraints.sphere
    has_rsample = True  # samples do not depend on any parameter
    arg_constraints: dict = {}

    def __init__(self, dim: int, batch_shape: tuple[int, ...] = (), *, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32, validate_args: bool | None = None) -> None:
        if not isinstance(dim, int) or dim < 2:
            raise ValueError(f"dim must be an integer >= 2 (the sphere S^(dim-1) in R^dim), got {dim!r}")
        self.dim, self.device, self.dtype = dim, torch.device(device or "cpu"), dtype
        super().__init__(torch.Size(batch_shape), torch.Size([dim]), validate_args=validate_args)

    def expand(self, batch_shape: torch.Size, _instance: Any = None) -> HypersphericalUniform:
        return HypersphericalUniform(self.dim, torch.Size(batch_shape), device=self.device, dtype=self.dtype,
                                     validate_args=False)

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        """Normalized standard normal draws, shape ``sample_shape + batch_shape + (m,)``."""
        z = torch.randn(self._extended_shape(torch.Size(sample_shape)), device=self.device, dtype=self.dtype)
        return z / z.norm(dim=-1, keepdim=True)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``-log |S^{m-1}|`` for every point of the sphere; shape ``value.shape[:-1]``."""
        if self._validate_args:
            self._validate_sample(value)
        return torch.full(value.shape[:-1], -log_sphere_area(self.dim), dtype=value.dtype, device=value.device)

    def entropy(self) -> torch.Tensor:
        """``log |S^{m-1}|`` (nats), shape ``batch_shape``."""
        return torch.full(self.batch_shape, log_sphere_area(self.dim), dtype=self.dtype, device=self.device)
