"""The denoising engine: fits diffusion models by their per-step regression/bound terms, with EMA weights."""

from __future__ import annotations

import copy
from typing import Any

import torch

from ppl_dgm.infer.engine import Engine, register_engine
from ppl_dgm.sites import X

REQUIRED = ("num_timesteps", "timestep_sampling", "training_loss", "bound_terms", "prior_term")
"""What a model must have for this engine (duck-typed; see `DenoisingEngine`)."""


@register_engine("denoising")
class DenoisingEngine(Engine):
    """Fits a diffusion model step by step (Ho et al., 2020; Nichol & Dhariwal, 2021).

    The model supplies ``num_timesteps`` (``T``), ``timestep_sampling`` (``"uniform"`` or
    ``"importance"``), ``training_loss(x, t, vlb_weight) -> (loss, terms)`` (both ``(N,)``; ``terms``
    are the bound's per-step ``L_t`` in nats), ``bound_terms(x, t) -> (N,)`` (``L_t`` at a fresh
    ``x_t``) and ``prior_term(x) -> (N,)`` (``KL(q(x_T | x) || p(x_T))``). Each update
    draws one step ``t`` per example, uniformly or with probability ``p_t`` proportional to
    ``sqrt(E[L_t^2])`` over the last ``history`` values of each step (uniform until every step has
    them; mixed with ``uniform_share`` of the uniform), and weights ``L_t`` by ``1 / (T p_t)``.
    An exponential moving average of the weights is what `model_state` returns (so early stopping,
    the restored best epoch and checkpoints use it). The validation figure is an unbiased estimate
    of minus the bound, nats per example, at the EMA weights: ``validation_steps`` stratified steps
    per example (``L_t`` scaled by ``T / validation_steps``), steps and noise fixed by a seed.

    Args:
        model: a diffusion model with the members above.
        ema_decay: decay of the weight average (warmed up as ``min(ema_decay, (1 + k) / (10 + k))``).
        history: values of ``L_t`` kept per step for importance sampling.
        uniform_share: share of the uniform distribution in the importance-sampling mixture.
        validation_steps: steps per example in the validation estimate (at most ``T``).
        validation_seed: seed of the steps and noise of the validation estimate.
    """

    unit = "noise MSE per pixel"
    validation_unit = "nats per example, minus the bound"

    def __init__(self, model: Any, *, lr: float = 1e-3, weight_decay: float = 0.0, max_grad_norm: float | None = None,
                 ema_decay: float = 0.995, history: int = 10, uniform_share: float = 0.001,
                 validation_steps: int = 20, validation_seed: int = 0) -> None:
        missing = [name for name in REQUIRED if not hasattr(model, name)]
        if missing:
            raise TypeError(f"the denoising engine needs a diffusion model; {type(model).__name__} lacks "
                            f"{', '.join(missing)}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay!r}")
        if not isinstance(history, int) or history < 1:
            raise ValueError(f"history must be a positive integer, got {history!r}")
        if not 0.0 < uniform_share <= 1.0:
            raise ValueError(f"uniform_share must lie in (0, 1], got {uniform_share!r}")
        if not isinstance(validation_steps, int) or validation_steps < 1:
            raise ValueError(f"validation_steps must be a positive integer, got {validation_steps!r}")
        super().__init__(model, lr=lr, weight_decay=weight_decay, max_grad_norm=max_grad_norm)
        self.validation_steps = min(validation_steps, model.num_timesteps)
        self.ema_decay, self.uniform_share, self.validation_seed = ema_decay, uniform_share, validation_seed
        steps = model.num_timesteps
        self.losses = torch.zeros(steps, history, dtype=torch.float64)
        self.counts = torch.zeros(steps, dtype=torch.long)
        self.updates = 0
        self.optimizer: torch.optim.Optimizer | None = None
        self.ema: dict[str, torch.Tensor] = {}

    def prepare(self, first_batch: dict[str, torch.Tensor]) -> None:
        """AdamW over the model's parameters and an EMA copy of its floating-point state."""
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items() if v.is_floating_point()}

    def step_probabilities(self) -> torch.Tensor | None:
        """Importance-sampling probabilities of the steps, shape ``(T,)``, float64; ``None`` while sampling
        uniformly (uniform sampling asked for, or some step lacks its full history)."""
        if self.model.timestep_sampling != "importance" or bool((self.counts < self.losses.shape[1]).any()):
            return None
        rms = self.losses.pow(2).mean(1).sqrt()
        return (1 - self.uniform_share) * rms / rms.sum() + self.uniform_share / len(rms)

    def step(self, batch: dict[str, torch.Tensor], dataset_size: int) -> dict[str, float]:
        """One AdamW update on a minibatch; returns ``loss`` (the training objective per example) and
        ``bound`` (an unbiased estimate of the steps' summed ``L_t``, nats per example)."""
        x = batch[X]
        steps = self.model.num_timesteps
        probabilities = self.step_probabilities()
        if probabilities is None:
            t = torch.randint(steps, (x.shape[0],), device=x.device)
            weight = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        else:
            t = torch.multinomial(probabilities, x.shape[0], replacement=True).to(x.device)
            weight = (1.0 / (steps * probabilities[t.cpu()])).to(x.device, x.dtype)
        self.model.train()
        loss, terms = self.model.training_loss(x, t, weight)
        value = self.update(loss.mean(), self.optimizer)
        self._remember(t.cpu(), terms.detach().double().cpu())
        self._average()
        return {"loss": value, "bound": float((terms.detach() * weight).mean()) * steps}

    def _remember(self, t: torch.Tensor, terms: torch.Tensor) -> None:
        """Push each example's ``L_t`` into its step's history (oldest value out)."""
        for step, term in zip(t.tolist(), terms.tolist(), strict=True):
            self.losses[step] = torch.cat([self.losses[step, 1:], self.losses.new_tensor([term])])
            self.counts[step] += 1

    @torch.no_grad()
    def _average(self) -> None:
        self.updates += 1
        decay = min(self.ema_decay, (1 + self.updates) / (10 + self.updates))
        for name, value in self.model.state_dict().items():
            if name in self.ema:
                self.ema[name].lerp_(value, 1 - decay)

    def model_state(self) -> dict[str, torch.Tensor]:
        """The model's state with the EMA of its floating-point entries."""
        return {k: self.ema.get(k, v).clone() for k, v in self.model.state_dict().items()}

    @torch.no_grad()
    def validation_loss(self, batch: dict[str, torch.Tensor]) -> float:
        """Minus the bound, estimated from stratified steps (nats per example, averaged over the batch)
        at the EMA weights; steps and noise seeded by ``validation_seed``."""
        current = {k: v.clone() for k, v in self.model.state_dict().items()}
        x = batch[X]
        self.model.load_state_dict(self.model_state())
        self.model.eval()
        try:
            devices = [x.device] if x.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.validation_seed)
                steps, k = self.model.num_timesteps, self.validation_steps
                offsets = torch.rand(x.shape[0], 1, dtype=torch.float64, device=x.device)
                t = ((torch.arange(k, device=x.device) + offsets) * (steps / k)).long().clamp(max=steps - 1)
                terms = self.model.bound_terms(x.repeat_interleave(k, 0), t.reshape(-1)).reshape(-1, k)
                return float((self.model.prior_term(x) + terms.sum(1) * (steps / k)).mean())
        finally:
            self.model.load_state_dict(current)
            self.model.train()

    def state_dict(self) -> dict[str, Any]:
        """Optimizer state, the weights being trained (checkpoints hold the average), EMA weights, the
        importance-sampling history and the update count (copies, so later steps leave them alone)."""
        optimizer = copy.deepcopy(self.optimizer.state_dict()) if self.optimizer is not None else None
        return {"optimizer": optimizer, "online": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "ema": {k: v.clone() for k, v in self.ema.items()}, "losses": self.losses.clone(),
                "counts": self.counts.clone(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (after `prepare`): the checkpoint's weights are the average, so
        the weights being trained come back from the state."""
        self.model.load_state_dict(state["online"])
        if state["optimizer"] is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.ema = {k: v.clone() for k, v in state["ema"].items()}
        self.losses, self.counts, self.updates = state["losses"].clone(), state["counts"].clone(), int(state["updates"])
