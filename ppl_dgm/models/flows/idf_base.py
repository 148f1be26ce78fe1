"""Factorized mixture of discretized logistics over all the integers: the base distribution of IDF."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.distributions import Categorical, TorchDistribution, constraints


def _log_bin_masses(value: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor,
                    open_below: torch.Tensor | bool = False, open_above: torch.Tensor | bool = False) -> torch.Tensor:
    """``log P(value)`` of logistics ``(loc, scale)`` integrated over the bins ``[value - 1/2, value + 1/2)``
    (broadcast), in nats; where ``open_below`` (``open_above``) the bin reaches down to -inf (up to +inf)."""
    inv_scale = scale.reciprocal()
    upper = (value + 0.5 - loc) * inv_scale
    lower = (value - 0.5 - loc) * inv_scale
    log_cdf_upper = F.logsigmoid(upper)
    log_sf_lower = F.logsigmoid(-lower)
    # sigmoid(u) - sigmoid(l) = sigmoid(u) sigmoid(-l) (1 - exp(l - u)), with l - u = -1/scale: stable in both tails.
    log_mass = log_cdf_upper + log_sf_lower + torch.log(-torch.expm1(-inv_scale))
    log_mass = torch.where(torch.as_tensor(open_below, device=value.device), log_cdf_upper, log_mass)
    return torch.where(torch.as_tensor(open_above, device=value.device), log_sf_lower, log_mass)


class DiscretizedLogisticMixture(TorchDistribution):
    """Mixture of ``C`` logistics integrated over the unit bins centred on every integer.

    Each component puts mass ``sigmoid((k + 1/2 - loc) / scale) - sigmoid((k - 1/2 - loc) / scale)`` on the
    integer ``k``; these telescope to one over all of ``Z``, so the mixture is normalized with no truncation.
    The last axis of the parameters indexes components; the rest is the batch shape.

    Args:
        logits: mixture weights (unnormalized log), shape ``(*batch_shape, C)``.
        loc: component locations in data units, shape ``(*batch_shape, C)``.
        scale: component scales in data units, positive, shape ``(*batch_shape, C)``.
    """

    arg_constraints = {"logits": constraints.real, "loc": constraints.real, "scale": constraints.positive}
    support = constraints.integer
    has_rsample = False

    def __init__(self, logits: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, validate_args=None) -> None:
        self.logits, self.loc, self.scale = torch.broadcast_tensors(logits, loc, scale)
        super().__init__(self.loc.shape[:-1], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        shape = (*batch_shape, self.loc.shape[-1])
        return DiscretizedLogisticMixture(self.logits.expand(shape), self.loc.expand(shape), self.scale.expand(shape),
                                          validate_args=False)

    def _mix(self, log_masses: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(torch.log_softmax(self.logits, -1) + log_masses, -1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log P(value)`` in nats for integer ``value`` of shape ``(..., *batch_shape)``; same shape."""
        if self._validate_args:
            self._validate_sample(value)
        return self._mix(_log_bin_masses(value.unsqueeze(-1), self.loc, self.scale))

    def log_prob_table(self, low: int, num_values: int) -> torch.Tensor:
        """``log P`` of each of the integers ``low .. low + num_values - 1``, the tails below and above folded
        into the first and last of them, so that each row sums to one exactly; shape ``(*batch_shape, num_values)``.
        Inside the range it equals `log_prob`."""
        values = torch.arange(low, low + num_values, dtype=self.loc.dtype, device=self.loc.device)
        values = values.reshape(-1, *([1] * len(self.batch_shape)), 1)  # (K, *batch_shape, 1)
        first = values == low
        last = values == low + num_values - 1
        table = self._mix(_log_bin_masses(values, self.loc, self.scale, first, last))  # (K, *batch_shape)
        return table.movedim(0, -1)

    @property
    def mean(self) -> torch.Tensor:
        """Expected value: the logistic is symmetric, so each component's mean is its ``loc``."""
        return (torch.softmax(self.logits, -1) * self.loc).sum(-1)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """Integers of shape ``(*sample_shape, *batch_shape)``, float dtype of the parameters: a component, then a
        logistic draw rounded to the nearest integer (its bin)."""
        with torch.no_grad():
            component = Categorical(logits=self.logits).sample(sample_shape).unsqueeze(-1)
            shape = (*sample_shape, *self.loc.shape)
            loc = torch.gather(self.loc.expand(shape), -1, component).squeeze(-1)
            scale = torch.gather(self.scale.expand(shape), -1, component).squeeze(-1)
            u = torch.rand(loc.shape, dtype=loc.dtype, device=loc.device).clamp(1e-7, 1 - 1e-7)
            return torch.round(loc + scale * (torch.log(u) - torch.log1p(-u)))
