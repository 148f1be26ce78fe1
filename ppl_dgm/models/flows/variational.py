"""Normalizing flows as variational families (Rezende & Mohamed, 2015): flow guides, energy models, KL(q || p)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro.nn import PyroModule
from tqdm.auto import tqdm

from ppl_dgm.core import Z

FlowFamily = Literal["planar", "radial", "sylvester", "householder"]
FAMILIES: tuple[str, ...] = ("planar", "radial", "sylvester", "householder")

Energy = Callable[[torch.Tensor], torch.Tensor]
"""``U``: points ``(N, d)`` -> ``(N,)`` in nats; the target density is ``exp(-U(z)) / Z``."""


class _Sylvester(T.Sylvester):
    """Pyro's Sylvester flow, corrected: ``z' = z + Q R tanh(S Q^T z + b)`` (van den Berg et al., 2018).

    Pyro 1.9 computes ``z + (Q R)^T tanh((S Q^T)^T z + b)`` for column vectors ``z`` (it multiplies row
    vectors by ``B`` and ``A`` instead of their transposes) while its log-determinant is that of the
    paper's map, so its densities are wrong whenever ``Q R S Q^T`` is not symmetric; and its ``Q``
    multiplies by a float32 CPU identity from the second reflection on (fails in float64 and on CUDA).
    The parameters, their constraints and the log-determinant ``sum_i log(1 + tanh'(.)_i r_ii s_ii)``
    are Pyro's.
    """

    def Q(self, x: torch.Tensor) -> torch.Tensor:
        """The product of the Householder reflections: the reflections applied to the identity's rows."""
        return T.Householder._call(self, torch.eye(self.input_dim, dtype=x.dtype, device=x.device))

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        q, r, s = self.Q(x), self.R(), self.S()
        preactivation = x @ (q @ s.T) + self.b  # rows of (S Q^T z + b)
        self._cached_logDetJ = torch.log1p(self.dtanh_dx(preactivation) * r.diagonal() * s.diagonal()).sum(-1)
        return x + torch.tanh(preactivation) @ (q @ r).T


def flow_transforms(family: FlowFamily, dim: int, num_layers: int) -> torch.nn.ModuleList:
    """``num_layers`` fresh Pyro transform modules of ``family`` acting on vectors of size ``dim``.

    ``"planar"``: ``z + u tanh(w.z + b)``; ``"radial"``: ``z + beta (z - z0) / (alpha + |z - z0|)``;
    ``"sylvester"``: ``z + Q R tanh(S Q^T z + b)`` with ``Q`` a product of ``dim // 2 + 1`` Householder
    reflections; ``"householder"``: one reflection ``(I - 2 v v^T / |v|^2) z`` per layer (volume
    preserving: with the guide's diagonal Gaussian base it gives a full-covariance Gaussian).
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    for name, value in (("dim", dim), ("num_layers", num_layers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def layer() -> T.TransformModule:
        if family == "planar":
            return T.Planar(dim)
        if family == "radial":
            return T.Radial(dim)
        if family == "sylvester":
            return _Sylvester(dim, count_transforms=dim // 2 + 1)
        return T.Householder(dim, count_transforms=1)

    return torch.nn.ModuleList(layer() for _ in range(num_layers))


class FlowGuide(PyroModule):
    """Variational family ``q(z)``: a diagonal Gaussian ``N(loc, diag(scale^2))`` pushed through ``K`` flow layers.

    Reference: Rezende & Mohamed (2015), Variational inference with normalizing flows, ICML.

    Args:
        dim: size ``d`` of the latent vector.
        family: ``"planar"``, ``"radial"``, ``"sylvester"`` or ``"householder"`` (see `flow_transforms`).
        num_layers: number ``K`` of flow layers.
        site: name of the sample site the guide draws (the model's latent site).
        init_scale: initial scale of the Gaussian base (its location starts at 0).
    """

    def __init__(self, dim: int, family: FlowFamily = "planar", num_layers: int = 8, site: str = Z,
                 init_scale: float = 1.0) -> None:
        super().__init__()
        self.dim, self.family, self.site = dim, family, site
        self.transforms = flow_transforms(family, dim, num_layers)
        self.loc = torch.nn.Parameter(torch.zeros(dim))
        self.log_scale = torch.nn.Parameter(torch.full((dim,), math.log(init_scale)))

    def distribution(self) -> dist.TransformedDistribution:
        """``q(z)`` as a Pyro distribution with event shape ``(d,)``. Planar, radial and Sylvester layers have
        no closed-form inverse: ``log_prob`` only scores the values this distribution itself just drew."""
        base = dist.Normal(self.loc, self.log_scale.exp()).to_event(1)
        return dist.TransformedDistribution(base, list(self.transforms))

    def forward(self, *args, **kwargs) -> torch.Tensor:
        """Draw the latent site from ``q``; takes (and ignores) the model's arguments."""
        return pyro.sample(self.site, self.distribution())

    @torch.no_grad()
    def sample_with_log_prob(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` draws ``(n, d)`` and their ``log q(z)`` ``(n,)`` in nats (scored as they are drawn)."""
        q = self.distribution()
        z = q.sample((n,))
        return z, q.log_prob(z)


def energy_model(energy: Energy, dim: int, site: str = Z) -> Callable[..., torch.Tensor]:
    """The Pyro model of an unnormalized target: ``z`` under a flat (improper) prior on ``R^d``, then
    ``pyro.factor("energy", -U(z))``; its joint density is exactly ``exp(-U(z))``.

    Its ELBO under a guide ``q`` is ``E_q[-U(z) - log q(z)] = log Z - KL(q || p)``.
    """

    def model(*args, **kwargs) -> torch.Tensor:
        z = pyro.sample(site, dist.ImproperUniform(dist.constraints.real_vector, (), (dim,)))
        pyro.factor("energy", -energy(z))
        return z

    return model


def fit_energy(guide: FlowGuide, energy: Energy, steps: int = 2000, lr: float = 1e-2, num_particles: int = 256,
               seed: int | None = None, progress: bool = True) -> list[float]:
    """Fit ``guide`` to ``exp(-U)`` by SVI: Pyro's ``Trace_ELBO`` (vectorized particles), Adam.

    Args:
        guide: the flow guide; fitted in place.
        energy: the target's energy ``U`` (``(N, d)`` -> ``(N,)``).
        steps: optimizer steps.
        lr: Adam learning rate.
        num_particles: guide draws per step.
        seed: seeds Pyro's and torch's generators when given.
        progress: show a progress bar.

    Returns:
        the loss ``-ELBO = E_q[log q(z) + U(z)]`` (nats) of every step; add ``log Z`` for the KL.
    """
    if seed is not None:
        pyro.set_rng_seed(seed)
    elbo = pyro.infer.Trace_ELBO(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=0)
    loss_fn = elbo(energy_model(energy, guide.dim, guide.site), guide)
    optimizer = torch.optim.Adam(loss_fn.parameters(), lr=lr)
    history = []
    for step in tqdm(range(steps), disable=not progress, desc=f"{guide.family} x{len(guide.transforms)}", leave=False):
        loss = loss_fn()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss at step {step}; lower lr or use fewer layers")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return history


@torch.no_grad()
def kl_estimate(guide: FlowGuide, energy: Energy, log_z: float, num_samples: int = 100_000,
                chunk: int = 10_000) -> tuple[float, float]:
    """Monte Carlo ``KL(q || p) = E_q[log q(z) + U(z)] + log Z`` in nats, with ``p = exp(-U) / Z``.

    Args:
        guide: the variational family ``q``.
        energy: ``U``, ``(N, d)`` -> ``(N,)``.
        log_z: ``log Z`` of the target (e.g. by quadrature, `ppl_dgm.datasets.energies.log_partition`).
        num_samples: draws from ``q``.
        chunk: draws per pass.

    Returns:
        the estimate and its Monte Carlo standard error, nats.
    """
    terms = []
    for start in range(0, num_samples, chunk):
        z, log_q = guide.sample_with_log_prob(min(chunk, num_samples - start))
        terms.append((log_q + energy(z)).double())
    values = torch.cat(terms) + log_z
    return float(values.mean()), float(values.std() / math.sqrt(values.numel()))
