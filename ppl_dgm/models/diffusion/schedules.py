"""Noise schedules of the forward chain and the coefficients of its Gaussian posteriors."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

ScheduleKind = Literal["linear", "cosine"]


def noise_schedule(kind: ScheduleKind, timesteps: int) -> torch.Tensor:
    """The forward chain's variances ``beta_1..beta_T``, shape ``(T,)``, float64, each in (0, 1).

    ``"linear"``: Ho et al. (2020), ``1e-4 .. 0.02`` at ``T = 1000``, both ends scaled by ``1000 / T``
    so that other ``T`` cover the same noise levels (Nichol & Dhariwal, 2021). ``"cosine"``: Nichol &
    Dhariwal (2021), ``alpha_bar(t) = cos^2((t/T + s) / (1 + s) * pi/2)`` with ``s = 0.008``, each
    ``beta`` clipped at 0.999.
    """
    if not isinstance(timesteps, int) or isinstance(timesteps, bool) or timesteps < 1:
        raise ValueError(f"timesteps must be a positive integer, got {timesteps!r}")
    if kind == "linear":
        scale = 1000.0 / timesteps
        return torch.linspace(1e-4 * scale, min(0.02 * scale, 0.999), timesteps, dtype=torch.float64)
    if kind == "cosine":
        s = 0.008
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        alpha_bar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    raise ValueError(f"schedule must be 'linear' or 'cosine', got {kind!r}")


class Chain(nn.Module):
    """Coefficients of a (possibly respaced) forward chain, as non-persistent float64 buffers (cast on use).

    Built from ``alpha_bar`` at the chain's steps ``tau_1 < ... < tau_K`` (all ``T`` steps, or a
    subsequence for faster sampling); step ``i`` goes from ``tau_{i-1}`` to ``tau_i`` (``tau_0``:
    the data, ``alpha_bar = 1``). Every buffer has shape ``(K,)`` and is indexed by ``i`` in ``0..K-1``.

    Buffers: ``alpha_bar``, ``alpha_bar_prev``, ``beta`` (``1 - alpha_bar / alpha_bar_prev``),
    ``posterior_variance`` (``beta~``, the variance of ``q(x_{i-1} | x_i, x_0)``),
    ``posterior_log_variance`` (``log beta~`` with the first entry, which is 0, replaced by the
    second, as in Nichol & Dhariwal's code), ``coef_x0`` and ``coef_xt`` (the posterior mean is
    ``coef_x0 * x_0 + coef_xt * x_i``).
    """

    def __init__(self, alpha_bar: torch.Tensor) -> None:
        super().__init__()
        alpha_bar = alpha_bar.double()
        prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
        beta = 1 - alpha_bar / prev
        variance = beta * (1 - prev) / (1 - alpha_bar)
        log_variance = torch.log(torch.cat([variance[1:2], variance[1:]])) if len(beta) > 1 else torch.log(beta)
        values = {
            "alpha_bar": alpha_bar,
            "alpha_bar_prev": prev,
            "beta": beta,
            "posterior_variance": variance,
            "posterior_log_variance": log_variance,
            "coef_x0": prev.sqrt() * beta / (1 - alpha_bar),
            "coef_xt": (1 - beta).sqrt() * (1 - prev) / (1 - alpha_bar),
        }
        for name, value in values.items():
            self.register_buffer(name, value, persistent=False)

    @classmethod
    def from_betas(cls, betas: torch.Tensor) -> Chain:
        """The full chain of the variances ``betas`` (shape ``(T,)``)."""
        return cls(torch.cumprod(1 - betas.double(), 0))

    def __len__(self) -> int:
        return self.alpha_bar.shape[0]

    def at(self, name: str, i: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Buffer ``name`` at step indices ``i`` (shape ``(N,)``), shaped ``(N, 1, ...)`` to broadcast
        against ``like`` (shape ``(N, ...)``), in ``like``'s dtype."""
        value = getattr(self, name)[i].to(like.dtype)
        return value.reshape(-1, *([1] * (like.dim() - 1)))

    def diffuse(self, x0: torch.Tensor, i: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """A draw of ``q(x_i | x_0) = N(sqrt(alpha_bar_i) x_0, (1 - alpha_bar_i) I)`` given standard normal
        ``noise``; all shapes ``(N, D)``, ``i`` of shape ``(N,)``."""
        a = self.at("alpha_bar", i, x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def posterior_mean(self, x0: torch.Tensor, xt: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        """Mean of ``q(x_{i-1} | x_i, x_0)``, shape ``(N, D)``."""
        return self.at("coef_x0", i, x0) * x0 + self.at("coef_xt", i, x0) * xt

    def reverse_log_variance(self, i: torch.Tensor, fraction: torch.Tensor | None, like: torch.Tensor
                             ) -> torch.Tensor:
        """Log-variance of the reverse step ``p(x_{i-1} | x_i)``: ``log beta~_i`` when ``fraction`` is
        ``None`` (fixed variances; ``log beta_1`` at the first step, where ``beta~`` is 0), else the
        interpolation ``fraction * log beta_i + (1 - fraction) * log beta~_i`` (Nichol & Dhariwal,
        2021). Shape of ``like``, ``(N, D)``."""
        upper = self.at("beta", i, like).log()
        lower = self.at("posterior_log_variance", i, like)
        if fraction is None:
            return torch.where((i == 0).reshape(upper.shape), upper, lower).expand_as(like)
        return fraction * upper + (1 - fraction) * lower
