"""How much of its latent space a VAE uses: active units (Burda et al., 2016) and the KL per dimension."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ppl_dgm.sites import X, context_of
from ppl_dgm.validation import prepare_data

ACTIVITY_THRESHOLD = 0.01
"""A latent dimension is active when ``Var_x E_q[z_j | x]`` exceeds this (Burda et al., 2016)."""


@dataclass(frozen=True)
class LatentUsage:
    """Per-dimension use of the code of a model with an amortized guide.

    Attributes:
        activity: ``(k,)``: ``Var_x E_q[z_j | x]`` over the examples, in squared latent units.
        kl_per_dim: ``(k,)``: mean over examples of ``KL(q(z_j | x) || p(z_j))`` in nats, or ``None``
            where the model's KL does not split by dimension (a flow posterior, a mixture prior).
        threshold: the activity above which a dimension counts as active.
    """

    activity: np.ndarray
    kl_per_dim: np.ndarray | None
    threshold: float = ACTIVITY_THRESHOLD

    @property
    def active_units(self) -> int:
        """Number of dimensions whose activity exceeds `threshold`."""
        return int((self.activity > self.threshold).sum())

    def summary(self) -> dict[str, Any]:
        """JSON-friendly figures: active units out of ``k``, per-dimension activity and KL (nats)."""
        return {
            "active_units": self.active_units,
            "latent_dims": int(self.activity.size),
            "activity": self.activity.tolist(),
            "kl_per_dim_nats": None if self.kl_per_dim is None else self.kl_per_dim.tolist(),
            "kl_nats": None if self.kl_per_dim is None else float(self.kl_per_dim.sum()),
        }


def _require(model: Any, method: str) -> None:
    if not callable(getattr(model, method, None)):
        raise TypeError(f"{type(model).__name__} has no {method}(x); latent usage needs a model with an amortized "
                        "guide over one code space, such as the VAE family (ppl_dgm.models.vae)")


@torch.no_grad()
def latent_usage(model: Any, data: torch.Tensor | Mapping[str, torch.Tensor],
                 threshold: float = ACTIVITY_THRESHOLD) -> LatentUsage:
    """Active units and KL per latent dimension of ``model`` on ``data``.

    Args:
        model: a model with ``posterior_mean(x, **ctx) -> (N, k)`` (and optionally
            ``kl_per_dim(x, **ctx) -> (N, k) | None``), e.g. one of the VAE family; a hierarchical one
            with ``layer_means(x, **ctx)`` (a list of ``(N, k_i)``) is measured over all its layers.
        data: examples ``(N, D)`` or a mapping with key ``"x"`` and context (labels ``"y"``).
        threshold: activity above which a dimension is active.

    Returns:
        `LatentUsage` over the ``N`` examples (evaluated with the model in eval mode).
    """
    _require(model, "posterior_mean")
    batch = prepare_data(data, model, "data", model.device, model.dtype)
    x, context = batch[X], context_of(batch)
    if x.shape[0] < 2:
        raise ValueError(f"latent usage needs at least 2 examples (a variance over the data), got {x.shape[0]}")
    was_training = model.training
    model.eval()
    try:
        layered = callable(getattr(model, "layer_means", None))  # a hierarchy: every layer, as kl_per_dim lays out
        means = torch.cat(model.layer_means(x, **context), -1) if layered else model.posterior_mean(x, **context)
        kl = model.kl_per_dim(x, **context) if callable(getattr(model, "kl_per_dim", None)) else None
    finally:
        model.train(was_training)
    activity = means.double().var(0).cpu().numpy()
    return LatentUsage(activity, None if kl is None else kl.double().mean(0).cpu().numpy(), threshold)
