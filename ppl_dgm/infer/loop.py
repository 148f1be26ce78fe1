"""The one training loop every minibatch engine runs in: shuffled minibatches, progress, early
stopping on the engine's validation figure, checkpoints of the best weights plus the engine's state,
and resuming from them."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch
from tqdm.auto import tqdm

from ppl_dgm import io
from ppl_dgm.core import X
from ppl_dgm.evaluation.dequantization import dequantize as add_uniform_noise
from ppl_dgm.infer.engine import Engine, NonFiniteLossError
from ppl_dgm.sites import context_of


@dataclass
class FitResult:
    """What a fit did.

    Attributes:
        engine: name of the engine that fitted the model.
        train_loss: mean training loss of each epoch (the engine's first figure; for SVI the
            negative bound in nats per example).
        val_loss: the engine's validation figure after each epoch (empty without validation data
            or for engines without one).
        history: every figure the engine reports per step, averaged per epoch (e.g. the
            generator's and the discriminator's losses of a GAN).
        unit: unit of ``train_loss``.
        validation_unit: unit of ``val_loss``.
        best_epoch: epoch (0-based) whose parameters the model holds at the end.
        epochs_run: epochs completed, resumed ones included.
        stopped_early: whether patience ran out before ``epochs``.
        seconds: wall time of this call.
    """

    engine: str = ""
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=dict)
    unit: str = ""
    validation_unit: str = ""
    best_epoch: int | None = None
    epochs_run: int = 0
    stopped_early: bool = False
    seconds: float = 0.0

    @property
    def best_val_loss(self) -> float | None:
        """Validation loss at `best_epoch` (``None`` without validation figures)."""
        return self.val_loss[self.best_epoch] if self.val_loss and self.best_epoch is not None else None


def rows(batch: dict[str, torch.Tensor], index: torch.Tensor | slice, dequantize: bool) -> dict[str, torch.Tensor]:
    """The rows ``index`` of every tensor in ``batch``, with ``x`` dequantized (``x + U[0, 1)``) if asked."""
    picked = {k: v[index] for k, v in batch.items()}
    if dequantize:
        picked[X] = add_uniform_noise(picked[X])
    return picked


def run_loop(engine: Engine, train: dict[str, torch.Tensor], val: dict[str, torch.Tensor] | None, *,
             epochs: int, batch_size: int, patience: int | None, progress: bool,
             checkpoint_dir: str | Path | None, checkpoint_every: float, resume: bool) -> FitResult:
    """Fit ``engine.model`` on ``train`` (tensors on the model's device, key ``"x"`` plus context).

    With ``val`` and an engine that has a validation figure, the weights of the best epoch are
    restored at the end and fitting stops after ``patience`` epochs without improvement. Checkpoints
    (in ``checkpoint_dir``, atomically, at most every ``checkpoint_every`` seconds and at the end)
    hold the best weights so far with the engine's state at that epoch, so ``resume`` continues from
    there.
    """
    model = engine.model
    n = train[X].shape[0]
    dequantize = engine.dequantizes(train)
    model.setup(add_uniform_noise(train[X]) if dequantize else train[X], **context_of(train))
    engine.prepare(rows(train, slice(0, batch_size), dequantize))
    shuffle = engine.shuffles(n, batch_size, val is not None)
    result = FitResult(engine=engine.name, unit=engine.unit, validation_unit=engine.validation_unit or engine.unit)
    if resume:
        io.load_weights(model, checkpoint_dir)
        state, history = io.load_training_state(checkpoint_dir, engine.name)
        engine.load_state_dict(state)
        for key in ("train_loss", "val_loss", "history", "best_epoch", "epochs_run"):
            setattr(result, key, history[key])
    best = _snapshot(engine, result) if val is not None else None  # kept if no epoch beats a resumed best
    last_saved = start = time.perf_counter()

    def checkpoint(snapshot: dict[str, Any]) -> None:
        nonlocal last_saved
        io.save(model, checkpoint_dir, state_dict=snapshot["model"])
        io.save_training_state(checkpoint_dir, engine.name, snapshot["engine"], snapshot["history"])
        last_saved = time.perf_counter()

    bar = tqdm(range(result.epochs_run, epochs), disable=not progress, desc=f"fit ({engine.name})", unit="epoch",
               leave=False)
    model.train()
    with pyro.validation_enabled(False):
        for epoch in bar:
            figures = _train_epoch(engine, train, batch_size, epoch, dequantize, shuffle)
            for name, value in figures.items():
                result.history.setdefault(name, []).append(value)
            result.train_loss.append(next(iter(figures.values())))
            result.epochs_run = epoch + 1
            previous_best = result.best_val_loss
            validated = _validate(engine, val, dequantize)
            if validated is not None:
                result.val_loss.append(validated)
            improved = validated is None or validated < (math.inf if previous_best is None else previous_best)
            if improved:
                result.best_epoch = epoch
                if validated is not None:
                    best = _snapshot(engine, result)
            bar.set_postfix(loss=f"{result.train_loss[-1]:.3g}",
                            **({"val": f"{validated:.3g}"} if validated is not None else {}))
            if checkpoint_dir is not None and time.perf_counter() - last_saved > checkpoint_every:
                checkpoint(best if result.val_loss else _snapshot(engine, result))
            if patience is not None and result.val_loss and epoch - result.best_epoch >= patience:
                result.stopped_early = True
                break
    bar.close()
    model.eval()
    final = best if result.val_loss else _snapshot(engine, result)
    model.load_state_dict(final["model"])
    if checkpoint_dir is not None:
        checkpoint(final)
    result.seconds = time.perf_counter() - start
    return result


def _validate(engine: Engine, val: dict[str, torch.Tensor] | None, dequantize: bool) -> float | None:
    """The engine's validation figure on ``val`` in evaluation mode, without gradients."""
    if val is None:
        return None
    engine.model.eval()
    try:
        with torch.no_grad():
            return engine.validation_loss(rows(val, slice(None), dequantize))
    finally:
        engine.model.train()


def _snapshot(engine: Engine, result: FitResult) -> dict[str, Any]:
    """Copies of everything a resumed fit needs: the weights to keep, the engine's state, the history."""
    return {
        "model": {k: v.detach().clone() for k, v in engine.model_state().items()},
        "engine": copy.deepcopy(engine.state_dict()),
        "history": {
            "train_loss": list(result.train_loss), "val_loss": list(result.val_loss),
            "history": {k: list(v) for k, v in result.history.items()},
            "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
        },
    }


def _train_epoch(engine: Engine, train: dict[str, torch.Tensor], batch_size: int, epoch: int, dequantize: bool,
                 shuffle: bool) -> dict[str, float]:
    """One pass over ``train`` (shuffled unless told otherwise); the engine's figures averaged over the steps."""
    n = train[X].shape[0]
    device = train[X].device
    order = torch.randperm(n, device=device) if shuffle else torch.arange(n, device=device)
    totals: dict[str, float] = {}
    for step, index in enumerate(order.split(batch_size)):
        try:
            figures = engine.step(rows(train, index, dequantize), n)
        except NonFiniteLossError as error:
            raise NonFiniteLossError(f"{error} at epoch {epoch}, step {step}; the model keeps the parameters of the "
                                     "last good step") from None
        for name, value in figures.items():
            totals[name] = totals.get(name, 0.0) + value
    return {name: total / (step + 1) for name, total in totals.items()}
