"""Distributions the standard libraries lack."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints


class DiscretizedLevels(TorchDistribution):
    """Base of a continuous density integrated over unit bins centred on the integers ``0..num_levels-1``,
    the first and last bins reaching to -inf and +inf so that the masses sum to one. ``loc`` and ``scale``
    are in data units; subclasses give `log_prob` and `sample`."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = False

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, num_levels: int, validate_args=None):
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        self.num_levels = int(num_levels)
        super().__init__(self.loc.shape, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self):
        return constraints.integer_interval(0, self.num_levels - 1)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        new.loc = self.loc.expand(batch_shape)
        new.scale = self.scale.expand(batch_shape)
        new.num_levels = self.num_levels
        TorchDistribution.__init__(new, torch.Size(batch_shape), validate_args=False)
        new._validate_args = self._validate_args
        return new


class DiscretizedLogistic(DiscretizedLevels):
    """Logistic density integrated over unit bins centred on the integers ``0..num_levels-1``.

    The first and last bins extend to -inf and +inf, so the masses sum to one
    (Salimans et al., 2017, PixelCNN++). ``loc`` and ``scale`` are in data units.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        inv_scale = self.scale.reciprocal()
        upper = (value + 0.5 - self.loc) * inv_scale
        lower = (value - 0.5 - self.loc) * inv_scale
        log_cdf_upper = F.logsigmoid(upper)
        log_sf_lower = F.logsigmoid(-lower)
        # sigmoid(u) - sigmoid(l) = sigmoid(u) * sigmoid(-l) * (1 - exp(l - u)), l - u = -1/scale.
        log_mass = log_cdf_upper + log_sf_lower + torch.log(-torch.expm1(-inv_scale))
        first = value <= 0
        last = value >= self.num_levels - 1
        return torch.where(first, log_cdf_upper, torch.where(last, log_sf_lower, log_mass))

    @property
    def mean(self) -> torch.Tensor:
        """Expected value ``sum_k k P(k)``, in data units."""
        levels = torch.arange(self.num_levels, dtype=self.loc.dtype, device=self.loc.device)
        masses = self.log_prob(levels.reshape(-1, *([1] * self.loc.dim()))).exp()
        return (masses * levels.reshape(-1, *([1] * self.loc.dim()))).sum(0)

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device).clamp(1e-6, 1 - 1e-6)
            draw = self.loc.expand(shape) + self.scale.expand(shape) * (torch.log(u) - torch.log1p(-u))
            return draw.round().clamp(0, self.num_levels - 1)
