"""Recording a training loss as a graph of ATen operators that any model with the same parameters can replay.

`record` runs ``objective.loss`` once under ``make_fx`` (pre-dispatch, so ``torch.no_grad`` blocks are kept)
and cleans the graph (`ppl_dgm.infer.graph_cleanup`); a story that turns a tensor into a Python value
(data-dependent control flow, which a graph would freeze) is refused with the line that did it. A
`RecordedGraph` names the model's parameters and buffers it reads by their qualified names, so `bind` gives a
replay for any model that has them: TorchScript's interpreter runs the operators with no Python in between,
holding one model's tensors at a time.
"""

from __future__ import annotations

import contextlib
import operator
import os
import threading
import traceback
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import pyro
import torch
from torch import fx
from torch.fx.experimental.proxy_tensor import make_fx
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from ppl_dgm import traces
from ppl_dgm.infer.graph_cleanup import clean
from ppl_dgm.infer.objectives import Objective

_TORCH = os.path.dirname(torch.__file__) + os.sep
_TRUSTED = (os.path.dirname(pyro.__file__) + os.sep, traces.__file__)
"""Code whose tensor-to-Python conversions are argument checks or shapes (fixed by the signature), not control flow."""
_CONVERSIONS = (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.equal.default)
"""ATen operators that turn a tensor into a Python value."""
_TO_PYTHON = (torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.__array__)
"""Tensor methods that read a tensor's values into Python without an ATen operator."""


def first_line(error: BaseException) -> str:
    """``"Type: first line of the message"`` (some errors have an empty message)."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _story_frame(frames: list[traceback.FrameSummary], skip_trusted: bool) -> str | None:
    """``file:line`` of the innermost frame outside PyTorch (and, with ``skip_trusted``, outside Pyro and
    `ppl_dgm.traces` too: ``None`` if the innermost frame outside PyTorch is theirs)."""
    for frame in reversed(frames):
        if frame.filename.startswith(_TORCH) or frame.filename == __file__:
            continue
        if frame.filename.startswith(_TRUSTED):
            if skip_trusted:
                return None
            continue
        return f"{os.path.basename(frame.filename)}:{frame.lineno}"
    return None


class _DataDependence:
    """While a loss is recorded: the first place where the story read the data's values into Python (``int(buffer)``,
    ``if x.sum() > 0``, ``x.tolist()``) or made a tensor whose size depends on them (``x[x > 0]``, ``nonzero``), which a
    recorded graph would freeze. Watches both the ATen operators and the tensor methods that bypass them."""

    def __init__(self) -> None:
        self.found: str | None = None
        """``"what at file:line"``, or ``None``."""
        watch = self

        class Operators(TorchDispatchMode):
            def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
                watch.check(_dependence(func, args))
                return func(*args, **(kwargs or {}))

        class Methods(TorchFunctionMode):
            def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
                if func in _TO_PYTHON:
                    watch.check("control flow")
                return func(*args, **(kwargs or {}))

        self.modes = (Operators(), Methods())

    def check(self, what: str | None) -> None:
        """Note ``what`` (a kind of data dependence) at the story's line, unless PyTorch or Pyro's code did it."""
        if what is not None and self.found is None:
            where = _story_frame(traceback.extract_stack(), skip_trusted=True)
            if where is not None:
                self.found = f"data-dependent {what} at {where}"

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        with self.modes[0], self.modes[1]:
            yield


def _dependence(func: Any, args: tuple) -> str | None:
    """What kind of data dependence an ATen call makes, or ``None``."""
    if func in _CONVERSIONS:
        return "control flow"
    if func is torch.ops.aten.index.Tensor:  # integer indices are fine, boolean masks select a data-dependent size
        masked = any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1])
        return "shape" if masked else None
    return "shape" if torch.Tag.dynamic_output_shape in getattr(func, "tags", ()) else None


class NotRecordable(Exception):
    """A loss that cannot be recorded as a graph; the message is the reason, in one line."""


class RecordedGraph:
    """A loss graph independent of any one model instance, replayed with one model's tensors at a time.

    Args:
        graph: the cleaned graph; its ``get_attr`` nodes name tensors of ``constants`` or of ``state``.
        constants: tensors the story created (literals), shared by every model.
        state: attribute name -> the model's parameter or buffer (qualified name) it stands for.
    """

    def __init__(self, graph: fx.Graph, constants: dict[str, torch.Tensor], state: dict[str, str]) -> None:
        self.graph, self.constants, self.state = graph, constants, state
        self.shareable = all(all(user.target is torch.ops.aten.lift_fresh_copy.default for user in node.users)
                             for node in graph.nodes if node.op == "get_attr" and node.target in constants)
        """Whether every constant is a literal the story wrote (``torch.tensor(...)``, copied before use). A graph
        that reads some other tensor (a plain tensor attribute of the model, ``param.data``) is not kept for later
        models: they would read this model's tensor."""
        self.interpretable = all(node.op != "call_function" or node.target is operator.getitem
                                 or isinstance(node.target, torch._ops.OpOverload) for node in graph.nodes)
        """Whether TorchScript can run the graph: ATen operators only (no grad-mode switches)."""
        self.script: torch.jit.ScriptModule | None = None
        self.lock = threading.Lock()
        self.bound: weakref.ref | None = None
        """The `Replay` whose model's tensors `script` holds now."""

    def bind(self, model: torch.nn.Module, tensors: tuple[torch.Tensor, ...]) -> Replay | PythonReplay | None:
        """The replay function for ``model``'s own parameters and buffers (``None`` if it lacks one of them), for
        batches like ``tensors``. May run the graph once (random draws and buffer writes included)."""
        own = dict(named_state(model))
        if not all(name in own for name in self.state.values()):
            return None
        tensors_of_model = {attr: own[name] for attr, name in self.state.items()}
        if self.interpretable and self.script is None:
            # TorchScript runs the operators without Python in between (about 2 us less per operator); its tracer
            # is deprecated, so where it is gone or fails, the graph is replayed by Python
            try:
                with warnings.catch_warnings(), torch.random.fork_rng(devices=cuda_devices(tensors)):
                    warnings.simplefilter("ignore", torch.jit.TracerWarning)
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self.script = torch.jit.trace(self._module(tensors_of_model), tensors, check_trace=False)
            except Exception:  # noqa: BLE001 - any failure of the interpreter leaves the (slower) Python replay
                self.interpretable = False
        if not self.interpretable:
            return PythonReplay(self._module(tensors_of_model))
        return Replay(self, tensors_of_model)  # its first call loads the model's tensors into `script`

    def _module(self, tensors_of_model: dict[str, torch.Tensor]) -> fx.GraphModule:
        """The graph as a module holding the constants and ``tensors_of_model`` (parameters stay parameters)."""
        root = torch.nn.Module()
        for attr, tensor in [*self.constants.items(), *tensors_of_model.items()]:
            if isinstance(tensor, torch.nn.Parameter):
                root.register_parameter(attr, tensor)
            else:
                root.register_buffer(attr, tensor)
        module = fx.GraphModule(root, self.graph)
        self.graph.owning_module = None  # the graph, shared by every model, refers to no model's module
        return module

    def load(self, replay: Replay) -> None:
        """Put ``replay``'s model's tensors into `script`."""
        for attr, tensor in replay.tensors_of_model.items():
            setattr(self.script, attr, tensor)
        self.bound = weakref.ref(replay)

    def unload(self, replay: Replay) -> None:
        """If `script` holds ``replay``'s model's tensors, swap them for empty ones (on the meta device), so that a
        kept graph keeps no model alive."""
        with self.lock:
            if self.bound is not None and self.bound() in (replay, None):  # None: a replay that is gone already
                self._empty()

    def _empty(self) -> None:
        for attr in self.state:
            tensor = getattr(self.script, attr)
            empty = torch.empty_like(tensor, device="meta")
            setattr(self.script, attr, torch.nn.Parameter(empty, tensor.requires_grad)
                    if isinstance(tensor, torch.nn.Parameter) else empty)
        self.bound = None


class PythonReplay:
    """A graph replayed by Python, operator by operator: for graphs that switch grad mode, or without TorchScript.
    Grad mode is put back afterwards, also when a replay fails inside a recorded ``torch.no_grad`` block."""

    def __init__(self, module: fx.GraphModule) -> None:
        self.module = module

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled()):
            return self.module.forward(*tensors)

    def release(self) -> None:
        """Nothing to let go of: the module is this replay's own."""


class Replay:
    """A kept graph replayed on one model's tensors by TorchScript's interpreter, without its graph optimizations
    (so that autograd records the same operators as the eager loss)."""

    def __init__(self, recorded: RecordedGraph, tensors_of_model: dict[str, torch.Tensor]) -> None:
        self.recorded, self.tensors_of_model = recorded, tensors_of_model

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        recorded = self.recorded
        with recorded.lock:  # one model's tensors in the script from loading to the end of the forward pass
            if recorded.bound is None or recorded.bound() is not self:  # another model's fit used the graph meanwhile
                recorded.load(self)
            with torch.jit.optimized_execution(False):
                return recorded.script(*tensors)

    def release(self) -> None:
        """Let the kept graph drop this model's tensors (a later call loads them again)."""
        self.recorded.unload(self)


def cuda_devices(tensors: tuple[torch.Tensor, ...]) -> list[torch.device]:
    """The CUDA devices of ``tensors`` (whose random states a forked RNG must save too)."""
    return [t.device for t in tensors if t.device.type == "cuda"]


def named_state(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The model's parameters and buffers by qualified name (shared ones under every name)."""
    yield from model.named_parameters(remove_duplicate=False)
    yield from model.named_buffers(remove_duplicate=False)


def record(objective: Objective, model: torch.nn.Module, keys: tuple[str, ...], tensors: tuple[torch.Tensor, ...],
           dataset_size: int) -> RecordedGraph:
    """Record ``objective.loss`` on the batch ``tensors`` (by ``keys``) as a cleaned graph (runs the story once).

    Raises:
        NotRecordable: the story turns a tensor into a Python value (data-dependent control flow), or an
            operation cannot be recorded.
    """
    dependence = _DataDependence()

    def watched(*batch: torch.Tensor) -> torch.Tensor:
        with dependence.watching():
            return objective.loss(model, dict(zip(keys, batch, strict=True)), dataset_size)

    try:
        with pyro.validation_enabled(False):
            module = make_fx(watched, pre_dispatch=True)(*tensors)
        if dependence.found is None:
            clean(module)
    except Exception as error:  # noqa: BLE001 - any story the tracer cannot record runs eagerly
        if "value out of a tracing tensor" in str(error):  # make_fx refuses to turn a traced tensor into a number
            where = _story_frame(traceback.extract_tb(error.__traceback__), skip_trusted=False)
            raise NotRecordable(f"data-dependent control flow at {where} (a tensor turned into a Python value)"
                                ) from None
        raise NotRecordable(f"the loss could not be recorded ({first_line(error)})") from None
    if dependence.found is not None:
        raise NotRecordable(f"{dependence.found} (a recorded graph would freeze it)")
    names = {id(tensor): name for name, tensor in named_state(model)}
    constants, state = {}, {}
    for node in module.graph.nodes:
        if node.op == "get_attr":
            tensor = getattr(module, node.target)
            if id(tensor) in names:
                state[node.target] = names[id(tensor)]
            else:
                constants[node.target] = tensor
        node.meta = {}  # the example values were for the clean-up; a kept graph holds no tensors of this run
    module.graph.set_codegen(fx.graph.CodeGen())  # plain positional arguments, no pytree flattening per call
    module.graph.owning_module = None  # nor to the recording's module, which holds this model's tensors
    return RecordedGraph(module.graph, constants, state)
