"""``ppl_dgm.fit``: the one entry point for fitting; the model names its engine, a caller may override it."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyro
import torch

from ppl_dgm.core import GenerativeModel
from ppl_dgm.datasets.streaming import TensorRows, as_rows
from ppl_dgm.infer import distributed
from ppl_dgm.infer.engine import Engine, get_engine_class
from ppl_dgm.infer.loop import FitResult


def _check_count(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_positive(**values: Any) -> None:
    for name, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")


def engine_options(engine_class: type[Engine]) -> list[str]:
    """The options an engine takes besides the common ones (lr, weight_decay, max_grad_norm)."""
    return [name for name, parameter in inspect.signature(engine_class.__init__).parameters.items()
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY]


def make_engine(model: GenerativeModel, engine: str | None = None, **options: Any) -> Engine:
    """The engine named ``engine`` (default: ``model.default_engine``) for ``model`` with ``options``.

    Raises:
        ValueError: unknown engine, or an option the engine does not take (the message lists those it does).
    """
    engine_class = get_engine_class(engine if engine is not None else model.default_engine)
    known = {"lr", "weight_decay", "max_grad_norm", *engine_options(engine_class)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"the {engine_class.name!r} engine takes no option(s) {', '.join(unknown)}; its options are "
                         f"{', '.join(sorted(known))}")
    return engine_class(model, **options)


def fit(
    model: GenerativeModel,
    data: torch.Tensor | Mapping[str, torch.Tensor] | Any,
    *,
    val: torch.Tensor | Mapping[str, torch.Tensor] | Any | None = None,
    engine: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    max_grad_norm: float | None = None,
    patience: int | None = 20,
    seed: int | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: float = 30.0,
    resume: bool = False,
    **engine_options: Any,
) -> FitResult:
    """Fit ``model`` in place with the engine it names (``model.default_engine``) or ``engine``.

    Every engine runs in the same loop over shuffled minibatches: with ``val`` (and an engine that
    has a validation figure) the parameters of the best epoch are restored at the end and fitting
    stops after ``patience`` epochs without improvement.

    Args:
        model: the model; fitted in place.
        data: training examples ``(N, *event_shape)``, or a mapping with key ``"x"`` and per-example
            context tensors (passed to the model by name, e.g. labels ``"y"``); or data streamed to the
            device batch by batch: a map-style ``torch.utils.data.Dataset`` (items are rows or such
            mappings), a ``DataLoader`` (iterated as it is), a numpy array or ``np.memmap``
            (`ppl_dgm.datasets.streaming`). Minibatch engines only; ``model.setup`` sees the first rows.
        val: validation data in any of these forms.
        engine: ``"svi"``, ``"em"``, ``"adversarial"``, ``"denoising"``, ``"contrastive"`` or a name
            given to `ppl_dgm.infer.register_engine` (default: the model's ``default_engine``).
        epochs: total number of passes over ``data`` (resumed epochs count; default 100).
        batch_size: rows per step (default 100).
        lr: learning rate of the engine's optimizer(s) (default 1e-3).
        weight_decay: decoupled weight decay (AdamW; default 0, plain Adam).
        max_grad_norm: clip the total gradient norm of each step to this value (``None``: no clipping).
        patience: epochs without validation improvement before stopping (``None``: never).
        seed: seeds Pyro's and torch's random number generators when given.
        device: where to fit (default: where the model is; under ``torchrun``, ``cuda:LOCAL_RANK`` when
            CUDA is available, else the CPU: the job then fits data-parallel, see `ppl_dgm.infer.distributed`).
        progress: show a progress bar over epochs.
        checkpoint_dir: where to save the best model and the engine's state (atomically, at most
            every ``checkpoint_every`` seconds and at the end).
        checkpoint_every: seconds between checkpoints.
        resume: continue from the engine state and history saved in ``checkpoint_dir``; the model's
            weights are loaded from there too.
        **engine_options: options of the engine, e.g. for SVI ``objective`` (``"elbo"``, ``"iwae"``,
            ``"renyi"``, a ``pyro.infer.ELBO`` or an `Objective`), ``num_particles``, ``alpha``,
            ``dequantize``; see each engine's class.

    Returns:
        `FitResult` with the loss history.

    Raises:
        NonFiniteLossError: a loss or gradient became NaN/inf; names the epoch and step. The model
            keeps the parameters of the last good step.
    """
    engine_class = get_engine_class(engine if engine is not None else model.default_engine)
    minibatch = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
                 "max_grad_norm": max_grad_norm}
    given = [name for name, value in minibatch.items() if value is not None]
    if not engine_class.minibatches and given:
        raise ValueError(f"the {engine_class.name!r} engine fits all the data in one call of the model's own fit "
                         f"(its settings are constructor arguments), so {', '.join(given)} do not apply: drop them, "
                         "or pass engine='svi' to fit the story by minibatches")
    epochs = 100 if epochs is None else epochs
    batch_size = 100 if batch_size is None else batch_size
    lr = 1e-3 if lr is None else lr
    weight_decay = 0.0 if weight_decay is None else weight_decay
    _check_count("epochs", epochs)
    _check_count("batch_size", batch_size)
    _check_positive(lr=lr, patience=patience, checkpoint_every=checkpoint_every, max_grad_norm=max_grad_norm)
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or not weight_decay >= 0:
        raise ValueError(f"weight_decay must be a non-negative number, got {weight_decay!r}")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir")
    runner = make_engine(model, engine_class.name, lr=lr, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
                         **engine_options)
    device = distributed.init_from_env(device) or model.device
    model.to(device)
    train = as_rows(data, model, "data", device, model.dtype)
    valid = as_rows(val, model, "val", device, model.dtype) if val is not None else None
    streamed = [rows.name for rows in (train, valid) if rows is not None and rows.streamed]
    if streamed and type(runner).run is not Engine.run:
        raise ValueError(f"the {runner.name!r} engine needs all its data in memory, but {' and '.join(streamed)} "
                         "is streamed: pass tensors (e.g. torch.from_numpy(np.asarray(array))), or a minibatch "
                         "engine such as engine='svi'")
    if not streamed:  # engines that override run take the tensors themselves
        train, valid = train.batch, valid.batch if isinstance(valid, TensorRows) else None
    if seed is not None:
        pyro.set_rng_seed(seed)
    return runner.run(train, valid, epochs=epochs, batch_size=batch_size, patience=patience, progress=progress,
                      checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume)
