"""A guide over a story's global sample sites, found by tracing it: point masses (MAP) or mean-field
normals (full Bayes)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any, Literal

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.distributions.transforms import biject_to
from pyro.infer.autoguide import AutoGuide
from pyro.infer.autoguide.initialization import InitMessenger, init_to_median
from torch import nn

from ppl_dgm.traces import in_data_plate, is_latent

GuideKind = Literal["map", "normal"]
INIT_SCALE = 0.01
DRAW_ONE = ((None,), {"n": 1})
"""Arguments of a story drawing one example (``model(None, n=1)``); the guide traces the story with
them when asked for its point before it ever ran (the global sites do not depend on the data)."""


class GlobalGuide(AutoGuide):
    """Variational family over a story's latent sample sites outside plate ``"data"``, in
    unconstrained space; the sites (names, supports, shapes) come from a trace of the story, as a
    Pyro autoguide finds them (`pyro.infer.autoguide.AutoGuide`).

    ``kind="map"`` puts a point mass at each site's value (so SVI maximizes the posterior density);
    ``kind="normal"`` a normal in the unconstrained space pushed through ``biject_to(support)`` (so
    SVI fits a mean-field posterior, Jacobians included). Each site is sampled under its own name,
    with no auxiliary sites, so the guide's trace holds exactly the story's global latents.

    The first call (or `points`) runs the story once under ``poutine.block`` with the sites inside
    plate ``"data"`` hidden, each global site set by ``init_loc_fn``, and creates the parameters
    there. Parameters that already exist with the right shape (loaded from a checkpoint) are kept.

    Args:
        model: the story, ``model(x=None, n=None, **ctx)``.
        kind: ``"map"`` or ``"normal"``.
        init_loc_fn: the starting value of a site (a Pyro init strategy, e.g.
            ``init_to_value(values=...)``); default: the prior median.
        init_scale: starting standard deviation of the ``"normal"`` guide in unconstrained space.
    """

    parameters_load_by_key = True
    """Its parameters live in ``ParameterDict`` s that exist from construction, so a checkpoint
    loads them by key (see `ppl_dgm.lazy`); no prototype batch is needed."""

    def __init__(self, model: Callable, kind: GuideKind = "map", *,
                 init_loc_fn: Callable[[dict], torch.Tensor] = init_to_median, init_scale: float = INIT_SCALE) -> None:
        if kind not in ("map", "normal"):
            raise ValueError(f"guide kind must be 'map' or 'normal', got {kind!r}")
        super().__init__(InitMessenger(init_loc_fn)(poutine.block(model, hide_fn=in_data_plate)))
        self.kind = kind
        self.init_scale = init_scale
        self.loc = nn.ParameterDict()
        self.raw_scale = nn.ParameterDict()

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        raw = float(torch.tensor(self.init_scale).expm1().log())  # softplus^-1
        with torch.no_grad():
            for name, site in self.sites.items():
                unconstrained = biject_to(site["fn"].support).inv(site["value"].detach())
                if name not in self.loc or self.loc[name].shape != unconstrained.shape:
                    self.loc[name] = nn.Parameter(unconstrained.clone())
                if self.kind == "normal" and (name not in self.raw_scale
                                              or self.raw_scale[name].shape != unconstrained.shape):
                    self.raw_scale[name] = nn.Parameter(torch.full_like(unconstrained, raw))

    @property
    def sites(self) -> dict[str, dict]:
        """The story's global latent sites as traced (name -> trace site); empty before the first run."""
        if self.prototype_trace is None:
            return {}
        return {name: site for name, site in self.prototype_trace.nodes.items() if is_latent(site)}

    def reset(self) -> None:
        """Forget the sites and parameters: the next run traces the story again and starts at ``init_loc_fn``."""
        if self.prototype_trace is None and not self.loc and not self.raw_scale:
            return  # nothing to forget (EM calls this every iteration)
        self.prototype_trace = None
        self._prototype_frames = {}
        self.loc.clear()
        self.raw_scale.clear()

    def _ready(self) -> None:
        if self.prototype_trace is None:
            self._setup_prototype(*DRAW_ONE[0], **DRAW_ONE[1])

    def point(self, name: str) -> torch.Tensor:
        """The site's point estimate (the posterior mode for MAP, the median for normal guides)."""
        self._ready()
        return biject_to(self.sites[name]["fn"].support)(self.loc[name])

    def points(self) -> dict[str, torch.Tensor]:
        """All point estimates, by site name."""
        self._ready()
        return {name: self.point(name) for name in self.sites}

    @torch.no_grad()
    def median(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """`points`, detached (the autoguide interface; the arguments are not needed)."""
        return {name: value.detach() for name, value in self.points().items()}

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Sample every global site (inside a Pyro trace this records the guide's sites); takes the
        story's arguments."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        plates = self._create_plates(*args, **kwargs)
        values = {}
        for name, site in self.sites.items():
            loc, event_dim = self.loc[name], site["fn"].event_dim
            transform = biject_to(site["fn"].support)
            with ExitStack() as stack:
                for frame in site["cond_indep_stack"]:
                    if frame.vectorized:
                        stack.enter_context(plates[frame.name])
                if self.kind == "map":
                    values[name] = pyro.sample(name, dist.Delta(transform(loc), event_dim=event_dim))
                else:  # the unconstrained event may have another rank (simplex: K - 1, corr_cholesky: a vector)
                    unconstrained_dim = event_dim + loc.dim() - site["value"].dim()
                    base = dist.Normal(loc, F.softplus(self.raw_scale[name])).to_event(unconstrained_dim)
                    values[name] = pyro.sample(name, dist.TransformedDistribution(base, transform))
        return values
