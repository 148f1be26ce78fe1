"""The core abstraction: a generative model is a Pyro model/guide pair."""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import pyro
import torch
from pyro import poutine
from pyro.nn import PyroModule

from ppl_dgm.lazy import in_module_scope, load_lazy_state
from ppl_dgm.posterior import autoguide_medians
from ppl_dgm.sites import DATA, X, Z
from ppl_dgm.traces import log_importance_weights
from ppl_dgm.validation import check_tensor

ASSIGNED_GUIDE = "assigned_guide"
"""Attribute under which ``self.guide = <callable>`` keeps the guide (an autoguide is a submodule there)."""

__all__ = ["DATA", "X", "Z", "Capabilities", "GenerativeModel", "data_plate", "draw"]

# Models never share parameters by name through Pyro's global param store.
pyro.settings.set(module_local_params=True)
@dataclass(frozen=True)
class Capabilities:
    """What a model can be asked; evaluation reads this instead of ``isinstance`` checks.

    Attributes:
        likelihood: ``"exact"`` when `GenerativeModel.log_prob` is the exact
            marginal, ``"bound"`` when only a variational bound / importance-weighted
            estimate exists, ``"none"`` when the model defines no normalized density.
        data: ``"discrete"`` when the model puts probability mass on integer values,
            ``"continuous"`` when it is a density (scored on integer data through the
            dequantization bound); ``None`` (the default): read from the support of the
            observed site's distribution in a run of the story.
        discrete_latents: the model has discrete latent variables.
        sequential: examples are sequences of shape ``(T, D)``.
        conditional: the model takes context (e.g. labels) besides ``x``.
    """

    likelihood: Literal["exact", "bound", "none"]
    data: Literal["discrete", "continuous"] | None = None
    discrete_latents: bool = False
    sequential: bool = False
    conditional: bool = False


def data_plate(x: torch.Tensor | None, n: int | None) -> pyro.plate:
    """The plate over examples: size ``len(x)`` when observing, else ``n`` draws."""
    if x is None and n is None:
        raise ValueError("pass data x or the number of examples n to draw")
    return pyro.plate(DATA, x.shape[0] if x is not None else n)


@torch.no_grad()
def draw(model: GenerativeModel, n: int, **ctx: Any) -> torch.Tensor:
    """``n`` examples from the fitted model: ``model.model`` run forward with its global sample
    sites held at ``model.point_estimate()``; shape ``(n, *event_shape)``, float."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    story = poutine.condition(model.model, data=model.point_estimate())
    trace = poutine.trace(story).get_trace(None, n=n, **ctx)
    return trace.nodes[X]["value"].to(model.dtype)


def _as_saved(value: Any) -> Any:
    """``value`` as a checkpoint's JSON gives it back (tuples become lists), when it is JSON at all."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return value


class GenerativeModel(PyroModule):
    """Base class of every model: write `model` (and `guide` if latent).

    The constructor arguments of a subclass are recorded automatically, so that
    `ppl_dgm.save` / `ppl_dgm.load` can rebuild it; keep them JSON-friendly.

    Conventions: ``model(x=None, n=None, **ctx)`` observes ``x`` (shape
    ``(N, *event_shape)``) at site ``"x"`` inside ``pyro.plate("data", N)``; called with
    ``x=None`` it draws ``n`` examples. ``guide`` takes the same arguments.
    """

    capabilities: ClassVar[Capabilities] = Capabilities(likelihood="bound")
    default_engine: ClassVar[str] = "svi"
    """The fitting engine ``ppl_dgm.fit`` uses unless told otherwise (see ``ppl_dgm.infer.engine``)."""
    evaluation_samples: ClassVar[int] = 1000
    """Samples per example `ppl_dgm.log_likelihood` draws by default: importance samples, or the draws of
    the noisy images a diffusion model's own bound averages over (where one draw already costs T passes)."""
    event_shape: tuple[int, ...] = ()
    registry_name: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("model", "guide"):
            if callable(cls.__dict__.get(name)):
                setattr(cls, name, in_module_scope(cls.__dict__[name]))

    def __new__(cls, *args: Any, **kwargs: Any):
        if not callable(getattr(cls, "model", None)):
            raise TypeError(f"{cls.__name__} must define model(self, x=None, n=None, **ctx)")
        self = super().__new__(cls)
        bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        arguments.pop(next(iter(arguments)))  # self
        object.__setattr__(self, "_config", {name: _as_saved(value) for name, value in arguments.items()})
        return self

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments this instance was built with."""
        return dict(self._config)

    @in_module_scope
    def guide(self, x: torch.Tensor | None = None, n: int | None = None, **ctx: Any) -> Any:
        """Variational family: the callable assigned to ``self.guide`` (e.g. ``self.guide =
        AutoNormal(self.model)``), called with the model's arguments; empty without one (no latent
        variables, or NUTS only)."""
        assigned = getattr(self, ASSIGNED_GUIDE, None)
        return assigned(x, n, **ctx) if assigned is not None else None

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "guide" and callable(value):  # `self.guide = AutoNormal(self.model)`: the guide *is* an autoguide
            if type(self).guide is not GenerativeModel.guide:
                raise TypeError(f"{type(self).__name__} defines a guide method; assign the autoguide to another "
                                "attribute and call it from guide(), or drop the method")
            name = ASSIGNED_GUIDE
        super().__setattr__(name, value)

    def point_estimate(self) -> dict[str, torch.Tensor]:
        """Values of the story's global sample sites at the fitted parameters (what `draw` uses):
        the median of each autoguide the model holds. Empty for models whose parameters are plain
        tensors, not sites; models with a point of their own override it."""
        return autoguide_medians(self)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load saved weights; tensors that ``setup``, ``pyro.param`` or an autoguide created at fit
        time are created first (see `ppl_dgm.lazy`)."""
        load_lazy_state(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def evidence_lower_bound(self, x: torch.Tensor, num_samples: int = 1, **ctx: Any) -> torch.Tensor | None:
        """The model's own lower bound on ``log p(x)`` per example in nats, shape ``(N,)``, for models
        that compute their bound better than a trace-based importance estimate would (a diffusion
        model's analytic per-step KL terms); `ppl_dgm.log_likelihood` reports it as ``kind="bound"``.
        The default, ``None``, leaves scoring to the traces of the model/guide pair."""
        return None

    def setup(self, x: torch.Tensor, **ctx: Any) -> None:
        """Prepare for fitting on training data ``x`` (all of it, with its per-example context)
        before parameters are collected.

        The default does nothing; models whose parameters depend on the data (their shape, a
        data-driven initialization or prior) create them here.
        """

    def check_data(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` can be scored by this model.

        The default checks the shape against `event_shape` (when set) and
        finiteness; subclasses add support checks for their likelihood.
        """
        check_tensor(x, "x", event_shape=self.event_shape or None)

    @property
    def device(self) -> torch.device:
        """Device of the first parameter (CPU for a model without parameters)."""
        return next((p.device for p in self.parameters()), torch.device("cpu"))

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the first parameter (float32 without parameters)."""
        return next((p.dtype for p in self.parameters()), torch.float32)

    def sample(self, n: int, **ctx: Any) -> torch.Tensor:
        """Draw ``n`` examples from the model; shape ``(n, *event_shape)``, float dtype.

        Estimators that mirror scikit-learn keep sklearn's ``sample``; :func:`draw` works
        for every model.
        """
        return draw(self, n, **ctx)

    def log_prob(self, x: torch.Tensor, **ctx: Any) -> torch.Tensor:
        """Exact log-likelihood per example in nats, shape ``(N,)``.

        The default works for models whose only sample site is the observed one;
        models with latent variables summed out exactly override it.
        """
        if self.capabilities.likelihood != "exact":
            raise ValueError(
                f"{type(self).__name__} has no exact log_prob (likelihood="
                f"{self.capabilities.likelihood!r}); use ppl_dgm.log_likelihood"
            )
        return log_importance_weights(self, x, num_particles=1, context=ctx).local[0]
