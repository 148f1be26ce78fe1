"""Per-pixel likelihoods ``p(x | decoder output)`` the VAE family shares."""

from __future__ import annotations

from typing import Literal, get_args

import pyro.distributions as dist
import torch
import torch.nn.functional as F

from ppl_dgm.distributions import DiscretizedLogistic
from ppl_dgm.validation import check_integer_levels, check_tensor

Likelihood = Literal["categorical", "bernoulli", "gaussian", "discretized_logistic"]
MIN_SCALE = 1e-3
"""Lower bound on decoder scales, in units of ``num_levels - 1``."""


class PixelLikelihood:
    """Turns a decoder's output ``(..., out_features)`` into ``p(x | z)`` with event shape ``(D,)``.

    Args:
        likelihood: ``"categorical"`` (one logit per level and pixel), ``"bernoulli"`` (binary data),
            ``"gaussian"`` (a density; integer data are scored through dequantization) or
            ``"discretized_logistic"`` (logistic mass on integer bins, Salimans et al., 2017).
        input_dim: pixels ``D`` of an example.
        num_levels: integer values the data take, ``0..num_levels-1`` (default 17, or 2 for bernoulli).
    """

    def __init__(self, likelihood: Likelihood, input_dim: int, num_levels: int | None = None) -> None:
        if likelihood not in get_args(Likelihood):
            raise ValueError(f"likelihood must be one of {', '.join(get_args(Likelihood))}; got {likelihood!r}")
        num_levels = num_levels if num_levels is not None else (2 if likelihood == "bernoulli" else 17)
        if likelihood == "bernoulli" and num_levels != 2:
            raise ValueError(f"the bernoulli likelihood needs num_levels=2, got {num_levels}")
        if not isinstance(num_levels, int) or num_levels < 2:
            raise ValueError(f"num_levels must be an integer >= 2, got {num_levels!r}")
        self.likelihood, self.input_dim, self.num_levels = likelihood, input_dim, num_levels

    @property
    def out_features(self) -> int:
        """Width of the decoder output this likelihood reads."""
        per_pixel = {"categorical": self.num_levels, "bernoulli": 1}.get(self.likelihood, 2)
        return per_pixel * self.input_dim

    @property
    def data(self) -> Literal["discrete", "continuous"]:
        """``"continuous"`` for the Gaussian density, else ``"discrete"`` (see `Capabilities.data`)."""
        return "continuous" if self.likelihood == "gaussian" else "discrete"

    def check_data(self, x: torch.Tensor) -> None:
        """``ValueError`` unless ``x`` has shape ``(N, D)``, is finite, and (for the mass functions) holds
        integers in ``0..num_levels-1``."""
        check_tensor(x, "x")
        if tuple(x.shape[1:]) != (self.input_dim,):
            fix = (f"build the model with input_dim={x.shape[1]} (ppl-dgm fit: -O input_dim={x.shape[1]})"
                   if x.dim() == 2 else "flatten each example into a vector")
            raise ValueError(f"x has shape {tuple(x.shape)}, expected (N, {self.input_dim}): {fix}")
        if self.likelihood != "gaussian":
            try:
                check_integer_levels(x, self.num_levels)
            except ValueError as error:
                raise ValueError(f"{error}; the {self.likelihood} likelihood scores integers 0..{self.num_levels - 1}"
                                 ": for real-valued data use likelihood='gaussian' (ppl-dgm fit: -O "
                                 "likelihood=gaussian), for other integer levels set num_levels") from None

    def scaled(self, x: torch.Tensor) -> torch.Tensor:
        """Data in ``[0, 1]``: ``x / (num_levels - 1)`` (what encoders see)."""
        return x / (self.num_levels - 1)

    def __call__(self, out: torch.Tensor) -> dist.Distribution:
        """``p(x | z)`` from decoder output ``(..., out_features)``; event shape ``(D,)``, data units."""
        span = self.num_levels - 1
        if self.likelihood == "categorical":
            return dist.Categorical(logits=out.unflatten(-1, (self.input_dim, self.num_levels))).to_event(1)
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out).to_event(1)
        loc, raw_scale = out.chunk(2, dim=-1)
        scale = span * (F.softplus(raw_scale) + MIN_SCALE)
        if self.likelihood == "gaussian":
            return dist.Normal(span * torch.sigmoid(loc), scale).to_event(1)
        return DiscretizedLogistic(span * torch.sigmoid(loc), scale, self.num_levels).to_event(1)

    def mean(self, observation: dist.Distribution) -> torch.Tensor:
        """Mean of an observation distribution this object made, ``(..., D)`` in data units."""
        if self.likelihood == "categorical":  # torch's Categorical has no mean over its levels
            probs = observation.base_dist.probs
            return probs @ torch.arange(self.num_levels, dtype=probs.dtype, device=probs.device)
        return observation.mean
