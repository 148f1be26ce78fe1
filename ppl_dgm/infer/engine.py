"""Fitting engines: the interface every engine implements, and the registry that names them.

A model names the engine that fits it (``default_engine``); ``ppl_dgm.fit`` looks the name up
here and hands the engine to the one training loop (`ppl_dgm.infer.loop`), which owns
minibatching, progress, early stopping, checkpoints and resuming. An engine owns only what is
particular to it: its optimizers, one update step, its validation figure, and an opaque state
(``state_dict``) that checkpoints store as is.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch

from ppl_dgm.infer import distributed

if TYPE_CHECKING:
    from ppl_dgm.core import GenerativeModel
    from ppl_dgm.infer.loop import FitResult


class NonFiniteLossError(FloatingPointError):
    """Raised when a training loss or gradient is NaN/inf; the model keeps its last good parameters."""


class Engine:
    """One way of fitting a model, driven by the shared loop over shuffled minibatches.

    Subclasses take their own options as keyword-only constructor arguments (validated there,
    with a ``ValueError`` that names the option); ``fit`` passes them through by name.

    Args:
        model: the model to fit (in place).
        lr: learning rate of the engine's optimizer(s).
        weight_decay: decoupled weight decay (AdamW-style) where the engine's optimizer has it.
        max_grad_norm: clip each update's total gradient norm to this (``None``: no clipping).
    """

    name: ClassVar[str]
    """The registered name (set by `register_engine`)."""
    minibatches: ClassVar[bool] = True
    """Whether the engine runs in the shared minibatch loop (an EM engine fits in one call)."""
    unit: ClassVar[str] = ""
    """Unit of the training loss (the first figure of `step`)."""
    validation_unit: ClassVar[str | None] = None
    """Unit of the validation figure, where it differs from `unit`."""
    rank_weight: float = 1.0
    """Under ``torchrun``: this rank's share ``b_r / B`` of the current global batch (set by the loop before
    each `step`); `update` weights the rank's gradient by it before summing over ranks."""

    def __init__(self, model: GenerativeModel, *, lr: float = 1e-3, weight_decay: float = 0.0,
                 max_grad_norm: float | None = None) -> None:
        self.model = model
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_grad_norm = max_grad_norm

    def dequantizes(self, train: dict[str, torch.Tensor]) -> bool:
        """Whether the loop should add ``U[0, 1)`` noise to ``x`` in every training and validation
        batch (default: no). Called once, before `prepare`."""
        return False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        missing = [name for name in ("prepare", "step") if getattr(cls, name) is getattr(Engine, name)]
        if cls.minibatches and missing:
            raise TypeError(f"{cls.__name__} runs in the minibatch loop and must define {' and '.join(missing)}")

    def prepare(self, first_batch: dict[str, torch.Tensor]) -> None:
        """(Every minibatch engine defines it.) Build the optimizers (and anything else that needs the
        model's final parameters), after ``model.setup`` ran on the training data. ``first_batch`` is a
        training minibatch (already dequantized when `dequantizes` said so), e.g. to create lazily built
        parameters."""

    def step(self, batch: dict[str, torch.Tensor], dataset_size: int) -> dict[str, float]:
        """(Every minibatch engine defines it.) One update on a minibatch; returns this step's named
        figures (plain floats). The first entry is the training loss the loop reports and records as
        ``train_loss``; every entry is averaged over the epoch into ``FitResult.history``. Use `update`
        for each optimizer step so that non-finite values and gradient clipping are handled the same
        way everywhere."""

    def finish(self) -> None:
        """Called by the loop when the fit ends (also when it fails): release what the engine needs only while
        fitting (default: nothing)."""

    def shuffles(self, dataset_size: int, batch_size: int, validating: bool) -> bool:
        """Whether the loop shuffles the rows each epoch (default yes); called after `prepare`. An engine
        that needs every row in order (a guide with per-example parameters) says no, or raises a
        ``ValueError`` when the settings cannot work."""
        return True

    def validation_loss(self, batch: dict[str, torch.Tensor]) -> float | None:
        """The early-stopping figure on validation data (lower is better), computed in evaluation
        mode without gradients; ``None`` when the engine has none (then no early stopping, and the
        last epoch's weights are kept)."""
        return None

    def model_state(self) -> dict[str, torch.Tensor]:
        """The weights a checkpoint (and the best-epoch snapshot) should hold; default the model's own.
        An engine that averages weights (EMA) returns the averaged ones."""
        return self.model.state_dict()

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed fit needs besides the model's weights (optimizer states, an EMA copy, a
        replay buffer, counters): nested dicts/lists of tensors, numbers, strings, bools and None.
        Checkpoints store it as is."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (the default state is empty: nothing to restore)."""
        if state:
            raise ValueError(f"the {self.name!r} engine keeps no state, but was given {sorted(state)}")

    def update(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
               params: Iterable[torch.Tensor] | None = None, what: str = "loss") -> float:
        """Backpropagate ``loss`` and take one ``optimizer`` step; returns the loss as a float.

        Raises:
            NonFiniteLossError: the loss or its gradient is NaN/inf; no step is taken, so the
                parameters stay those of the last good step.
        """
        params = list(params) if params is not None else [p for g in optimizer.param_groups for p in g["params"]]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if distributed.active():  # every rank steps on the gradient of the global batch (see infer.distributed)
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            local = loss.detach()
            loss = distributed.reduce_gradients(local, [p.grad for p in params], self.rank_weight)
        grads = [p.grad for p in params if p.grad is not None]
        # the loss and its gradients' norms (dtypes promoted), read with one device sync
        value, *grad_norms = torch.stack([loss.detach(), *(torch._foreach_norm(grads) if grads else ())]).tolist()
        if not all(map(math.isfinite, (value, *grad_norms))):
            optimizer.zero_grad(set_to_none=True)
            kind = f"{what} gradient" if math.isfinite(value) else what
            raise NonFiniteLossError(f"non-finite {kind}")
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
        optimizer.step()
        return float(local) if distributed.active() else value

    def run(self, train: dict[str, torch.Tensor], val: dict[str, torch.Tensor] | None, **loop: Any) -> FitResult:
        """Fit on ``train`` (validating on ``val``) with the shared loop; ``loop`` holds its settings
        (epochs, batch_size, patience, progress, checkpoint_dir, checkpoint_every, resume).
        Engines that do not iterate over minibatches (EM) override this."""
        from ppl_dgm.infer.loop import run_loop

        return run_loop(self, train, val, **loop)


BUILTIN_ENGINES: dict[str, str] = {
    "svi": "ppl_dgm.infer.svi:SVIEngine",
    "em": "ppl_dgm.infer.em:EMEngine",
    "adversarial": "ppl_dgm.infer.adversarial:AdversarialEngine",
    "denoising": "ppl_dgm.infer.denoising:DenoisingEngine",
    "contrastive": "ppl_dgm.infer.contrastive:ContrastiveEngine",
    "vqvae": "ppl_dgm.models.vae.vqvae_engine:VQVAEEngine",
}
"""Engine name -> ``"module:Class"``, imported on first use."""

_USER_ENGINES: dict[str, type[Engine]] = {}
E = TypeVar("E", bound=type)


def register_engine(name: str) -> Callable[[E], E]:
    """Class decorator: make an `Engine` subclass available to ``ppl_dgm.fit(..., engine=name)``,
    to models' ``default_engine`` and to ``ppl-dgm fit --engine``."""

    def add(cls: E) -> E:
        if not (isinstance(cls, type) and issubclass(cls, Engine)):
            raise TypeError(f"register_engine needs an Engine subclass, got {cls!r}")
        key = name.lower()
        builtin = BUILTIN_ENGINES.get(key)
        if builtin is not None and builtin != f"{cls.__module__}:{cls.__qualname__}":
            raise ValueError(f"the engine name {key!r} belongs to {builtin}; register {cls.__name__} under another "
                             "name")
        if builtin is None:
            _USER_ENGINES[key] = cls
        cls.name = key
        return cls

    return add


def list_engines() -> list[str]:
    """Names of the registered engines, sorted."""
    return sorted({*BUILTIN_ENGINES, *_USER_ENGINES})


def get_engine_class(name: str) -> type[Engine]:
    """The engine registered as ``name`` (case-insensitive); ``ValueError`` naming the known ones if unknown."""
    if not isinstance(name, str):
        raise TypeError(f"engine must be a name (one of {', '.join(list_engines())}), got {type(name).__name__}")
    key = name.lower()
    if key in _USER_ENGINES:
        return _USER_ENGINES[key]
    if key not in BUILTIN_ENGINES:
        raise ValueError(f"unknown engine {name!r}; known engines: {', '.join(list_engines())}")
    module, _, qualname = BUILTIN_ENGINES[key].partition(":")
    return getattr(importlib.import_module(module), qualname)
