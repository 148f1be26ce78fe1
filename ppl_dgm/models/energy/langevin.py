"""Stochastic-gradient Langevin dynamics: the sampler of energy-based models."""

from __future__ import annotations

from collections.abc import Callable

import torch


def langevin(energy: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, steps: int, step_size: float,
             noise: float, bounds: tuple[float, float] | None = None) -> torch.Tensor:
    """Run ``steps`` Langevin updates ``x <- x - step_size * grad E(x) + noise * eps``, ``eps ~ N(0, I)``.

    With ``noise = sqrt(2 * step_size)`` this is the unadjusted Langevin algorithm for the density
    ``exp(-E(x))``; energy-based models are usually trained with a smaller noise than that (Du &
    Mordatch, 2019), which makes the chain a noisy gradient descent on the energy. Gradients are taken
    with respect to ``x`` only (none accumulate in the energy's parameters), also when called under
    ``torch.no_grad``.

    Args:
        energy: maps a batch ``(N, *event)`` to energies ``(N,)``.
        x: starting points, shape ``(N, *event)``, floating.
        steps: number of updates (0 returns ``x``).
        step_size: multiplier of the energy gradient, in units of ``x`` squared per unit of energy.
        noise: standard deviation of the Gaussian noise added each step, in units of ``x``.
        bounds: clamp every iterate to ``[low, high]`` when given.

    Returns:
        The final iterate, shape of ``x``, detached from every graph.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if not step_size >= 0 or not noise >= 0:
        raise ValueError(f"step_size and noise must be non-negative, got {step_size!r} and {noise!r}")
    x = x.detach()
    with torch.enable_grad():
        for _ in range(steps):
            x.requires_grad_(True)
            (grad,) = torch.autograd.grad(energy(x).sum(), x)
            x = (x.detach() - step_size * grad + noise * torch.randn_like(x))
            if bounds is not None:
                x = x.clamp(*bounds)
    return x.detach()
