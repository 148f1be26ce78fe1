"""Sample-quality metrics for digits, the same for every model family, in the features of the digits classifier.

References:
    Heusel et al., 2017, "GANs trained by a two time-scale update rule converge to a local Nash equilibrium"
    (Frechet distance); Binkowski et al., 2018, "Demystifying MMD GANs" (kernel distance, KID);
    Kynkaanniemi et al., 2019, "Improved precision and recall metric for assessing generative models";
    Lopez-Paz & Oquab, 2017, "Revisiting classifier two-sample tests".
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from ppl_dgm.core import draw
from ppl_dgm.datasets import load_dataset
from ppl_dgm.evaluation.dequantization import needs_dequantization
from ppl_dgm.evaluation.digits_classifier import (
    MAX_LEVEL,
    NUM_CLASSES,
    DigitsClassifier,
    check_digit_images,
    digits_classifier,
)

CONFIDENT_PROBABILITY = 0.9
"""A sample is labelled confidently when the classifier's largest softmax probability is at least this."""
C2ST_FOLDS = 5
"""Folds of the stratified cross-validation of the classifier two-sample test."""


@dataclass(frozen=True)
class SampleQuality:
    """Sample-quality metrics of ``samples`` against ``reference`` in the digits classifier's features.

    Attributes:
        num_samples: rows of the samples.
        num_reference: rows of the reference.
        frechet_distance: Frechet distance between Gaussians fitted to the two feature sets (0 = same mean and
            covariance; squared feature units).
        kid_mean: kernel distance (unbiased MMD^2, cubic polynomial kernel), mean over random subsets; 0 = same
            distribution, can be slightly negative.
        kid_std: its standard deviation over the subsets.
        precision: share of samples inside the reference's k-NN manifold (quality; 1 is best).
        recall: share of reference rows inside the samples' k-NN manifold (coverage; 1 is best).
        c2st_accuracy: cross-validated balanced accuracy of a logistic regression telling samples from
            reference (0.5 = indistinguishable, 1 = always told apart).
        confident_share: share of samples whose largest class probability is >= `CONFIDENT_PROBABILITY`.
        class_histogram: share of samples given each label 0..9 (argmax of the classifier).
        class_entropy: entropy of ``class_histogram`` in nats (ln 10 = 2.303 when uniform; 0 when one digit).
        k: neighbours defining the manifolds.
        kid_subset_size: rows per KID subset.
    """

    num_samples: int
    num_reference: int
    frechet_distance: float
    kid_mean: float
    kid_std: float
    precision: float
    recall: float
    c2st_accuracy: float
    confident_share: float
    class_histogram: tuple[float, ...]
    class_entropy: float
    k: int
    kid_subset_size: int

    def summary(self) -> dict[str, Any]:
        """The metrics as plain floats, ints and lists (JSON-ready)."""
        out = asdict(self)
        out["class_histogram"] = list(self.class_histogram)
        return out


class _Features(nn.Module):
    """The classifier's penultimate layer as the ``feature=`` module of torchmetrics: ``(N, 64)`` -> ``(N, d)``."""

    def __init__(self, classifier: DigitsClassifier) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x)


def as_digit_images(samples: torch.Tensor, *, dequantized: bool = False) -> torch.Tensor:
    """Any model's draws mapped onto the digits' support: integers 0..16, shape ``(N, 64)`` float.

    Values are rounded to the nearest integer (``floor`` instead when ``dequantized``: a density fitted on
    ``x + u``, ``u ~ U[0, 1)``, puts the image ``x`` at ``[x, x + 1)``) and then clamped to ``[0, 16]`` -- as
    image metrics quantize generated images to 8 bits. Every family is scored on images mapped this way.

    Args:
        samples: ``(N, 64)`` or ``(N, 8, 8)``, finite, any range.
        dequantized: whether the model is a density on dequantized data (see
            `ppl_dgm.evaluation.dequantization.needs_dequantization`).
    """
    if not isinstance(samples, torch.Tensor) or samples.dim() < 2 or samples[0].numel() != 64:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise ValueError(f"samples has shape {shape}; expected 8x8 digits of shape (N, 64) or (N, 8, 8)")
    x = samples.reshape(samples.shape[0], 64).float()
    if not bool(torch.isfinite(x).all()):
        raise ValueError("samples hold non-finite values (NaN or inf); the model's draws diverged")
    return (torch.floor(x) if dequantized else torch.round(x)).clamp(0.0, MAX_LEVEL)


def is_dequantized_density(model: Any, real: torch.Tensor, context: dict[str, torch.Tensor] | None = None) -> bool:
    """Whether ``model`` was fitted as a density on dequantized integer data ``real`` (``x + U[0, 1)``, as the SVI
    and EM engines do), so its draws map back to images by ``floor``. Models without a likelihood (GANs, EBMs)
    are fitted on the data as they are."""
    return model.capabilities.likelihood != "none" and needs_dequantization(model, real, context)


def draw_digit_images(model: Any, real: torch.Tensor, **context: torch.Tensor) -> torch.Tensor:
    """As many draws of ``model`` as ``real`` ``(N, 64)`` or ``(N, 8, 8)`` has rows, mapped onto the digits' support
    by `as_digit_images` (``floor`` for a density fitted on dequantized data, else ``round``; then clamp):
    ``(N, 64)`` float. ``context`` (e.g. ``y=labels`` of ``real`` for a conditional model) goes to
    `ppl_dgm.draw`; seed torch's generator first for reproducible draws."""
    draws = draw(model, real.shape[0], **context)
    return as_digit_images(draws, dequantized=is_dequantized_density(model, real, context))


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``(N, M)`` between rows of ``a`` ``(N, d)`` and ``b`` ``(M, d)``, computed directly (no
    matrix-product shortcut, so a row's distance to itself or to a copy is exactly 0)."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def _knn_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each row of ``features`` ``(N, d)`` to its k-th nearest other row, ``(N,)``."""
    return _distances(features, features).kthvalue(k + 1, dim=1).values


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> float:
    """Share of ``points`` ``(M, d)`` inside at least one ball ``(centres (N, d), radii (N,))``."""
    inside = _distances(points, centres) <= radii.unsqueeze(0)
    return float(inside.any(dim=1).double().mean())


def _c2st_accuracy(samples: torch.Tensor, reference: torch.Tensor, seed: int) -> float:
    """Cross-validated balanced accuracy of logistic regression on features, samples vs reference."""
    x = torch.cat([samples, reference]).cpu().double().numpy()
    y = np.r_[np.ones(len(samples), dtype=int), np.zeros(len(reference), dtype=int)]
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(C2ST_FOLDS, shuffle=True, random_state=seed)
    return float(cross_val_score(classifier, x, y, cv=folds, scoring="balanced_accuracy").mean())


def _check_sizes(n: int, name: str, k: int, kid_subset_size: int) -> None:
    if n < max(k + 1, C2ST_FOLDS):
        raise ValueError(f"{name} has {n} rows, too few for k={k} nearest neighbours and {C2ST_FOLDS}-fold "
                         f"cross-validation; pass at least {max(k + 1, C2ST_FOLDS)} rows or a smaller k")
    if n < kid_subset_size:
        raise ValueError(f"{name} has {n} rows, fewer than the KID subset size {kid_subset_size}; pass more rows "
                         f"or a smaller kid_subset_size")


def _frechet_metric(classifier: DigitsClassifier, samples: torch.Tensor, reference: torch.Tensor,
                    batch_size: int) -> FrechetInceptionDistance:
    """torchmetrics' Frechet distance in the classifier's features, updated with both sets."""
    device = classifier.head.weight.device
    metric = FrechetInceptionDistance(feature=_Features(classifier)).to(device)
    for rows, real in ((reference, True), (samples, False)):
        for batch in rows.to(device).split(batch_size):
            metric.update(batch, real=real)
    return metric


@torch.no_grad()
def frechet_distance(samples: torch.Tensor, reference: torch.Tensor, *, classifier: DigitsClassifier | None = None,
                     batch_size: int = 1024) -> float:
    """The Frechet distance alone (see `sample_quality`): cheap enough to watch a fit every epoch.

    Args:
        samples: digits ``(N, 64)`` or ``(N, 8, 8)`` with values in ``[0, 16]``, at least 2 rows.
        reference: real digits, same layout.
        classifier: the feature network (default: `digits_classifier` on the samples' device).
    """
    samples = check_digit_images(samples, "samples")
    reference = check_digit_images(reference, "reference")
    for name, rows in (("samples", samples), ("reference", reference)):
        if len(rows) < 2:
            raise ValueError(f"{name} has {len(rows)} row(s); a covariance needs at least 2")
    classifier = digits_classifier(samples.device) if classifier is None else classifier
    return float(_frechet_metric(classifier, samples, reference, batch_size).compute())


@torch.no_grad()
def sample_quality(samples: torch.Tensor, reference: torch.Tensor, *, classifier: DigitsClassifier | None = None,
                   k: int = 3, seed: int = 0, kid_subsets: int = 100, kid_subset_size: int = 200,
                   batch_size: int = 1024) -> SampleQuality:
    """Sample-quality metrics of ``samples`` against real ``reference`` digits, in the classifier's features.

    Args:
        samples: generated digits ``(N, 64)`` or ``(N, 8, 8)``, values in ``[0, 16]`` (continuous allowed; map raw
            draws with `as_digit_images` first).
        reference: real digits, same layout, ``(M, 64)`` or ``(M, 8, 8)``.
        classifier: the feature network (default: `digits_classifier` on the samples' device).
        k: neighbours defining the k-NN manifolds of precision and recall.
        seed: seeds the KID subsets and the two-sample test's folds (the result is deterministic).
        kid_subsets: random subsets KID averages over.
        kid_subset_size: rows per KID subset (at most ``min(N, M)``; 200 suits the 447 test rows).
        batch_size: rows per forward pass of the classifier.
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    samples = check_digit_images(samples, "samples")
    reference = check_digit_images(reference, "reference")
    _check_sizes(len(samples), "samples", k, kid_subset_size)
    _check_sizes(len(reference), "reference", k, kid_subset_size)
    classifier = digits_classifier(samples.device) if classifier is None else classifier
    device = classifier.head.weight.device
    samples, reference = samples.to(device), reference.to(device)
    frechet = _frechet_metric(classifier, samples, reference, batch_size)
    with warnings.catch_warnings():  # "will save all extracted features": a few hundred rows of 64 floats here
        warnings.filterwarnings("ignore", message=".*save all extracted features.*")
        kernel = KernelInceptionDistance(feature=_Features(classifier), subsets=kid_subsets,
                                         subset_size=kid_subset_size)
    kernel = kernel.to(device)
    for rows, real in ((reference, True), (samples, False)):
        for batch in rows.split(batch_size):
            kernel.update(batch, real=real)
    with torch.random.fork_rng(devices=[]):  # KID draws its subsets from torch's global generator
        torch.manual_seed(seed)
        kid_mean, kid_std = kernel.compute()

    fake_features = torch.cat([classifier.features(b) for b in samples.split(batch_size)]).double()
    real_features = torch.cat([classifier.features(b) for b in reference.split(batch_size)]).double()
    precision = _coverage(fake_features, real_features, _knn_radii(real_features, k))
    recall = _coverage(real_features, fake_features, _knn_radii(fake_features, k))

    probabilities = torch.cat([classifier(b) for b in samples.split(batch_size)]).softmax(-1)
    histogram = torch.bincount(probabilities.argmax(-1), minlength=NUM_CLASSES).double() / len(samples)
    entropy = 0.0 - sum(p * math.log(p) for p in histogram.tolist() if p > 0)
    return SampleQuality(
        num_samples=len(samples), num_reference=len(reference),
        frechet_distance=float(frechet.compute()), kid_mean=float(kid_mean), kid_std=float(kid_std),
        precision=precision, recall=recall,
        c2st_accuracy=_c2st_accuracy(fake_features, real_features, seed),
        confident_share=float((probabilities.max(-1).values >= CONFIDENT_PROBABILITY).double().mean()),
        class_histogram=tuple(histogram.tolist()), class_entropy=entropy,
        k=k, kid_subset_size=kid_subset_size,
    )


def real_data_floor(split: Literal["val", "test"] = "test", *, n: int | None = None,
                    classifier: DigitsClassifier | None = None, seed: int = 0, **options: Any) -> SampleQuality:
    """The metrics of held-out real data: a seeded subset of the digits train split against ``split``.

    What a model that draws real digits would score at this sample size: the floor every model is compared
    with (Frechet and kernel distances are biased upwards at a few hundred rows).

    Args:
        split: the reference split (``"test"``: 447 rows; ``"val"``: 350 rows).
        n: rows of the train split to draw (default: as many as ``split`` has; at most 1000).
        classifier: as for `sample_quality`.
        seed: as for `sample_quality`; it also picks the train rows.
        **options: further arguments of `sample_quality`.
    """
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test' (held out from the train split), got {split!r}")
    reference = load_dataset("digits", split).x
    train = load_dataset("digits", "train").x
    n = len(reference) if n is None else n
    if not 1 <= n <= len(train):
        raise ValueError(f"n must be between 1 and {len(train)} (the train split's rows), got {n}")
    rows = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    return sample_quality(train[rows], reference, classifier=classifier, seed=seed, **options)
