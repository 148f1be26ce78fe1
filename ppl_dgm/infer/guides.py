"""A guide over global sample sites: point masses (MAP) or mean-field normals (full Bayes)."""

from __future__ import annotations

from typing import Literal

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions.transforms import biject_to
from torch import nn

GuideKind = Literal["map", "normal"]
INIT_SCALE = 0.01


class GlobalGuide(nn.Module):
    """Variational family over named global sites, parameterized in unconstrained space.

    ``kind="map"`` puts a point mass at each site's value (so SVI maximizes the posterior
    density); ``kind="normal"`` a normal in the unconstrained space pushed through
    ``biject_to(constraint)`` (so SVI fits a mean-field posterior, Jacobians included).

    Args:
        constraints: site name -> support (``pyro.distributions.constraints``).
        kind: ``"map"`` or ``"normal"``.
    """

    def __init__(self, constraints: dict[str, object], kind: GuideKind = "map") -> None:
        super().__init__()
        if kind not in ("map", "normal"):
            raise ValueError(f"guide kind must be 'map' or 'normal', got {kind!r}")
        self.constraints = dict(constraints)
        self.kind = kind
        self.loc = nn.ParameterDict()
        self.raw_scale = nn.ParameterDict()

    def initialized(self) -> bool:
        """Whether every site has a value."""
        return all(name in self.loc for name in self.constraints)

    @torch.no_grad()
    def set_point(self, values: dict[str, torch.Tensor]) -> None:
        """Place the guide at ``values`` (constrained); normal guides get a small scale."""
        for name, value in values.items():
            unconstrained = biject_to(self.constraints[name]).inv(value)
            if name in self.loc and self.loc[name].shape == unconstrained.shape:
                self.loc[name].copy_(unconstrained)
            else:
                self.loc[name] = nn.Parameter(unconstrained.clone())
            if self.kind == "normal":
                raw = torch.full_like(unconstrained, float(torch.log(torch.expm1(torch.tensor(INIT_SCALE)))))
                self.raw_scale[name] = nn.Parameter(raw)

    def point(self, name: str) -> torch.Tensor:
        """The site's point estimate (the posterior mode for MAP, the median for normal guides)."""
        return biject_to(self.constraints[name])(self.loc[name])

    def points(self) -> dict[str, torch.Tensor]:
        """All point estimates, by site name."""
        return {name: self.point(name) for name in self.constraints}

    def forward(self) -> dict[str, torch.Tensor]:
        """Sample every site (inside a Pyro trace this records the guide's sites)."""
        values = {}
        for name, constraint in self.constraints.items():
            loc = self.loc[name]
            transform = biject_to(constraint)
            if self.kind == "map":
                value = transform(loc)
                values[name] = pyro.sample(name, dist.Delta(value, event_dim=value.dim()))
            else:
                base = dist.Normal(loc, F.softplus(self.raw_scale[name])).to_event(loc.dim())
                values[name] = pyro.sample(name, dist.TransformedDistribution(base, transform))
        return values

    @torch.no_grad()
    def draw(self, num_draws: int) -> dict[str, torch.Tensor]:
        """``num_draws`` samples of every site from the guide, stacked on a new first dim."""
        draws = [self.forward() for _ in range(num_draws)]
        return {name: torch.stack([d[name] for d in draws]) for name in self.constraints}
