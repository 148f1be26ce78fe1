"""The engine for estimators with a fit of their own (EM or closed form): one call, no minibatches."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ppl_dgm import io
from ppl_dgm.core import X
from ppl_dgm.evaluation.dequantization import dequantize as add_uniform_noise
from ppl_dgm.evaluation.dequantization import needs_dequantization
from ppl_dgm.evaluation.likelihood import log_likelihood
from ppl_dgm.infer.engine import Engine, register_engine
from ppl_dgm.infer.loop import FitResult


@register_engine("em")
class EMEngine(Engine):
    """Calls the model's own ``fit_data(x)`` (EM iterations or a closed form) on all of the training data,
    dequantized where the model is a density on integer data. ``train_loss`` is the negative
    log-likelihood per example after each EM iteration (nats); ``history["val_nll"]`` holds the validation
    NLL of the fitted model. The model's learning settings (tolerance, iterations) are its constructor arguments.

    Args:
        dequantize: fit ``x + u``, ``u ~ U[0, 1)`` (default: where the model is a density on integer data).
    """

    minibatches = False
    unit = "nats per example"

    def __init__(self, model: Any, *, dequantize: bool | None = None, **common: Any) -> None:
        super().__init__(model, **common)
        if not callable(getattr(model, "fit_data", None)):
            raise TypeError(f"{type(model).__name__} has no EM/closed-form fit (a fit_data method); use the engine "
                            f"'{model.default_engine if model.default_engine != 'em' else 'svi'}'")
        self.dequantize = dequantize

    def run(self, train: dict[str, torch.Tensor], val: dict[str, torch.Tensor] | None, *,
            checkpoint_dir: str | Path | None = None, resume: bool = False, **loop: Any) -> FitResult:
        """Fit by ``fit_data``; the loop's minibatch settings do not apply."""
        if resume:
            raise ValueError("resume continues minibatch fits; an EM fit starts again from its initialization: "
                             "pass resume=False")
        x = train[X]
        dequantize = needs_dequantization(self.model, x) if self.dequantize is None else self.dequantize
        start = time.perf_counter()
        self.model.fit_data(add_uniform_noise(x) if dequantize else x)
        history = [-value for value in self.model.fit_history()]
        result = FitResult(engine=self.name, unit=self.unit, validation_unit=self.unit, train_loss=history,
                           history={"nll": list(history)},
                           epochs_run=len(history), best_epoch=max(len(history) - 1, 0))
        if val is not None:  # one figure, for the fitted model: EM has no epochs to stop early at
            result.history["val_nll"] = [log_likelihood(self.model, val[X], num_samples=1).nll]
        self.model.eval()
        if checkpoint_dir is not None:
            io.save(self.model, checkpoint_dir)
        result.seconds = time.perf_counter() - start
        return result
