"""Compiled training losses: a trace-based objective recorded once per input signature and replayed.

The loss of a minibatch (model and guide runs, log-densities, the bound) is recorded as a graph of ATen
operators on its first call for each signature (shapes, dtypes and devices of the batch, the data-set size,
training mode; `ppl_dgm.infer.recording`), and replayed afterwards by TorchScript's interpreter, skipping
Pyro's Python message passing. Random draws are operators of the graph, so every replay draws afresh from
the global RNG, in the order the eager loss draws them.

A graph is used in a fit only if, on its first batch, its replay gives the eager loss and gradients on
the same random numbers; otherwise the objective falls back to eager evaluation for good, with a
one-line `reason`. Recorded graphs are kept for the process (`RECORDED`), so a later fit of the same story
with the same shapes (a restart, a grid search) checks and reuses one instead of recording.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch

from ppl_dgm.infer.objectives import Batch, Objective
from ppl_dgm.infer.recording import (
    NotRecordable,
    PythonReplay,
    RecordedGraph,
    Replay,
    cuda_devices,
    first_line,
    named_state,
    record,
)

TOLERANCE = 1e-5
"""Relative difference allowed between the replayed and the eager loss (and, times 10, gradients) on the same
random numbers."""


class RecordedGraphs:
    """The graphs recorded in this process, most recently used last, at most `capacity` of them."""

    capacity = 16

    def __init__(self) -> None:
        self._graphs: OrderedDict[tuple, RecordedGraph] = OrderedDict()

    def get(self, key: tuple) -> RecordedGraph | None:
        graph = self._graphs.get(key)
        if graph is not None:
            self._graphs.move_to_end(key)
        return graph

    def put(self, key: tuple, graph: RecordedGraph) -> None:
        self._graphs[key] = graph
        self._graphs.move_to_end(key)
        while len(self._graphs) > self.capacity:
            self._graphs.popitem(last=False)

    def clear(self) -> None:
        self._graphs.clear()


RECORDED = RecordedGraphs()
"""This process's recorded loss graphs."""


def _objective_key(objective: Objective) -> tuple:
    """What of an objective a recorded graph depends on: its type and settings."""
    return type(objective), tuple(sorted((k, repr(v)) for k, v in vars(objective).items()))


def _state_key(model: torch.nn.Module) -> tuple:
    """What of a model a recorded graph depends on besides its story: the names, shapes, dtypes and devices of
    its parameters and buffers."""
    return type(model), tuple((name, tuple(t.shape), t.dtype, t.device, t.requires_grad)
                              for name, t in named_state(model))


class CompiledObjective:
    """An `Objective` whose training loss is recorded once per batch signature and replayed; validation
    (no gradients) runs eagerly.

    Args:
        objective: the eager objective (`ELBO`, `RenyiELBO`, or any trace-based `Objective`).
    """

    def __init__(self, objective: Objective) -> None:
        self.objective = objective
        self.reason: str | None = None
        """Why the objective fell back to eager evaluation (``None`` while compiled)."""
        self._replays: dict[tuple, Replay | PythonReplay] = {}

    def release(self) -> None:
        """Let the kept graphs drop the model's tensors at the end of a fit (a later call loads them again)."""
        for replay in self._replays.values():
            replay.release()

    def fall_back(self, reason: str) -> None:
        """Evaluate eagerly from now on, warning once with ``reason``."""
        self.release()
        self.reason, self._replays = reason, {}
        warnings.warn(f"compiled step disabled, running eagerly: {reason}", RuntimeWarning, stacklevel=3)

    def loss(self, model: Any, batch: Batch, dataset_size: int) -> torch.Tensor:
        """Negative bound in nats on the whole data set, as ``objective.loss``; ``batch`` holds ``(B, ...)`` tensors."""
        if self.reason is not None or not torch.is_grad_enabled():
            return self.objective.loss(model, batch, dataset_size)
        keys = tuple(sorted(batch))
        tensors = tuple(batch[k] for k in keys)
        signature = (keys, dataset_size, model.training, *((t.shape, t.dtype, t.device) for t in tensors))
        replay = self._replays.get(signature)
        if replay is None:
            with _buffers_restored(model):  # side effects such as step counters then happen once, in this step
                replay = self._checked_replay(model, batch, keys, tensors, signature)
            if replay is None:
                return self.objective.loss(model, batch, dataset_size)
            self._replays[signature] = replay
        try:
            return replay(*tensors)
        except RuntimeError as error:  # a replay the recorded shapes no longer fit
            self.fall_back(f"a replay failed ({first_line(error)})")
            return self.objective.loss(model, batch, dataset_size)

    def _checked_replay(self, model: Any, batch: Batch, keys: tuple[str, ...], tensors: tuple[torch.Tensor, ...],
                        signature: tuple) -> Replay | PythonReplay | None:
        """A replay of the loss for ``signature`` (a kept graph, else a new recording) whose loss and gradients
        equal the eager ones on the same random numbers; ``None`` (after `fall_back`) if there is none. A replay
        that is not returned lets go of the model's tensors, also when the check fails or is interrupted."""
        dataset_size = signature[1]
        key = (_objective_key(self.objective), _state_key(model), signature)
        tried: list[Replay | PythonReplay] = []
        chosen = None
        try:
            kept = RECORDED.get(key)
            replay = kept.bind(model, tensors) if kept is not None else None
            if replay is not None:
                tried.append(replay)
                if self._disagreement(model, batch, tensors, dataset_size, replay) is None:
                    chosen = replay
                    return chosen
            try:
                with torch.random.fork_rng(devices=cuda_devices(tensors)):  # a fit draws the same numbers either way
                    recorded = record(self.objective, model, keys, tensors, dataset_size)
            except NotRecordable as error:
                self.fall_back(str(error))
                return None
            replay = recorded.bind(model, tensors)
            tried.append(replay)
            disagreement = self._disagreement(model, batch, tensors, dataset_size, replay)
            if disagreement is not None:
                self.fall_back(f"{disagreement} on the same random numbers: the story does something a recorded "
                               "graph cannot repeat (data-dependent control flow, Python side effects, or a custom "
                               "autograd.Function's backward)")
                return None
            if recorded.shareable:
                RECORDED.put(key, recorded)
            chosen = replay
            return chosen
        finally:
            for replay in tried:
                if replay is not chosen:
                    replay.release()

    def _disagreement(self, model: Any, batch: Batch, tensors: tuple[torch.Tensor, ...], dataset_size: int,
                      replay: Replay | PythonReplay) -> str | None:
        """``None`` if ``replay`` gives the eager loss and gradients on the same random numbers, else what differs."""
        params = [p for p in model.parameters() if p.requires_grad]
        devices = cuda_devices(tensors)
        with torch.random.fork_rng(devices=devices):
            seed = int(torch.randint(2**31, ()))
        results = []
        for replayed in (True, False):
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                if replayed:
                    try:
                        loss = replay(*tensors)
                    except RuntimeError as error:
                        return f"the replay failed ({first_line(error)})"
                else:
                    loss = self.objective.loss(model, batch, dataset_size)
                grads = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
            results.append((loss.detach(), grads))
        (replayed_loss, replayed_grads), (eager_loss, eager_grads) = results
        if not torch.allclose(replayed_loss, eager_loss, rtol=TOLERANCE, atol=TOLERANCE):
            return f"the recorded loss {float(replayed_loss):.6g} differs from the eager loss {float(eager_loss):.6g}"
        for a, b in zip(replayed_grads, eager_grads, strict=True):
            scale = float(b.abs().max()) if b.numel() else 0.0
            if not torch.allclose(a, b, rtol=10 * TOLERANCE, atol=10 * TOLERANCE * scale):
                return "the recorded loss's gradient differs from the eager one"
        return None


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
