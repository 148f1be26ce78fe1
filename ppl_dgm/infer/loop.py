"""The one training loop every minibatch engine runs in: shuffled minibatches, progress, early
stopping on the engine's validation figure, checkpoints of the best weights plus the engine's state,
and resuming from them. Data in memory or streamed batch by batch (`ppl_dgm.datasets.streaming`);
under ``torchrun`` each rank takes its share of every global batch (`ppl_dgm.infer.distributed`)."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch
from tqdm.auto import tqdm

from ppl_dgm import io
from ppl_dgm.core import X
from ppl_dgm.datasets.streaming import Rows, TensorRows
from ppl_dgm.evaluation.dequantization import dequantize as add_uniform_noise
from ppl_dgm.infer import distributed
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
        compile_reason: why the training step ran eagerly rather than compiled (SVI; ``None`` when it was
            compiled or the engine does not compile).
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
    compile_reason: str | None = None

    @property
    def best_val_loss(self) -> float | None:
        """Validation loss at `best_epoch` (``None`` without validation figures)."""
        return self.val_loss[self.best_epoch] if self.val_loss and self.best_epoch is not None else None


def dequantized(batch: dict[str, torch.Tensor], dequantize: bool) -> dict[str, torch.Tensor]:
    """A copy of ``batch`` (same tensors) with ``x`` dequantized (``x + U[0, 1)``) if asked."""
    return {**batch, X: add_uniform_noise(batch[X])} if dequantize else dict(batch)


VALIDATION_ROWS = 2**14
"""Rows per call of the engine's validation figure when validation data is streamed or shared by ranks."""


def run_loop(engine: Engine, train: dict[str, torch.Tensor] | Rows, val: dict[str, torch.Tensor] | Rows | None, *,
             epochs: int, batch_size: int, patience: int | None, progress: bool,
             checkpoint_dir: str | Path | None, checkpoint_every: float, resume: bool) -> FitResult:
    """Fit ``engine.model`` on ``train`` (tensors on the model's device, key ``"x"`` plus context, or
    `Rows` read batch by batch; ``model.setup`` sees the first `HEAD_ROWS` rows of streamed data).

    With ``val`` and an engine that has a validation figure, the weights of the best epoch are
    restored at the end and fitting stops after ``patience`` epochs without improvement. Checkpoints
    (in ``checkpoint_dir``, atomically, at most every ``checkpoint_every`` seconds and at the end)
    hold the best weights so far with the engine's state at that epoch, so ``resume`` continues from
    there. Under ``torchrun`` only rank 0 writes them, and every rank takes the same decisions.
    """
    model = engine.model
    train = train if isinstance(train, Rows) else TensorRows(train)
    val = val if val is None or isinstance(val, Rows) else TensorRows(val)
    if distributed.active() and (not train.indexable or (val is not None and not val.indexable)):
        raise ValueError("a DataLoader cannot be split into the ranks' shares of each batch; pass its Dataset "
                         "(loader.dataset) under torchrun")
    n = len(train)
    head = train.head()
    dequantize = engine.dequantizes(head)
    model.setup(add_uniform_noise(head[X]) if dequantize else head[X], **context_of(head))
    engine.prepare(dequantized({k: v[:batch_size] for k, v in head.items()}, dequantize))
    distributed.broadcast_module(model)
    shuffle = engine.shuffles(n, batch_size, val is not None)
    if not shuffle and distributed.active():
        raise ValueError(f"the {engine.name!r} engine needs every row in order (e.g. a guide with per-example "
                         "parameters), which data-parallel ranks cannot share; run this fit in one process")
    # the order of the rows: one generator seeded from rank 0's, so every rank (and one process with the same
    # seed) draws the same permutations whatever else they draw
    generator = torch.Generator().manual_seed(distributed.shared_seed(head[X].device))
    result = FitResult(engine=engine.name, unit=engine.unit, validation_unit=engine.validation_unit or engine.unit)
    if resume:
        state, history = io.load_training_state(checkpoint_dir, engine.name, model=model)
        engine.load_state_dict(state)
        for key in ("train_loss", "val_loss", "history", "best_epoch", "epochs_run"):
            setattr(result, key, history[key])
    best = _snapshot(engine, result) if val is not None else None  # kept if no epoch beats a resumed best
    last_saved = start = time.perf_counter()

    def checkpoint(snapshot: dict[str, Any]) -> None:
        nonlocal last_saved
        if distributed.is_main_process():
            io.save(model, checkpoint_dir, state_dict=snapshot["model"])
            # the resume point is the trainer file alone (weights included): one atomic write, so a kill
            # between the two files never pairs one epoch's weights with another's optimizer
            io.save_training_state(checkpoint_dir, engine.name, snapshot["engine"], snapshot["history"],
                                   weights=snapshot["model"])
        last_saved = time.perf_counter()

    bar = tqdm(range(result.epochs_run, epochs), disable=not (progress and distributed.is_main_process()),
               desc=f"fit ({engine.name})", unit="epoch", leave=False)
    try:
        model.train()
        with pyro.validation_enabled(False):
            for epoch in bar:
                figures = _train_epoch(engine, train, batch_size, epoch, dequantize, shuffle, generator)
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
    finally:
        bar.close()
        engine.finish()
    model.eval()
    if result.val_loss:
        model.load_state_dict(best["model"])
    else:  # the last epoch's weights (an engine's averaged ones, where it keeps them)
        model.load_state_dict(engine.model_state())
    if checkpoint_dir is not None:
        checkpoint(best if result.val_loss else _snapshot(engine, result))
        distributed.barrier()  # no rank returns before rank 0's files are there
    result.seconds = time.perf_counter() - start
    result.compile_reason = getattr(engine, "compile_reason", None)
    return result


def _validate(engine: Engine, val: Rows | None, dequantize: bool) -> float | None:
    """The engine's validation figure on ``val`` in evaluation mode, without gradients, the same on every rank.

    In memory, every rank scores all of ``val`` and the ranks' figures are averaged (equal for a deterministic
    figure). Streamed, each rank scores its share of the rows in chunks and the figure is the row-weighted mean
    over all chunks: exact for a per-example mean, while a term outside the data plate (the log prior of global
    sites in the SVI bound) then counts once per chunk instead of once.
    """
    if val is None:
        return None
    engine.model.eval()
    try:
        with torch.no_grad():
            if not val.streamed:
                figure = engine.validation_loss(dequantized(val.head(), dequantize))
                if figure is None or not distributed.active():
                    return figure
                summed = distributed.all_reduce_sum(torch.tensor([figure], dtype=torch.float64,
                                                                 device=engine.model.device))
                return float(summed[0]) / distributed.world_size()
            mine = torch.arange(len(val))[distributed.rank()::distributed.world_size()] if val.indexable else None
            total, count = 0.0, 0
            for chunk in val.chunks(VALIDATION_ROWS, mine):
                figure = engine.validation_loss(dequantized(chunk, dequantize))
                if figure is None:
                    return None
                total += figure * chunk[X].shape[0]
                count += chunk[X].shape[0]
            summed = distributed.all_reduce_sum(torch.tensor([total, count], dtype=torch.float64,
                                                             device=engine.model.device))
            return float(summed[0] / summed[1])
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


def _batches(train: Rows, batch_size: int, shuffle: bool, generator: torch.Generator
             ) -> Iterator[tuple[dict[str, torch.Tensor], float]]:
    """This rank's rows of each global batch of ``train`` and its share ``b_r / B`` of the batch (1 in one
    process). Under ``torchrun`` a last batch with fewer rows than ranks joins the one before it."""
    if not train.indexable:  # a DataLoader: its own order and batches
        yield from ((batch, 1.0) for batch in train.chunks(batch_size))
        return
    n = len(train)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    parts = list(order.split(batch_size))
    if distributed.active():
        if n < distributed.world_size():
            raise ValueError(f"{n} training rows for {distributed.world_size()} processes: give every process at "
                             "least one row (more data or fewer processes)")
        if len(parts) > 1 and len(parts[-1]) < distributed.world_size():
            parts[-2:] = [torch.cat(parts[-2:])]
    for index in parts:
        mine, weight = distributed.share(index)
        yield train.take(mine), weight


def _train_epoch(engine: Engine, train: Rows, batch_size: int, epoch: int, dequantize: bool, shuffle: bool,
                 generator: torch.Generator) -> dict[str, float]:
    """One pass over ``train`` (shuffled unless told otherwise); the engine's figures averaged over the steps
    (under ``torchrun``: each step's figures weighted by the ranks' shares and summed over ranks)."""
    totals: dict[str, float] = {}
    step = -1
    for step, (batch, weight) in enumerate(_batches(train, batch_size, shuffle, generator)):
        engine.rank_weight = weight
        try:
            figures = engine.step(dequantized(batch, dequantize), len(train))
        except NonFiniteLossError as error:
            raise NonFiniteLossError(f"{error} at epoch {epoch + 1}, step {step + 1}; the model keeps the parameters "
                                     "of the last good step") from None
        for name, value in figures.items():
            totals[name] = totals.get(name, 0.0) + weight * value
    if distributed.active():
        summed = distributed.all_reduce_sum(torch.tensor(list(totals.values()), dtype=torch.float64,
                                                         device=engine.model.device)).tolist()
        totals = dict(zip(totals, summed, strict=True))
    return {name: total / (step + 1) for name, total in totals.items()}
