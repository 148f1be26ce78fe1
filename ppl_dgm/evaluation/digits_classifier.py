"""A small CNN digits classifier trained inside the package, cached; its penultimate layer is the feature space."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from ppl_dgm.datasets import load_dataset
from ppl_dgm.io import atomic_write
from ppl_dgm.validation import check_tensor

NUM_CLASSES = 10
MAX_LEVEL = 16.0
"""Digits pixels are integers 0..16; the classifier reads values in ``[0, MAX_LEVEL]``."""
CACHE_ENV = "PPL_DGM_CACHE"
"""Environment variable naming the cache directory (default ``~/.cache/ppl_dgm``)."""
FORMAT = "ppl_dgm.digits_classifier/1"

TRAINING = {
    "seed": 0,
    "epochs": 60,
    "batch_size": 50,
    "lr": 3e-3,
    "weight_decay": 1e-2,
    "max_shift": 1,
    "dropout": 0.5,
}
"""Training settings (part of the cache key): AdamW on the digits train split, each batch shifted by up to
``max_shift`` pixels (zero padded) at random, fixed seed, on the CPU."""


def check_digit_images(x: object, name: str = "samples") -> torch.Tensor:
    """Check digits-shaped input and return it flat: ``x`` of shape ``(N, 64)`` or ``(N, 8, 8)``, finite, with
    values in ``[0, 16]`` (continuous allowed); returns a float tensor of shape ``(N, 64)``."""
    x = check_tensor(x, name)
    if tuple(x.shape[1:]) not in ((64,), (8, 8)):
        raise ValueError(f"{name} has shape {tuple(x.shape)}; expected 8x8 digits of shape (N, 64) or (N, 8, 8)")
    if not x.is_floating_point():
        x = x.float()
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > MAX_LEVEL:
        raise ValueError(f"{name} has values in [{low:g}, {high:g}], outside the digits' range [0, 16]; map a "
                         "model's draws onto the data's support with as_digit_images(samples) first")
    return x.reshape(x.shape[0], 64)


class DigitsClassifier(nn.Module):
    """A small CNN for 8x8 digits: three 3x3 convolutions, two max-pools, a 64-unit penultimate layer.

    Call `digits_classifier` for the trained, cached network rather than building this by hand.

    Args:
        dropout: dropout rate before the last layer during training.
    """

    num_features = 64
    """Width of the penultimate layer (the feature space of the sample-quality metrics)."""

    def __init__(self, dropout: float = 0.5) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 2 * 2, self.num_features), nn.ReLU(),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.num_features, NUM_CLASSES)
        self.training_seconds: float | None = None
        """Seconds the cached weights took to train (read from the cache file), or ``None``."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features: ``x`` ``(N, 64)`` or ``(N, 8, 8)`` in ``[0, 16]`` -> ``(N, 64)``."""
        return self.body(x.reshape(x.shape[0], 1, 8, 8).to(self.head.weight) / MAX_LEVEL)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, 10)`` for digits ``x`` of shape ``(N, 64)`` or ``(N, 8, 8)`` in ``[0, 16]``."""
        return self.head(self.dropout(self.features(x)))


def _shift(x: torch.Tensor, generator: torch.Generator, max_shift: int) -> torch.Tensor:
    """Each image of ``x`` ``(N, 8, 8)`` moved by a random whole number of pixels in ``[-max_shift, max_shift]``
    along each axis, with zeros shifted in."""
    padded = F.pad(x, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (x.shape[0], 2), generator=generator)
    return torch.stack([padded[i, r:r + 8, c:c + 8] for i, (r, c) in enumerate(offsets.tolist())])


def _train(x: torch.Tensor, y: torch.Tensor, settings: dict) -> DigitsClassifier:
    """Fit a `DigitsClassifier` on ``x`` ``(N, 64)`` and labels ``y`` ``(N,)`` with ``settings`` on the CPU."""
    generator = torch.Generator().manual_seed(settings["seed"])
    with torch.random.fork_rng(devices=[]), torch.enable_grad():  # also when first asked for under no_grad
        torch.manual_seed(settings["seed"])
        net = DigitsClassifier(settings["dropout"])
        optimizer = torch.optim.AdamW(net.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"])
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings["epochs"])
        images = x.reshape(-1, 8, 8)
        for _ in range(settings["epochs"]):
            order = torch.randperm(len(x), generator=generator)
            for batch in order.split(settings["batch_size"]):
                loss = F.cross_entropy(net(_shift(images[batch], generator, settings["max_shift"])), y[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            schedule.step()
    return net.eval()


def cache_dir() -> Path:
    """Where trained helpers are cached: ``$PPL_DGM_CACHE``, else ``~/.cache/ppl_dgm``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ppl_dgm").expanduser()


def _cache_key(x: torch.Tensor, y: torch.Tensor) -> str:
    """Hash of the architecture, the training settings and the training data (a stale cache never matches)."""
    digest = hashlib.sha256()
    description = {"format": FORMAT, "architecture": repr(DigitsClassifier(TRAINING["dropout"])),
                   "training": TRAINING, "torch": torch.__version__.split("+")[0]}
    digest.update(json.dumps(description, sort_keys=True).encode())
    digest.update(x.to(torch.float64).numpy().tobytes())
    digest.update(y.to(torch.int64).numpy().tobytes())
    return digest.hexdigest()


def digits_classifier(device: str | torch.device | None = None) -> DigitsClassifier:
    """The trained digits classifier in eval mode, without gradients, on ``device`` (default CPU).

    Trained once on the digits train split (deterministic: fixed seed, CPU) and cached as safetensors under
    `cache_dir`, keyed by a hash of the architecture, the training settings and the data; later calls load the
    cache (a fraction of a second). Nothing is downloaded.
    """
    train = load_dataset("digits", "train", dtype=torch.float64)
    key = _cache_key(train.x, train.y)
    path = cache_dir() / f"digits_classifier-{key[:32]}.safetensors"
    net = DigitsClassifier(TRAINING["dropout"])
    if path.is_file():
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("key") == key:
            net.load_state_dict(load_file(path))
            net.training_seconds = float(metadata["training_seconds"])
    if net.training_seconds is None:
        start = time.perf_counter()
        trained = _train(train.x.float(), train.y, TRAINING)
        seconds = time.perf_counter() - start
        state = {name: value.contiguous() for name, value in trained.state_dict().items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, safetensors_bytes(state, metadata={"key": key, "training_seconds": repr(seconds)}))
        net.load_state_dict(state)
        net.training_seconds = seconds
    net.requires_grad_(False)
    return net.eval().to(torch.device("cpu") if device is None else device)


@torch.no_grad()
def classifier_accuracy(classifier: DigitsClassifier, split: str = "test") -> float:
    """Share of the digits ``split`` (``"train"``, ``"val"`` or ``"test"``) that ``classifier`` labels correctly."""
    data = load_dataset("digits", split, device=classifier.head.weight.device)
    return float((classifier(data.x).argmax(-1) == data.y).double().mean())
