"""The discretized Gaussian: the last reverse step's distribution over the data's integer levels."""

from __future__ import annotations

import math

import torch

from ppl_dgm.distributions import DiscretizedLevels


def _log_ndtr_difference(upper: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """``log(Phi(upper) - Phi(lower))`` for ``upper > lower``, stable in both tails."""
    flip = lower > 0  # Phi(u) - Phi(l) = Phi(-l) - Phi(-u): use the side where the CDFs are small
    hi, lo = torch.where(flip, -lower, upper), torch.where(flip, -upper, lower)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return log_hi + torch.log1p(-torch.exp((log_lo - log_hi).clamp(max=0)).clamp(max=1 - 1e-12))


class DiscretizedGaussian(DiscretizedLevels):
    """Gaussian mass on unit bins centred on the integers ``0..num_levels-1``; the first and last
    bins reach to -inf and +inf, so the masses sum to one (Ho et al., 2020, eq. 13).

    Args:
        loc: mean, in data units (levels), any shape (the batch shape).
        scale: standard deviation in data units, broadcastable with ``loc``.
        num_levels: number of integer levels.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Log-mass of integer ``value`` (nats), shape of the broadcast of ``value`` and the batch."""
        if self._validate_args:
            self._validate_sample(value)
        upper = torch.where(value >= self.num_levels - 1, math.inf, (value + 0.5 - self.loc) / self.scale)
        lower = torch.where(value <= 0, -math.inf, (value - 0.5 - self.loc) / self.scale)
        return _log_ndtr_difference(upper, lower)

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        """Integer levels (float dtype): a Gaussian draw rounded and clipped to ``0..num_levels-1``."""
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            draw = self.loc.expand(shape) + self.scale.expand(shape) * torch.randn(shape, dtype=self.loc.dtype,
                                                                                   device=self.loc.device)
            return draw.round().clamp(0, self.num_levels - 1)
