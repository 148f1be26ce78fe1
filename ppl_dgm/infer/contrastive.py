"""Contrastive divergence with Langevin negatives from a replay buffer: the engine of energy-based models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ppl_dgm.infer.engine import Engine, register_engine
from ppl_dgm.infer.sample_validation import ValidatesBySamples
from ppl_dgm.sites import X

if TYPE_CHECKING:
    from ppl_dgm.core import GenerativeModel

REQUIRED = ("to_unit", "energy", "noise", "langevin")
"""Methods the engine calls on a model (see `ContrastiveEngine`)."""


@register_engine("contrastive")
class ContrastiveEngine(ValidatesBySamples, Engine):
    """Fit an energy ``E`` by contrastive divergence (Du & Mordatch, 2019).

    Each step draws negatives by Langevin dynamics started from a replay buffer of earlier
    negatives (a share ``fresh`` of the chains restarts from noise instead), and lowers

    ``mean E(x+) - mean E(x-) + alpha * (mean E(x+)^2 + mean E(x-)^2)``

    over a minibatch of data ``x+`` and as many negatives ``x-``; the final negatives go back into
    the buffer. The buffer is part of `state_dict`, so a resumed fit continues with it. The energy
    is unnormalized and the contrastive loss no measure of fit, so the validation figure is the Frechet
    distance of the model's draws from the validation digits (`ppl_dgm.infer.sample_validation`); on other
    data there is none, and fitting runs all epochs and keeps the last weights.

    A model fitted by this engine provides, all in its *sampling space* (e.g. data scaled to
    ``[-1, 1]``): ``to_unit(x)`` (data -> sampling space), ``energy(u) -> (N,)``, ``noise(n) ->
    (n, D)`` (where fresh chains start) and ``langevin(u, steps, step_size, noise) -> u``.

    Args:
        model: the energy-based model; fitted in place.
        lr: learning rate of AdamW with ``betas=(0, 0.999)`` (no momentum: the negatives, and with them the
            gradient, move every step).
        weight_decay: decoupled weight decay.
        max_grad_norm: gradient clipping (see `Engine`).
        alpha: weight of the energy regularizer ``E(x+)^2 + E(x-)^2`` (keeps energies near 0).
        steps: Langevin updates per training step (fewer than a draw's: on the digits, training on 20-step
            chains and drawing with 40 gave better samples than 40 and 40).
        step_size: Langevin gradient step (``None``: the model's).
        noise: Langevin noise standard deviation (``None``: the model's).
        buffer_size: negatives kept in the replay buffer.
        fresh: share of chains started from noise rather than from the buffer, in ``[0, 1]``.
    """

    unit = "energy"

    def __init__(self, model: GenerativeModel, *, lr: float = 1e-3, weight_decay: float = 0.0,
                 max_grad_norm: float | None = None, alpha: float = 1.0, steps: int = 20,
                 step_size: float | None = None, noise: float | None = None, buffer_size: int = 10000,
                 fresh: float = 0.05) -> None:
        super().__init__(model, lr=lr, weight_decay=weight_decay, max_grad_norm=max_grad_norm)
        missing = [name for name in REQUIRED if not callable(getattr(model, name, None))]
        if missing:
            raise TypeError(f"the contrastive engine needs a model with methods {', '.join(REQUIRED)}; "
                            f"{type(model).__name__} lacks {', '.join(missing)}")
        if not alpha >= 0:
            raise ValueError(f"alpha must be non-negative, got {alpha!r}")
        for name, value in (("steps", steps), ("buffer_size", buffer_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, value in (("step_size", step_size), ("noise", noise)):
            if value is not None and not value >= 0:
                raise ValueError(f"{name} must be non-negative (or None for the model's), got {value!r}")
        if not 0.0 <= fresh <= 1.0:
            raise ValueError(f"fresh must lie in [0, 1], got {fresh!r}")
        self.alpha, self.steps, self.step_size, self.noise = float(alpha), steps, step_size, noise
        self.buffer_size, self.fresh = buffer_size, float(fresh)
        self.optimizer: torch.optim.Optimizer | None = None
        self.buffer: torch.Tensor | None = None

    def prepare(self, first_batch: dict[str, torch.Tensor]) -> None:
        """Build the optimizer and fill the replay buffer with noise, ``(buffer_size, D)``."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"{type(self.model).__name__} has no parameters to fit")
        self.optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay, betas=(0.0, 0.999))
        self.buffer = self.model.noise(self.buffer_size).detach()

    def starts(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Starting points of ``n`` chains: rows of the buffer, each replaced by noise with probability
        ``fresh``. Returns the points ``(n, D)``, the buffer rows they came from ``(n,)`` (long; the
        final negatives go back there) and which rows are fresh noise ``(n,)`` (bool)."""
        if self.buffer is None:
            raise RuntimeError("call prepare before drawing negatives")
        index = torch.randint(self.buffer.shape[0], (n,), device=self.buffer.device)
        is_fresh = torch.rand(n, device=self.buffer.device) < self.fresh
        points = torch.where(is_fresh.unsqueeze(-1), self.model.noise(n), self.buffer[index])
        return points, index, is_fresh

    def negatives(self, n: int) -> torch.Tensor:
        """``n`` Langevin negatives ``(n, D)`` in sampling space, written back into the buffer."""
        points, index, _ = self.starts(n)
        samples = self.model.langevin(points, steps=self.steps, step_size=self.step_size, noise=self.noise)
        self.buffer[index] = samples
        return samples

    def step(self, batch: dict[str, torch.Tensor], dataset_size: int) -> dict[str, float]:
        """One contrastive-divergence update; figures: ``loss`` (the objective above), ``energy_data``
        and ``energy_samples`` (mean energies of the minibatch and of its negatives)."""
        positive = self.model.to_unit(batch[X])
        negative = self.negatives(positive.shape[0])
        e_pos, e_neg = self.model.energy(positive), self.model.energy(negative)
        loss = e_pos.mean() - e_neg.mean() + self.alpha * (e_pos.pow(2).mean() + e_neg.pow(2).mean())
        value = self.update(loss, self.optimizer, what="contrastive divergence")
        means = torch.stack([e_pos.detach().mean(), e_neg.detach().mean()]).tolist()
        return {"loss": value, "energy_data": means[0], "energy_samples": means[1]}

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state and the replay buffer ``(buffer_size, D)``."""
        return {"optimizer": self.optimizer.state_dict(), "buffer": self.buffer.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the optimizer's state and the replay buffer saved by `state_dict`."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.buffer = state["buffer"].to(self.buffer.device, self.buffer.dtype).clone()
