"""The validation figure of engines whose models have no likelihood (GANs, energy-based models): the
Frechet distance of the model's draws from the validation digits, in the digits classifier's features."""

from __future__ import annotations

from typing import Any

import torch

from ppl_dgm.core import draw
from ppl_dgm.evaluation.digits_classifier import MAX_LEVEL
from ppl_dgm.evaluation.sample_quality import as_digit_images, frechet_distance
from ppl_dgm.sites import X, context_of

DIGIT_PIXELS = 64


def looks_like_digits(x: torch.Tensor) -> bool:
    """Whether ``x`` ``(N, ...)`` holds 8x8 digits: 64 integer values per row in ``[0, 16]``."""
    return (x[0].numel() == DIGIT_PIXELS and bool((x == x.round()).all()) and float(x.min()) >= 0
            and float(x.max()) <= MAX_LEVEL)


class ValidatesBySamples:
    """Mixin of engines whose models have no likelihood: their validation figure is `sample_frechet`."""

    model: Any
    validation_unit = "Frechet distance of draws from the validation digits"

    def validation_loss(self, batch: dict[str, torch.Tensor]) -> float | None:
        """The Frechet distance of as many seeded draws as ``batch`` has rows (with its labels for a
        conditional model) from its digits; ``None`` for data other than 8x8 digits."""
        return sample_frechet(self.model, batch)


@torch.no_grad()
def sample_frechet(model: Any, batch: dict[str, torch.Tensor], seed: int = 0) -> float | None:
    """Frechet distance between as many draws of ``model`` as ``batch`` has rows (with the batch's context,
    e.g. labels; torch's generator seeded with ``seed`` and restored after) and the batch's digits; ``None``
    when the data are not 8x8 digits (the classifier knows nothing else)."""
    x = batch[X]
    if not looks_like_digits(x):
        return None
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        samples = draw(model, x.shape[0], **context_of(batch))
    return frechet_distance(as_digit_images(samples), x)
