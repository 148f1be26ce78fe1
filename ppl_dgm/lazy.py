"""Parameters created on first use: ``pyro.param`` in a story, autoguides, data-dependent setup.

A story's ``pyro.param`` statements and a Pyro autoguide's parameters do not exist until the story
first runs. `initialize_parameters` runs it once on a batch, so that an optimizer sees them; the
batch is kept with the model (``prototype_batch``) when it created any, so that a saved model is
rebuilt by running the story once on it before its weights are loaded (`load_lazy_state`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine.trace_struct import Trace
from torch import nn

from ppl_dgm.sites import DATA, X, context_of

PYRO_PARAMS = "pyro_params"
"""Submodule holding the unconstrained values of a story's ``pyro.param`` statements."""
PROTOTYPE = "prototype_batch"
"""Submodule holding the batch whose first run created the lazy parameters."""


def in_module_scope(method: Callable) -> Callable:
    """Wrap a story's ``model``/``guide`` method so that it runs inside its module's Pyro context.

    Inside it, ``pyro.param`` statements read and write the model's own parameter store (never the
    global one), and the parameters a run created become ``nn.Parameter`` s of the model afterwards.
    """
    if getattr(method, "_in_module_scope", False):
        return method

    @functools.wraps(method)
    def scoped(self: Any, *args: Any, **kwargs: Any) -> Any:
        context = self._pyro_context
        outermost = not context.active
        with context:
            result = method(self, *args, **kwargs)
        if outermost:
            adopt_pyro_params(self)
        return result

    scoped._in_module_scope = True  # type: ignore[attr-defined]
    return scoped


def _key(name: str) -> str:
    """A ``pyro.param`` name as a submodule-safe key (no dots)."""
    return name.replace(".", "__")


def adopt_pyro_params(module: nn.Module) -> None:
    """Make every unconstrained ``pyro.param`` value in the module's store an ``nn.Parameter`` of it."""
    state = module._pyro_context.param_state["params"]
    if not state:
        return
    if PYRO_PARAMS not in module._modules:
        module.add_module(PYRO_PARAMS, nn.ParameterDict())
    owned = module._modules[PYRO_PARAMS]
    for name, value in state.items():
        key = _key(name)
        if key in owned and owned[key] is value:
            continue
        parameter = value if isinstance(value, nn.Parameter) else nn.Parameter(value.detach())
        state[name] = parameter
        owned[key] = parameter


@torch.no_grad()
def trace_story(model: Any, batch: Mapping[str, torch.Tensor], use_guide: bool = True) -> tuple[Trace | None, Trace]:
    """Traces of one run on ``batch``: the guide, then the model replayed against it (``use_guide=False``:
    no guide, the model alone with every latent from its prior). Creates lazy parameters on a first run.

    Returns ``(guide_trace or None, model_trace)``.

    Raises:
        ValueError: the model does not observe the data at site ``"x"``.
    """
    context = context_of(batch)
    with pyro.validation_enabled(False):
        guide_trace = poutine.trace(model.guide).get_trace(batch[X], **context) if use_guide else None
        story = poutine.replay(model.model, trace=guide_trace) if use_guide else model.model
        trace = poutine.trace(story).get_trace(batch[X], **context)
    if X not in trace.nodes or not trace.nodes[X]["is_observed"]:
        raise ValueError(f"{type(model).__name__}'s model does not observe the data: it has no observed site {X!r}; "
                         f"it needs pyro.sample({X!r}, ..., obs=x) inside pyro.plate({DATA!r}, N) (for ppl_dgm.story: "
                         "pass observed= and plate= with the names your function uses)")
    return guide_trace, trace


def initialize_parameters(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[Trace, Trace]:
    """Create the parameters a story makes on first use by running it once on ``batch``; returns the
    traces of that run (guide, model).

    When the model has such parameters (an autoguide, ``pyro.param`` statements), ``batch`` is kept
    as buffers of a ``prototype_batch`` submodule, so that a checkpoint carries what is needed to
    create them again before loading their values.
    """
    traces = trace_story(model, batch)
    if _has_first_use_parameters(model):
        _keep_prototype(model, batch)
    return traces


def _keep_prototype(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> None:
    """Keep ``batch`` as the ``prototype_batch`` buffers, unless the model has one already."""
    if PROTOTYPE in model._modules:
        return
    prototype = nn.Module()
    for name, value in batch.items():
        prototype.register_buffer(name, value.detach().clone())
    model.add_module(PROTOTYPE, prototype)


def trim_prototype(model: nn.Module, rows: int = 1) -> None:
    """Keep only the first ``rows`` examples of the prototype batch (enough for guides whose parameters
    do not depend on the number of examples), so a checkpoint does not carry training data needlessly."""
    prototype = model._modules.get(PROTOTYPE)
    if prototype is None or PYRO_PARAMS in model._modules:  # a pyro.param's shape may follow the batch
        return
    for name, value in list(prototype.named_buffers()):
        setattr(prototype, name, value[:rows].clone())


def _has_first_use_parameters(model: nn.Module, created: bool = False) -> bool:
    """Whether the model holds parameters that only a run of the story creates (with ``created``:
    that a run already created). Guides whose parameters load by key (``parameters_load_by_key``)
    do not count."""
    from pyro.infer.autoguide import AutoGuide

    guides = [m for m in model.modules()
              if isinstance(m, AutoGuide) and not getattr(m, "parameters_load_by_key", False)]
    if created:
        guides = [g for g in guides if g.prototype_trace is not None]
    return PYRO_PARAMS in model._modules or bool(guides)


def check_recreatable(model: nn.Module) -> None:
    """``ValueError`` when a checkpoint of ``model`` could not create its first-use parameters again
    (they exist, but no prototype batch was kept: the story ran outside `fit`/`initialize_parameters`)."""
    if _has_first_use_parameters(model, created=True) and PROTOTYPE not in model._modules:
        raise ValueError(f"{type(model).__name__} has parameters that only a run of the story creates (an autoguide, "
                         "pyro.param), but no batch to create them from; fit it, or call "
                         "ppl_dgm.lazy.initialize_parameters(model, batch) once, before saving")


def _allocate(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Create the missing leaves of ``state_dict`` whose owner module exists, with the saved values
    (entries of a ``ParameterDict`` as parameters, everything else as buffers)."""
    for key, value in state_dict.items():
        owner_name, _, name = key.rpartition(".")
        try:
            owner = model.get_submodule(owner_name) if owner_name else model
        except AttributeError:
            continue
        if name in owner._parameters or name in owner._buffers or hasattr(owner, name):
            continue
        if isinstance(owner, nn.ParameterDict):
            owner[name] = nn.Parameter(value.detach().clone())
        else:
            owner.register_buffer(name, value.detach().clone())


def load_lazy_state(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Before ``load_state_dict``: create the tensors that fit or first use created.

    Tensors made by ``setup`` are allocated from their saved values; when the checkpoint holds a
    prototype batch, the story runs once on it to create autoguide and ``pyro.param`` parameters.
    """
    prefix = PROTOTYPE + "."
    prototype = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    rest = {k: v for k, v in state_dict.items() if not k.startswith(prefix) and not k.startswith(PYRO_PARAMS + ".")}
    _allocate(model, rest)
    if prototype and PROTOTYPE not in model._modules:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        batch = {k: v.to(device) for k, v in prototype.items()}
        initialize_parameters(model, batch)
        _keep_prototype(model, batch)  # even where the run created nothing new: the keys must load
    _allocate(model, rest)
