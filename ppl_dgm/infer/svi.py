"""Stochastic variational inference over minibatches with early stopping."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch
from tqdm.auto import tqdm

from ppl_dgm import io
from ppl_dgm.core import GenerativeModel, X
from ppl_dgm.evaluation.dequantization import dequantize as add_uniform_noise
from ppl_dgm.evaluation.dequantization import needs_dequantization
from ppl_dgm.infer.objectives import ELBO, Objective, make_objective
from ppl_dgm.lazy import initialize_parameters, trim_prototype
from ppl_dgm.posterior import per_example_guide_sites
from ppl_dgm.sites import context_of
from ppl_dgm.traces import enumerated_sites
from ppl_dgm.validation import prepare_data


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss or gradient is NaN/inf; the model keeps its last good parameters."""


@dataclass
class FitResult:
    """What a fit did. Losses are negative bounds in nats per example.

    Attributes:
        train_loss: mean training loss of each epoch.
        val_loss: validation loss after each epoch (empty without validation data).
        best_epoch: epoch (0-based) whose parameters the model holds at the end.
        epochs_run: epochs completed, resumed ones included.
        stopped_early: whether patience ran out before ``epochs``.
        seconds: wall time of this call.
    """

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    epochs_run: int = 0
    stopped_early: bool = False
    seconds: float = 0.0

    @property
    def best_val_loss(self) -> float | None:
        """Validation loss at `best_epoch` (``None`` without validation data)."""
        return self.val_loss[self.best_epoch] if self.val_loss and self.best_epoch is not None else None


def _check_positive(**values: Any) -> None:
    for name, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")


def _loss_and_gradient_norm(loss: torch.Tensor, params: list[torch.Tensor]) -> tuple[float, float]:
    """The loss and the summed norm of the gradients, fetched together (one device sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.stack(torch._foreach_norm(grads)).sum() if grads else torch.zeros((), device=loss.device)
    value, grad_norm = torch.stack([loss.detach(), norm.to(loss.dtype)]).tolist()
    return value, grad_norm


@torch.no_grad()
def evaluate_loss(model: GenerativeModel, objective: Objective, batch: dict[str, torch.Tensor],
                  batch_size: int, dequantize: bool = False) -> float:
    """Objective on ``batch`` in nats per example, computed in chunks of ``batch_size`` rows."""
    n = batch[X].shape[0]
    total = 0.0
    for start in range(0, n, batch_size):
        chunk = _rows(batch, slice(start, start + batch_size), dequantize)
        total += float(objective.loss(model, chunk, chunk[X].shape[0]))
    return total / n


def fit(
    model: GenerativeModel,
    data: torch.Tensor | Mapping[str, torch.Tensor],
    *,
    val: torch.Tensor | Mapping[str, torch.Tensor] | None = None,
    epochs: int = 100,
    batch_size: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = None,
    objective: str | Objective | pyro.infer.ELBO = "elbo",
    num_particles: int | None = None,
    alpha: float = 0.5,
    patience: int | None = 20,
    seed: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: float = 30.0,
    resume: bool = False,
    dequantize: bool | None = None,
) -> FitResult:
    """Fit ``model`` by stochastic variational inference with Adam over shuffled minibatches.

    The loss of a minibatch of ``B`` rows scales the sites inside plate ``"data"`` by
    ``N / B``, so it estimates the bound on the whole training set. With ``val`` the
    objective is measured on it after every epoch; the parameters of the best epoch are
    restored at the end and fitting stops after ``patience`` epochs without improvement.

    Args:
        model: the model; fitted in place.
        data: training examples ``(N, *event_shape)``, or a mapping with key ``"x"`` and
            per-example context tensors (passed to model and guide by name).
        val: validation data in the same form.
        epochs: total number of passes over ``data`` (resumed epochs count).
        batch_size: rows per step.
        lr: Adam learning rate.
        weight_decay: decoupled weight decay (AdamW); 0 is plain Adam.
        max_grad_norm: clip the total gradient norm of a step to this value (``None``: no clipping).
        objective: ``"elbo"``, ``"iwae"``, ``"renyi"``, any ``pyro.infer.ELBO``, or an
            `Objective`.
        num_particles: guide samples per example (default 1 for the ELBO, 5 otherwise).
        alpha: order of the Renyi bound.
        patience: epochs without validation improvement before stopping (``None``: never).
        seed: seeds Pyro's and torch's random number generators when given.
        device: where to fit (default: where the model is).
        progress: show a progress bar over epochs.
        checkpoint_dir: where to save the best model and the optimizer state (atomically,
            at most every ``checkpoint_every`` seconds and at the end).
        checkpoint_every: seconds between checkpoints.
        resume: continue from the optimizer state and history saved in ``checkpoint_dir``;
            the model's weights are loaded from there too.
        dequantize: fit ``x + u``, ``u ~ U[0, 1)`` drawn afresh for every batch (default: for
            continuous densities on integer-valued data, as ``log_likelihood`` scores them).

    Returns:
        `FitResult` with the loss history.

    Raises:
        NonFiniteLossError: a loss or gradient became NaN/inf; names the epoch and step. The
            model keeps the parameters of the last good step.
    """
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    _check_positive(lr=lr, patience=patience, checkpoint_every=checkpoint_every, max_grad_norm=max_grad_norm)
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or not weight_decay >= 0:
        raise ValueError(f"weight_decay must be a non-negative number, got {weight_decay!r}")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir")
    loss_fn = make_objective(objective, num_particles, alpha, model)
    device = torch.device(device) if device is not None else model.device
    model.to(device)
    dtype = model.dtype
    train = prepare_data(data, model, "data", device, dtype)
    valid = prepare_data(val, model, "val", device, dtype) if val is not None else None
    context = context_of(train)
    if seed is not None:
        pyro.set_rng_seed(seed)
    if dequantize is None and model.capabilities.data is None:  # a run of the story tells mass from density
        model.setup(train[X], **context)
        first = _rows(train, slice(0, batch_size), False)
        dequantize = needs_dequantization(model, first[X], context_of(first))
    else:
        if dequantize is None:
            dequantize = needs_dequantization(model, train[X])
        model.setup(add_uniform_noise(train[X]) if dequantize else train[X], **context)
    guide_trace, model_trace = initialize_parameters(model, _rows(train, slice(0, batch_size), dequantize))
    shuffle = _check_per_example_guide(model, train[X].shape[0], batch_size, valid is not None)
    if isinstance(loss_fn, ELBO) and enumerated_sites(guide_trace, model_trace):
        loss_fn = make_objective(objective, num_particles, alpha, model, enumerate_discrete=True)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no parameters to fit: neither the model nor the guide holds "
                         "an nn.Parameter, a pyro.param or an autoguide")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    result = FitResult()
    if resume:
        io.load_weights(model, checkpoint_dir)
        state = io.load_training_state(checkpoint_dir, optimizer)
        result.train_loss, result.val_loss = state["train_loss"], state["val_loss"]
        result.best_epoch, result.epochs_run = state["best_epoch"], state["epochs_run"]
    best = _snapshot(model, optimizer, result)
    last_saved = start = time.perf_counter()

    def checkpoint(snapshot: dict[str, Any]) -> None:
        nonlocal last_saved
        io.save(model, checkpoint_dir, state_dict=snapshot["model"])
        io.save_training_state(checkpoint_dir, snapshot["optimizer"], snapshot["history"])
        last_saved = time.perf_counter()

    bar = tqdm(range(result.epochs_run, epochs), disable=not progress, desc="fit", unit="epoch", leave=False)
    model.train()
    with pyro.validation_enabled(False):
        for epoch in bar:
            result.train_loss.append(
                _train_epoch(model, loss_fn, optimizer, params, train, batch_size, epoch, dequantize, shuffle,
                             max_grad_norm)
            )
            result.epochs_run = epoch + 1
            if valid is not None:
                model.eval()
                result.val_loss.append(evaluate_loss(model, loss_fn, valid, max(batch_size, 256), dequantize))
                model.train()
            improved = valid is None or result.val_loss[-1] < (result.best_val_loss or math.inf)
            if improved:
                result.best_epoch = epoch
                if valid is not None:
                    best = _snapshot(model, optimizer, result)
            bar.set_postfix(loss=f"{result.train_loss[-1]:.2f}",
                            **({"val": f"{result.val_loss[-1]:.2f}"} if valid is not None else {}))
            if checkpoint_dir is not None and time.perf_counter() - last_saved > checkpoint_every:
                checkpoint(best if valid is not None else _snapshot(model, optimizer, result))
            if patience is not None and epoch - result.best_epoch >= patience:
                result.stopped_early = True
                break
    bar.close()
    model.eval()
    if valid is not None:
        model.load_state_dict(best["model"])
    if checkpoint_dir is not None:
        checkpoint(best if valid is not None else _snapshot(model, optimizer, result))
    result.seconds = time.perf_counter() - start
    return result


def _rows(batch: dict[str, torch.Tensor], index: torch.Tensor | slice, dequantize: bool) -> dict[str, torch.Tensor]:
    """The rows ``index`` of every tensor in ``batch``, with ``x`` dequantized if asked."""
    rows = {k: v[index] for k, v in batch.items()}
    if dequantize:
        rows[X] = add_uniform_noise(rows[X])
    return rows


def _snapshot(model: GenerativeModel, optimizer: torch.optim.Optimizer, result: FitResult) -> dict[str, Any]:
    """Copies of everything a resumed fit needs: weights, optimizer state, history so far."""
    return {
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "history": {
            "train_loss": list(result.train_loss), "val_loss": list(result.val_loss),
            "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
        },
    }


def _check_per_example_guide(model: GenerativeModel, n: int, batch_size: int, validating: bool) -> bool:
    """Whether to shuffle the rows: not for a guide with parameters of its own for each training example
    (an autoguide over local latents), which needs every row, in order, at each step.

    Raises:
        ValueError: such a guide with minibatches or validation data.
    """
    sites = per_example_guide_sites(model)
    if not sites:
        trim_prototype(model)
        return True
    what = f"{type(model).__name__}'s guide has parameters for each training example (local site(s) " \
           f"{', '.join(sorted(sites))})"
    if batch_size < n:
        raise ValueError(f"{what}, so it needs all {n} rows in each step: pass batch_size >= {n}, or write an "
                         "amortized guide (a network of x) for the local latents")
    if validating:
        raise ValueError(f"{what}, so it cannot score validation data: pass val=None, or write an amortized guide")
    return False


def _train_epoch(model: GenerativeModel, loss_fn: Objective, optimizer: torch.optim.Optimizer,
                 params: list[torch.Tensor], train: dict[str, torch.Tensor], batch_size: int,
                 epoch: int, dequantize: bool, shuffle: bool = True, max_grad_norm: float | None = None) -> float:
    """One pass over ``train`` (shuffled unless told otherwise); returns the mean loss in nats per example."""
    n = train[X].shape[0]
    total = 0.0
    order = torch.randperm(n, device=train[X].device) if shuffle else torch.arange(n, device=train[X].device)
    for step, index in enumerate(order.split(batch_size)):
        loss = loss_fn.loss(model, _rows(train, index, dequantize), n)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        value, grad_norm = _loss_and_gradient_norm(loss, params)
        if not (math.isfinite(value) and math.isfinite(grad_norm)):
            optimizer.zero_grad(set_to_none=True)
            what = "gradient" if math.isfinite(value) else "loss"
            raise NonFiniteLossError(
                f"non-finite {what} at epoch {epoch}, step {step}; "
                "the model keeps the parameters of the last good step"
            )
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        total += value
    return total / (step + 1) / n
