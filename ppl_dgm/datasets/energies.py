"""The four unnormalized 2-D target densities of Rezende & Mohamed (2015), and log Z by quadrature."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Energy = Callable[[torch.Tensor], torch.Tensor]
"""An energy ``U``: points ``(N, 2)`` -> ``(N,)`` in nats; the target density is ``exp(-U(z)) / Z``."""

WINDOW = 4.0
"""Half-width of the square ``[-4, 4]^2`` on which the paper draws the targets."""

WALL_SCALE = 0.4
"""Length scale of the wall `wall` puts outside the window in ``z1`` (the ring's and the U2 band's width)."""


def _w1(z1: torch.Tensor) -> torch.Tensor:
    return torch.sin(2 * math.pi * z1 / 4)


def _w2(z1: torch.Tensor) -> torch.Tensor:
    return 3 * torch.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)


def _w3(z1: torch.Tensor) -> torch.Tensor:
    return 3 * torch.sigmoid((z1 - 1) / 0.3)


def _log_two_bumps(a: torch.Tensor, scale_a: float, b: torch.Tensor, scale_b: float) -> torch.Tensor:
    """``log(exp(-a^2 / (2 scale_a^2)) + exp(-b^2 / (2 scale_b^2)))``, computed stably."""
    return torch.logaddexp(-0.5 * (a / scale_a) ** 2, -0.5 * (b / scale_b) ** 2)


def wall(z1: torch.Tensor) -> torch.Tensor:
    """``0.5 * (max(|z1| - 4, 0) / 0.4)^2``: zero on the paper's window, a Gaussian fall-off outside it.

    U2-U4 do not depend on ``z1`` far from the origin, so ``exp(-U)`` alone has infinite mass on
    the plane; this wall makes it a proper density without changing it on ``[-4, 4]`` in ``z1``.
    Shape: ``z1`` ``(N,)`` -> ``(N,)``, nats.
    """
    return 0.5 * (torch.relu(z1.abs() - WINDOW) / WALL_SCALE) ** 2


def u1(z: torch.Tensor) -> torch.Tensor:
    """Ring with two lobes: ``0.5 ((|z| - 2) / 0.4)^2 - log(e^{-0.5 ((z1-2)/0.6)^2} + e^{-0.5 ((z1+2)/0.6)^2})``.

    Already normalizable (no wall). Shape ``(N, 2)`` -> ``(N,)``, nats.
    """
    z1 = z[..., 0]
    return 0.5 * ((z.norm(dim=-1) - 2) / 0.4) ** 2 - _log_two_bumps(z1 - 2, 0.6, z1 + 2, 0.6)


def u2(z: torch.Tensor) -> torch.Tensor:
    """Sine band: ``0.5 ((z2 - w1(z)) / 0.4)^2 + wall(z1)``, ``w1(z) = sin(2 pi z1 / 4)``.

    Shape ``(N, 2)`` -> ``(N,)``, nats.
    """
    z1, z2 = z[..., 0], z[..., 1]
    return 0.5 * ((z2 - _w1(z1)) / 0.4) ** 2 + wall(z1)


def u3(z: torch.Tensor) -> torch.Tensor:
    """Split sine band: ``-log(e^{-0.5 ((z2 - w1)/0.35)^2} + e^{-0.5 ((z2 - w1 + w2)/0.35)^2}) + wall(z1)``,
    ``w2(z) = 3 exp(-0.5 ((z1 - 1) / 0.6)^2)``.

    Shape ``(N, 2)`` -> ``(N,)``, nats.
    """
    z1, z2 = z[..., 0], z[..., 1]
    w1 = _w1(z1)
    return -_log_two_bumps(z2 - w1, 0.35, z2 - w1 + _w2(z1), 0.35) + wall(z1)


def u4(z: torch.Tensor) -> torch.Tensor:
    """Sine band with a step: ``-log(e^{-0.5 ((z2 - w1)/0.4)^2} + e^{-0.5 ((z2 - w1 + w3)/0.35)^2}) + wall(z1)``,
    ``w3(z) = 3 sigmoid((z1 - 1) / 0.3)``.

    Shape ``(N, 2)`` -> ``(N,)``, nats.
    """
    z1, z2 = z[..., 0], z[..., 1]
    w1 = _w1(z1)
    return -_log_two_bumps(z2 - w1, 0.4, z2 - w1 + _w3(z1), 0.35) + wall(z1)


ENERGIES: dict[str, Energy] = {"U1": u1, "U2": u2, "U3": u3, "U4": u4}
"""The potentials of Rezende & Mohamed (2015, Table 1) by name."""


def grid(half_width: float, resolution: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, float]:
    """Centres of a ``resolution x resolution`` grid of square cells tiling ``[-half_width, half_width]^2``.

    Returns:
        points ``(resolution**2, 2)`` in row-major order (``z2`` varies slowest, so
        ``values.reshape(resolution, resolution)`` is an image with ``z1`` along columns), and the
        area of one cell.
    """
    if not half_width > 0 or not isinstance(resolution, int) or resolution < 2:
        raise ValueError(f"need half_width > 0 and an integer resolution >= 2, got {half_width!r}, {resolution!r}")
    step = 2 * half_width / resolution
    axis = torch.linspace(-half_width + step / 2, half_width - step / 2, resolution, dtype=dtype)
    z2, z1 = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=-1), step**2


def log_partition(energy: Energy, half_width: float = 8.0, resolution: int = 1000) -> float:
    """``log Z = log of the integral of exp(-U(z)) dz`` over the plane, by the midpoint rule on
    `grid` (float64), in nats.

    The default square ``[-8, 8]^2`` holds all but a negligible part of the mass of U1-U4 (the
    wall and the bands fall off with Gaussian tails of scale 0.4 beyond ``|z| = 4 + 4 * 0.4``); the
    midpoint rule converges fast on these smooth integrands (see the tests for a check against
    a closed form).
    """
    points, area = grid(half_width, resolution)
    log_density = -torch.cat([energy(chunk) for chunk in points.split(2**20)])
    return float(torch.logsumexp(log_density, 0)) + math.log(area)
