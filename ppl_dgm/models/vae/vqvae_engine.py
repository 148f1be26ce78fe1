"""The ``"vqvae"`` engine: SVI on the VQ-VAE's bound plus its quantization losses, then the prior over
the codes fitted afterwards, on the trained encoder's codes, within the same ``ppl_dgm.fit`` call."""

from __future__ import annotations

import copy
import math
import time
from typing import TYPE_CHECKING, Any

import torch

from ppl_dgm import io
from ppl_dgm.core import X
from ppl_dgm.infer.engine import register_engine
from ppl_dgm.infer.loop import FitResult
from ppl_dgm.infer.objectives import Objective
from ppl_dgm.infer.svi import SVIEngine

if TYPE_CHECKING:
    from ppl_dgm.models.vae.vqvae import VQVAE


@register_engine("vqvae")
class VQVAEEngine(SVIEngine):
    """Two stages in one fit.

    1. The autoencoder: each step minimizes the SVI objective (``"elbo"`` or ``"iwae"``: with the
       point-mass guide both are ``-log p(x | z_q) - log p(k)``) plus the quantization losses
       (`VQVAE.quantization_loss`, scaled like the bound to the whole data set), then moves an EMA
       codebook toward its assigned encodings. The prior stays frozen at its uniform start, so the
       validation figure (the bound) ranks epochs by reconstruction alone; the best epoch is kept.
    2. The prior: with the autoencoder fixed (evaluation mode), the MADE prior is fitted by maximum
       likelihood on the training codes with AdamW (the fit's ``lr``, ``batch_size`` and ``patience``),
       keeping the epoch with the best validation codes' log-likelihood (all ``prior_epochs`` without
       validation data). A checkpoint directory receives the final model again.

    Args:
        objective: ``"elbo"``, ``"iwae"``, ``"renyi"`` or an `Objective` (see `SVIEngine`).
        num_particles: guide samples per example (default 1 for the ELBO, 5 otherwise).
        alpha: order of the Renyi bound.
        dequantize: as for `SVIEngine` (the default: only for the Gaussian likelihood on integer data).
        prior_epochs: passes over the training codes in stage 2.
        **common: ``lr``, ``weight_decay``, ``max_grad_norm``.
    """

    def __init__(self, model: VQVAE, *, objective: str | Objective = "elbo", num_particles: int | None = None,
                 alpha: float = 0.5, dequantize: bool | None = None, prior_epochs: int = 300, **common: Any) -> None:
        if not isinstance(prior_epochs, int) or isinstance(prior_epochs, bool) or prior_epochs < 0:
            raise ValueError(f"prior_epochs must be a non-negative integer, got {prior_epochs!r}")
        if not hasattr(model, "quantization_loss"):
            raise ValueError(f"the 'vqvae' engine fits a VQVAE, not a {type(model).__name__}")
        super().__init__(model, objective=objective, num_particles=num_particles, alpha=alpha, dequantize=dequantize,
                         **common)
        self.prior_epochs = prior_epochs

    def prepare(self, first_batch: dict[str, torch.Tensor]) -> None:
        self.model.code_prior.requires_grad_(False)  # fitted in stage 2
        super().prepare(first_batch)

    def step(self, batch: dict[str, torch.Tensor], dataset_size: int) -> dict[str, float]:
        with self.model.recording() as records:
            bound = self.loss_fn.loss(self.model, batch, dataset_size)
        rows = batch[X].shape[0]
        z_e, codes = records[0]  # one guide call (particles are tiled rows)
        quantization = self.model.quantization_loss(z_e, codes).sum() * dataset_size / len(z_e)
        loss = self.update(bound + quantization, self.optimizer, self.params)
        self.model.ema_update(z_e[:rows], codes[:rows])
        return {"loss": loss / dataset_size, "quantization": float(quantization.detach()) / dataset_size}

    def run(self, train: dict[str, torch.Tensor], val: dict[str, torch.Tensor] | None, **loop: Any) -> FitResult:
        result = super().run(train, val, **loop)
        start = time.perf_counter()
        prior_loss = self.fit_prior(train[X], None if val is None else val[X], loop["batch_size"], loop["patience"])
        result.history["prior_nll"] = prior_loss  # stage 2's own epochs
        result.seconds += time.perf_counter() - start
        if loop.get("checkpoint_dir") is not None:
            io.save(self.model, loop["checkpoint_dir"])
        return result

    def fit_prior(self, train_x: torch.Tensor, val_x: torch.Tensor | None, batch_size: int,
                  patience: int | None) -> list[float]:
        """Stage 2: fit ``model.code_prior`` to the codes of ``train_x``; returns the per-epoch negative
        log-likelihood of the validation codes (of the training codes without ``val_x``), nats per example."""
        model, prior = self.model, self.model.code_prior
        model.eval()
        codes = model.codes(train_x)
        val_codes = model.codes(val_x) if val_x is not None else codes
        prior.requires_grad_(True)
        optimizer = torch.optim.AdamW(prior.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        history: list[float] = []
        best, best_epoch = math.inf, -1
        best_state = copy.deepcopy(prior.state_dict())
        for epoch in range(self.prior_epochs):
            for index in torch.randperm(len(codes), device=codes.device).split(batch_size):
                self.update(-prior.log_prob(codes[index]).mean(), optimizer, what="prior loss")
            with torch.no_grad():
                history.append(float(-prior.log_prob(val_codes).mean()))
            if history[-1] < best:
                best, best_epoch, best_state = history[-1], epoch, copy.deepcopy(prior.state_dict())
            elif val_x is not None and patience is not None and epoch - best_epoch >= patience:
                break
        prior.load_state_dict(best_state)
        return history
