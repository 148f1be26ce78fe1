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
                   best_epoch: int | None = None, unit: str = "nats / example", xlabel: str = "epoch",
                   extra: dict[str, list[float]] | None = None) -> Path:
    """Plot per-epoch (or per-iteration) training and validation loss, numbered from 1; mark the restored
    best epoch (``best_epoch`` is its 0-based index into the losses).
    ``extra`` curves (an engine's other figures, e.g. a GAN's discriminator loss) go in a panel below."""
    fig, axes = plt.subplots(2 if extra else 1, 1, figsize=(6, 6.5 if extra else 4), squeeze=False, sharex=True)
    ax = axes[0, 0]
    ax.plot(range(1, len(train_loss) + 1), train_loss, label="train")
    if val_loss:
        ax.plot(range(1, len(val_loss) + 1), val_loss, label="validation")
    if best_epoch is not None:
        ax.axvline(best_epoch + 1, color="grey", linestyle=":", label=f"best epoch ({best_epoch + 1})")
    ax.set_ylabel(f"loss ({unit})")
    values = train_loss + val_loss
    if values:  # the first epochs dwarf the rest; show the interesting range
        low, high = min(values), sorted(values)[int(0.9 * (len(values) - 1))]
        ax.set_ylim(low - 0.05 * (high - low + 1e-9), high + 0.05 * (high - low + 1e-9))
    for name, curve in (extra or {}).items():
        axes[-1, 0].plot(range(1, len(curve) + 1), curve, label=name)
    for row in axes[:, 0]:
        row.legend()
        row.grid(alpha=0.3)
    axes[-1, 0].set_xlabel(xlabel)
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


def image_panels(panels: dict[str, torch.Tensor], image_shape: tuple[int, int], path: str | Path,
                 vmax: float, per_side: int = 4, columns: int = 4) -> Path:
    """One titled square grid of ``per_side**2`` images per entry of ``panels`` (name -> images ``(N, ...)``),
    side by side, on one colour scale ``[0, vmax]``: samples of several models at a glance."""
    rows = math.ceil(len(panels) / columns)
    fig = plt.figure(figsize=(columns * 2.2, rows * 2.4))
    outer = fig.add_gridspec(rows, columns, wspace=0.15, hspace=0.3)
    for index, (name, images) in enumerate(panels.items()):
        images = images.detach().float().cpu().reshape(-1, *image_shape)[: per_side * per_side]
        inner = outer[index // columns, index % columns].subgridspec(per_side, per_side, wspace=0.05, hspace=0.05)
        for cell in range(per_side * per_side):
            ax = fig.add_subplot(inner[cell // per_side, cell % per_side])
            ax.axis("off")
            if cell < images.shape[0]:
                ax.imshow(images[cell], cmap="gray_r", vmin=0, vmax=vmax)
            if cell == per_side // 2 - 1:
                ax.set_title(name, fontsize=9, loc="left" if per_side % 2 == 0 else "center",
                             x=1.0 if per_side % 2 == 0 else 0.5)
    return _save(fig, path)


def seed_spread(values: dict[str, list[float]], floor: float, path: str | Path, ylabel: str,
                floor_label: str = "floor") -> Path:
    """One column of points per entry (one point per seed, a bar at their mean) against a dashed ``floor``
    line: how far each model is from the floor, and how much the seeds disagree."""
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(values) + 1.5), 4))
    for index, points in enumerate(values.values()):
        ax.scatter([index] * len(points), points, color="C0", s=18, zorder=3)
        if points:
            mean = sum(points) / len(points)
            ax.plot([index - 0.25, index + 0.25], [mean, mean], color="C1", linewidth=2)
    ax.axhline(floor, color="grey", linestyle="--", label=f"{floor_label} ({floor:.2f})")
    ax.set_xticks(range(len(values)), list(values), rotation=45, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)
