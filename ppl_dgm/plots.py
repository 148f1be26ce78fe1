"""Figures written as PNG files: training curves, sample grids, 2-D scatter plots."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def training_curve(train_loss: list[float], val_loss: list[float], path: str | Path,
                   best_epoch: int | None = None, unit: str = "nats / example", xlabel: str = "epoch") -> Path:
    """Plot per-epoch (or per-iteration) training and validation loss; mark the restored best epoch."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(range(len(train_loss)), train_loss, label="train")
    if val_loss:
        ax.plot(range(len(val_loss)), val_loss, label="validation")
    if best_epoch is not None:
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"loss ({unit})")
    values = train_loss + val_loss
    if values:  # the first epochs dwarf the rest; show the interesting range
        low, high = min(values), sorted(values)[int(0.9 * (len(values) - 1))]
        ax.set_ylim(low - 0.05 * (high - low + 1e-9), high + 0.05 * (high - low + 1e-9))
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def image_grid(images: torch.Tensor, image_shape: tuple[int, int], path: str | Path,
               vmax: float | None = None, title: str | None = None) -> Path:
    """Draw ``images`` (shape ``(N, ...)``, reshaped to ``image_shape``) as a square grid."""
    images = images.detach().float().cpu().reshape(-1, *image_shape)
    n = images.shape[0]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.8, rows * 0.8), squeeze=False)
    vmax = vmax if vmax is not None else float(images.max())
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i].numpy(), cmap="gray_r", vmin=0, vmax=vmax, interpolation="nearest")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def scatter(points: torch.Tensor, path: str | Path, reference: torch.Tensor | None = None,
            title: str | None = None) -> Path:
    """Scatter 2-D ``points`` (shape ``(N, 2)``), optionally beside ``reference`` data."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    if reference is not None:
        ref = reference.detach().float().cpu()
        ax.scatter(ref[:, 0], ref[:, 1], s=2, alpha=0.3, color="grey", label="data")
    pts = points.detach().float().cpu()
    ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.6, label="samples")
    ax.set_aspect("equal")
    ax.legend(markerscale=4)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def density_grid(rows: dict[str, list[torch.Tensor | None]], titles: list[str], path: str | Path,
                 window: float = 4.0) -> Path:
    """Write a PNG grid of density images over ``[-window, window]^2`` (each ``(H, W)``, ``z2`` along rows,
    own colour scale; ``None`` marks a panel n/a): one row per key of ``rows``, columns titled ``titles``."""
    fig, axes = plt.subplots(len(rows), len(titles), figsize=(1.8 * len(titles), 1.8 * len(rows)), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c, image in enumerate(images):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if image is None:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(image.numpy(), origin="lower", extent=[-window, window] * 2, cmap="viridis")
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(name)
    return _save(fig, path)
