"""Compiled training losses: a trace-based objective traced once per input signature and replayed.

The loss of a minibatch (model and guide runs, log-densities, the bound) is recorded with
``torch.jit.trace`` on its first call for each signature (shapes, dtypes and devices of the batch,
the data-set size) and replayed afterwards, skipping Pyro's Python message passing. Random draws
are recorded as operators (``aten::normal`` etc.), so every replay draws afresh from the global RNG,
as Pyro's ``JitTrace_ELBO`` does. A trace is kept only if, on the first batch, its replay gives the
same loss as the eager run on the same random numbers; otherwise the objective falls back to eager
evaluation for good, with a one-line `reason`.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import Any

import pyro
import torch

from ppl_dgm import traces
from ppl_dgm.infer.objectives import Batch, Objective

TOLERANCE = 1e-5
"""Relative difference allowed between the replayed and the eager loss on the same random numbers."""


_TRUSTED = (*(os.path.dirname(module.__file__) + os.sep for module in (torch, pyro)), traces.__file__)
"""Code whose tensor-to-Python conversions are argument checks or shapes (fixed by the signature), not control flow."""


def _control_flow(records: list[warnings.WarningMessage]) -> str | None:
    """``file:line`` of the first tensor-to-Python conversion (data-dependent control flow) the tracer saw outside
    `_TRUSTED` code, or ``None``."""
    for record in records:
        if issubclass(record.category, torch.jit.TracerWarning) and "Converting a tensor to a Python" in str(
                record.message) and not record.filename.startswith(_TRUSTED):
            return f"{os.path.basename(record.filename)}:{record.lineno}"
    return None


def _first_line(error: BaseException) -> str:
    """``"Type: first line of the message"`` (some errors have an empty message)."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


class _Loss(torch.nn.Module):
    """``objective.loss`` as a module of the batch tensors, so that tracing sees the model's parameters."""

    def __init__(self, objective: Objective, model: torch.nn.Module, keys: tuple[str, ...], dataset_size: int) -> None:
        super().__init__()
        self.objective, self.model, self.keys, self.dataset_size = objective, model, keys, dataset_size

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.objective.loss(self.model, dict(zip(self.keys, tensors, strict=True)), self.dataset_size)


class CompiledObjective:
    """An `Objective` whose training loss is traced once per batch signature and replayed; validation
    (no gradients) runs eagerly.

    Args:
        objective: the eager objective (`ELBO`, `RenyiELBO`, or any trace-based `Objective`).
    """

    def __init__(self, objective: Objective) -> None:
        self.objective = objective
        self.reason: str | None = None
        """Why the objective fell back to eager evaluation (``None`` while compiled)."""
        self._traced: dict[tuple, torch.jit.ScriptModule] = {}

    def fall_back(self, reason: str) -> None:
        """Evaluate eagerly from now on, warning once with ``reason``."""
        self.reason, self._traced = reason, {}
        warnings.warn(f"compiled step disabled, running eagerly: {reason}", RuntimeWarning, stacklevel=3)

    def loss(self, model: Any, batch: Batch, dataset_size: int) -> torch.Tensor:
        """Negative bound in nats on the whole data set, as ``objective.loss``; ``batch`` holds ``(B, ...)`` tensors."""
        if self.reason is not None or not torch.is_grad_enabled():
            return self.objective.loss(model, batch, dataset_size)
        keys = tuple(sorted(batch))
        tensors = tuple(batch[k] for k in keys)
        signature = (keys, dataset_size, model.training, *((t.shape, t.dtype, t.device) for t in tensors))
        traced = self._traced.get(signature)
        if traced is None:
            with _buffers_restored(model):  # side effects such as step counters then happen once, in this step
                traced = self._checked_trace(model, batch, keys, tensors, dataset_size)
            if traced is None:
                return self.objective.loss(model, batch, dataset_size)
            self._traced[signature] = traced
        try:
            return traced(*tensors)
        except RuntimeError as error:  # a replay the recorded shapes no longer fit
            self.fall_back(f"a replay failed ({_first_line(error)})")
            return self.objective.loss(model, batch, dataset_size)

    def _checked_trace(self, model: Any, batch: Batch, keys: tuple[str, ...], tensors: tuple[torch.Tensor, ...],
                       dataset_size: int) -> torch.jit.ScriptModule | None:
        """The loss traced for the signature of ``batch`` (``tensors``, by ``keys``) if its replay gives the eager
        loss on the same random numbers, else ``None`` (after `fall_back` with the reason)."""
        module = _Loss(self.objective, model, keys, dataset_size)
        devices = [t.device for t in tensors if t.device.type == "cuda"]
        try:
            with torch.random.fork_rng(devices=devices):
                seed = int(torch.randint(2**31, ()))
                with warnings.catch_warnings(record=True) as records:
                    warnings.simplefilter("always")
                    traced = torch.jit.trace(module, tensors, check_trace=False)
                torch.manual_seed(seed)
                replayed = traced(*tensors).detach()
        except Exception as error:  # noqa: BLE001 - any story the tracer cannot record runs eagerly
            self.fall_back(f"the loss could not be traced ({_first_line(error)})")
            return None
        where = _control_flow(records)
        if where is not None:
            self.fall_back(f"data-dependent control flow at {where} (a tensor turned into a Python value)")
            return None
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            eager = self.objective.loss(model, batch, dataset_size).detach()
        if not torch.allclose(replayed, eager, rtol=TOLERANCE, atol=TOLERANCE):
            self.fall_back(f"the traced loss {float(replayed):.6g} differs from the eager loss {float(eager):.6g} on "
                           "the same random numbers (data-dependent control flow, enumeration or Python side effects)")
            return None
        return traced


@contextlib.contextmanager
def _buffers_restored(model: torch.nn.Module) -> Iterator[None]:
    """Run a block, then put the model's buffers (step counters, running statistics) back as they were."""
    saved = {name: buffer.detach().clone() for name, buffer in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                if name in saved and saved[name].shape == buffer.shape:
                    buffer.copy_(saved[name])
