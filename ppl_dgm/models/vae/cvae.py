"""Conditional VAE (Sohn et al., 2015): ``p(x | y, z)`` with ``z ~ N(0, I)`` and the guide ``q(z | x, y)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro.distributions as dist
import torch
import torch.nn.functional as F

from ppl_dgm.core import Capabilities
from ppl_dgm.models.registry import register_model
from ppl_dgm.models.vae.base import MIN_POSTERIOR_SCALE, Activation, AmortizedVAE, check_positive
from ppl_dgm.models.vae.likelihoods import Likelihood
from ppl_dgm.validation import check_labels


@register_model("cvae")
class CVAE(AmortizedVAE):
    """Conditional VAE: given a label ``y``, ``z ~ N(0, I)`` and ``x | y, z ~ p(x | decoder([z, onehot(y)]))``;
    guide ``q(z | x, y) = N(mu([x, onehot(y)]), sigma([x, onehot(y)]))``.

    The label is context, not a sample site: the model scores ``log p(x | y)`` (``ppl_dgm.log_likelihood(model,
    {"x": x, "y": y})``) and draws a chosen digit (``model.sample(n, y=y)``, ``ppl_dgm.draw(model, n, y=y)``).
    Since ``z`` need not carry the class, it is free to code the style of the digit (slant, thickness), and
    the same ``z`` decoded with each label draws every digit in that style. Every call needs the labels ``y``:
    a 1-D integer tensor with one label in ``0..num_classes-1`` per example.

    Sohn, Lee & Yan, "Learning Structured Output Representation using Deep Conditional Generative Models",
    NeurIPS 2015; Kingma, Rezende, Mohamed & Welling, "Semi-supervised Learning with Deep Generative Models",
    NeurIPS 2014 (the labelled part of the M2 model: ``p(x | y, z)``, ``q(z | x, y)``).

    Args:
        input_dim: number of dimensions ``D`` of an example (data shape ``(N, D)``).
        latent_dim: size of ``z``.
        hidden_dims: widths of the hidden layers of encoder and decoder (mirrored).
        likelihood: per-pixel likelihood (see `ppl_dgm.models.VAE`).
        num_levels: number of integer values the data takes, ``0..num_levels-1``.
        activation: nonlinearity of the networks.
        dropout: dropout rate of the hidden layers while fitting.
        num_classes: labels take the values ``0..num_classes-1``.
    """

    def __init__(
        self,
        input_dim: int = 64,
        latent_dim: int = 16,
        hidden_dims: Sequence[int] = (512, 512),
        likelihood: Likelihood = "categorical",
        num_levels: int | None = None,
        activation: Activation = "elu",
        dropout: float = 0.3,
        num_classes: int = 10,
    ) -> None:
        check_positive("num_classes", num_classes)
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        super().__init__(input_dim, latent_dim, hidden_dims, likelihood, num_levels, activation, dropout,
                         encoder_in=input_dim + num_classes, decoder_in=latent_dim + num_classes)
        self.num_classes = num_classes

    @property
    def capabilities(self) -> Capabilities:  # type: ignore[override]
        return Capabilities(likelihood="bound", data=self.head.data, conditional=True)

    def check_labels(self, y: Any, rows: int | None = None) -> torch.Tensor:
        """``y`` if it is a 1-D integer tensor of ``rows`` labels in ``0..num_classes-1``, else ``ValueError``
        saying what to pass (labels missing, of the wrong shape or dtype, or out of range)."""
        if y is None:
            raise ValueError(f"{type(self).__name__} is conditional on labels: pass them as y, a 1-D integer tensor "
                             f"with one label in 0..{self.num_classes - 1} per example, e.g. ppl_dgm.fit(model, "
                             "{'x': x, 'y': y}), ppl_dgm.log_likelihood(model, {'x': x, 'y': y}), "
                             "model.sample(n, y=y)")
        return check_labels(y, self.num_classes, rows)

    def one_hot(self, y: torch.Tensor) -> torch.Tensor:
        """Labels ``(N,)`` -> one-hot rows ``(N, num_classes)`` in the model's dtype."""
        return F.one_hot(y.long(), self.num_classes).to(self.prior_loc.dtype)

    def setup(self, x: torch.Tensor, y: torch.Tensor | None = None, **ctx: Any) -> None:
        """Check the training labels ``y`` ``(N,)`` (all of them, before the first step)."""
        self.check_labels(y, x.shape[0])

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None, **ctx: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation ``(N, k)`` each of ``q(z | x, y)`` for images ``(N, D)``, labels ``(N,)``."""
        y = self.check_labels(y, x.shape[0])
        loc, raw_scale = self.encoder(torch.cat([self.head.scaled(x), self.one_hot(y)], dim=-1)).chunk(2, dim=-1)
        return loc, F.softplus(raw_scale) + MIN_POSTERIOR_SCALE

    def observation(self, z: torch.Tensor, y: torch.Tensor | None = None, **ctx: Any) -> dist.Distribution:
        """``p(x | y, z)`` for latents ``(N, k)`` and labels ``(N,)``; event shape ``(D,)``."""
        y = self.check_labels(y, z.shape[0])
        return self.head(self.decoder(torch.cat([z, self.one_hot(y)], dim=-1)))

    def model(self, x: torch.Tensor | None = None, n: int | None = None, y: torch.Tensor | None = None
              ) -> torch.Tensor:
        """``z ~ N(0, I)``, ``x ~ p(x | y, z)`` in plate ``"data"``; ``n`` defaults to ``len(y)``. Returns ``x``
        ``(N, D)``."""
        return super().model(x, self._rows(x, n, y), y=y)

    def guide(self, x: torch.Tensor | None = None, n: int | None = None, y: torch.Tensor | None = None) -> None:
        """``z ~ q(z | x, y)``; with ``x=None`` the prior."""
        super().guide(x, self._rows(x, n, y), y=y)

    def _rows(self, x: torch.Tensor | None, n: int | None, y: torch.Tensor | None) -> int:
        """The plate size: ``len(x)``, else ``n``, else ``len(y)`` (``ValueError`` without labels; `encode` and
        `observation` check them against it)."""
        if y is None:
            self.check_labels(y)
        return x.shape[0] if x is not None else len(y) if n is None else n
