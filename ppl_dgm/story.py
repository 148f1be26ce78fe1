"""`story`: a plain Pyro model function (and guide) from existing code, as a `GenerativeModel`."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Mapping
from typing import Any

import pyro.infer.autoguide as autoguides
from pyro.poutine.messenger import Messenger

from ppl_dgm.core import Capabilities, GenerativeModel
from ppl_dgm.sites import DATA, X


class _Rename(Messenger):
    """Inside the wrapped function: the observed site is called ``"x"`` and the data plate ``"data"``."""

    def __init__(self, observed: str, plate: str) -> None:
        super().__init__()
        self.observed, self.plate = observed, plate

    def _process_message(self, msg: dict) -> None:
        if msg["type"] != "sample":
            return
        if msg["name"] == self.observed:
            msg["name"] = X
        msg["cond_indep_stack"] = tuple(frame._replace(name=DATA) if frame.name == self.plate else frame
                                        for frame in msg["cond_indep_stack"])


def _reference(obj: Callable | str | None) -> str | None:
    """A JSON-friendly ``"module:qualname"`` for a module-level function (what a checkpoint records)."""
    if obj is None or isinstance(obj, str):
        return obj
    if not inspect.isfunction(obj) or "<" in obj.__qualname__:
        return None
    return f"{obj.__module__}:{obj.__qualname__}"


def _resolve(reference: Callable | str, what: str) -> Callable:
    """The callable behind ``"module:qualname"``, from a module already imported (nothing is imported)."""
    if callable(reference):
        return reference
    module_name, sep, qualname = reference.partition(":")
    module = sys.modules.get(module_name)
    if not sep or module is None:
        raise ValueError(f"{what} {reference!r} is not 'module:function' of an imported module; import the module "
                         "that defines it first, or pass the function itself")
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if not callable(obj):
        raise ValueError(f"{what} {reference!r} names nothing callable")
    return obj


def _data_argument(fn: Callable, data_arg: str | None, taken: set[str]) -> str:
    """The parameter of ``fn`` that receives the observations: ``data_arg``, else the one parameter
    defaulting to ``None``, else the only parameter (parameters in ``taken`` aside)."""
    parameters = {name: p for name, p in inspect.signature(fn).parameters.items() if name not in taken}
    if data_arg is not None:
        if data_arg not in parameters:
            raise ValueError(f"{fn.__name__} has no parameter {data_arg!r} (it has {', '.join(parameters)})")
        return data_arg
    optional = [name for name, p in parameters.items() if p.default is None]
    if len(optional) == 1:
        return optional[0]
    if len(parameters) == 1:
        return next(iter(parameters))
    raise ValueError(f"cannot tell which parameter of {fn.__name__}({', '.join(parameters)}) takes the data; "
                     "pass data_arg='NAME'")


class Story(GenerativeModel):
    """A Pyro model function (and guide) whose observed site and data plate carry their own names.

    Built by `story`. ``model(x=None, n=None, **ctx)`` calls ``model_fn`` with ``x`` as its data
    argument, the number of examples as ``size_arg`` (when named) and the context tensors under
    their argument names, with the observed site renamed to ``"x"`` and the plate to ``"data"``, so
    fitting, scoring, NUTS and ArviZ see a standard story.

    Args:
        model_fn: the model function (or ``"module:function"`` of an imported module).
        guide: its guide function; or the name of a ``pyro.infer.autoguide`` class
            (``"AutoNormal"``, ``"AutoDelta"``, ...) built on ``model_fn``; or an autoguide
            instance; ``None`` for NUTS-only stories (fitting then has nothing to fit).
        observed: name of the observed sample site in ``model_fn``.
        plate: name of its plate over examples.
        data_arg: the parameter receiving the observations (default: the one defaulting to ``None``).
        size_arg: a parameter receiving the number of examples (e.g. ``J`` in eight schools).
        context_args: per-example context key -> parameter name, where they differ.
        data: ``"discrete"``/``"continuous"`` (default: from the observed site's support).
    """

    def __init__(
        self,
        model_fn: Callable | str,
        guide: Callable | str | None = None,
        *,
        observed: str = "obs",
        plate: str = "data",
        data_arg: str | None = None,
        size_arg: str | None = None,
        context_args: Mapping[str, str] | None = None,
        data: str | None = None,
    ) -> None:
        super().__init__()
        self.model_fn = _resolve(model_fn, "model_fn")
        self.observed, self.plate = observed, plate
        self.data_arg = _data_argument(self.model_fn, data_arg, {size_arg, *(context_args or {}).values()})
        self.size_arg, self.context_args = size_arg, dict(context_args or {})
        parameters = inspect.signature(self.model_fn).parameters
        for name in [size_arg, *self.context_args.values()]:
            if name is not None and name not in parameters:
                raise ValueError(f"{self.model_fn.__name__} has no parameter {name!r} (it has {', '.join(parameters)})")
        if data not in (None, "discrete", "continuous"):
            raise ValueError(f"data must be 'discrete', 'continuous' or None (from the story), got {data!r}")
        self.capabilities = Capabilities(likelihood="bound", data=data)
        if isinstance(guide, str) and ":" not in guide:
            guide_class = getattr(autoguides, guide, None)
            if not (isinstance(guide_class, type) and issubclass(guide_class, autoguides.AutoGuide)):
                raise ValueError(f"guide {guide!r} is not a pyro.infer.autoguide class (e.g. 'AutoNormal'), nor "
                                 "'module:function'")
            self.autoguide = guide_class(self.model_fn)
            self.guide_fn: Callable | None = self.autoguide
        else:
            self.guide_fn = None if guide is None else _resolve(guide, "guide")
            if isinstance(self.guide_fn, autoguides.AutoGuide):
                self.autoguide = self.guide_fn
        self._references = {"model_fn": _reference(model_fn),
                            "guide": guide if isinstance(guide, str) else _reference(guide)}

    @property
    def config(self) -> dict[str, Any]:  # type: ignore[override]
        """The arguments, with functions as ``"module:qualname"`` (a checkpoint can record them)."""
        config = dict(self._config)
        for key, reference in self._references.items():
            if config[key] is not None and reference is None:
                raise TypeError(f"the {key} of this story is not a module-level function; to save it, define it at "
                                "module level (or pass an autoguide by name, e.g. guide='AutoNormal')")
            config[key] = reference
        return config

    def _arguments(self, x: Any, n: int | None, ctx: Mapping[str, Any]) -> dict[str, Any]:
        arguments = {self.context_args.get(key, key): value for key, value in ctx.items()}
        arguments[self.data_arg] = x
        if self.size_arg is not None:
            arguments[self.size_arg] = x.shape[0] if x is not None else n
        return arguments

    def model(self, x: Any = None, n: int | None = None, **ctx: Any) -> Any:
        with _Rename(self.observed, self.plate):
            return self.model_fn(**self._arguments(x, n, ctx))

    def guide(self, x: Any = None, n: int | None = None, **ctx: Any) -> Any:
        if self.guide_fn is None:
            return None
        with _Rename(self.observed, self.plate):
            return self.guide_fn(**self._arguments(x, n, ctx))


def story(model_fn: Callable | str, guide: Callable | str | None = None, **options: Any) -> Story:
    """Wrap an existing Pyro model function (and guide) into a `GenerativeModel`, unchanged.

    Returns a `Story`; the keyword ``options`` are its arguments (``observed``, ``plate``,
    ``data_arg``, ``size_arg``, ``context_args``, ``data``), described there.

    Example::

        def model(J, sigma, y=None):
            mu = pyro.sample("mu", dist.Normal(0, 5))
            tau = pyro.sample("tau", dist.HalfCauchy(5))
            with pyro.plate("J", J):
                theta = pyro.sample("theta", dist.Normal(mu, tau))
                pyro.sample("obs", dist.Normal(theta, sigma), obs=y)

        schools = ppl_dgm.story(model, "AutoNormal", plate="J", size_arg="J")
        ppl_dgm.fit(schools, {"x": y, "sigma": sigma}, epochs=2000, batch_size=8)
    """
    return Story(model_fn, guide, **options)
