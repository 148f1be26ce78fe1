"""Sampling a fitted DDPM with fewer steps: respaced ancestral sampling and DDIM (Song et al., 2021)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch

from ppl_dgm.models.diffusion.schedules import Chain, noise_schedule

if TYPE_CHECKING:
    from ppl_dgm.models.diffusion.ddpm import DDPM

SamplingMethod = Literal["ancestral", "ddim"]


def respaced_steps(timesteps: int, steps: int) -> torch.Tensor:
    """``steps`` 0-based step indices out of ``0..timesteps-1``, evenly spaced, first and last included;
    shape ``(steps,)``, increasing."""
    if not isinstance(steps, int) or isinstance(steps, bool) or not 2 <= steps <= timesteps:
        raise ValueError(f"steps must be an integer in 2..{timesteps}, got {steps!r}")
    return torch.linspace(0, timesteps - 1, steps, dtype=torch.float64).round().long()


@torch.no_grad()
def sample_images(model: DDPM, n: int, steps: int | None = None, method: SamplingMethod = "ancestral"
                  ) -> torch.Tensor:
    """``n`` draws ``(n, D)`` of integer levels (float, ``model.dtype``) from ``model`` in ``steps`` steps.

    ``"ancestral"``: the reverse chain on the respaced schedule ``alpha_bar(tau_1..tau_K)`` (Nichol &
    Dhariwal, 2021, sec. 4); with all ``T`` steps it is the model's own story. ``"ddim"``: the
    deterministic DDIM update (eta = 0) ``x_prev = sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev)
    eps_hat``. Both end with the discrete decoder at step 1.
    """
    if method not in ("ancestral", "ddim"):
        raise ValueError(f"method must be 'ancestral' or 'ddim', got {method!r}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    tau = respaced_steps(model.num_timesteps, steps or model.num_timesteps).to(model.device)
    alpha_bar = torch.cumprod(1 - noise_schedule(model.schedule, model.num_timesteps), 0)
    chain = Chain(alpha_bar[tau.cpu()]).to(model.device)
    xt = torch.randn(n, model.input_dim, dtype=model.dtype, device=model.device)
    for i in range(len(tau) - 1, -1, -1):
        index = torch.full((n,), i, device=model.device)
        mean, log_variance, x0 = model.reverse(xt, index, chain, tau[index])
        if i == 0:
            return model.decoder(mean, log_variance).sample()
        if method == "ancestral":
            xt = mean + (0.5 * log_variance).exp() * torch.randn_like(xt)
        else:
            a, prev = chain.at("alpha_bar", index, xt), chain.at("alpha_bar_prev", index, xt)
            eps = (xt - a.sqrt() * x0) / (1 - a).sqrt()
            xt = prev.sqrt() * x0 + (1 - prev).sqrt() * eps
    raise AssertionError("unreachable")
