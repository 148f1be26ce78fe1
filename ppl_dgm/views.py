"""Representation views of a fitted VAE-family model: latent traversals, interpolations, class-conditional
grids, reconstructions and a 2-D latent map, each returned as data and written as a PNG.

Every view reads a model only through the family's interface (see `ppl_dgm.models.vae.base.AmortizedVAE`):
``posterior_mean(x, **ctx) -> (N, k)`` (the code of an image), ``decode_mean(z, **ctx) -> (N, D)`` (the mean
image of a code, in data units ``0..num_levels-1``), and where present ``kl_per_dim`` and ``reconstruct``.
A conditional model (``capabilities.conditional``) is given its labels as ``y``. Images are ``(..., D)``
tensors drawn as ``image_shape`` pictures (8x8 for the digits).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from pyro import poutine

from ppl_dgm.core import Z, draw
from ppl_dgm.plots import _save, plt

Interpolation = Literal["linear", "slerp"]
Projection = Literal["none", "pca"]
INTERFACE = ("posterior_mean", "decode_mean")
"""Methods a model needs for the views (the VAE family's code interface)."""


def in_eval_mode(view: Callable) -> Callable:
    """Run ``view(model, ...)`` without gradients and with ``model`` in eval mode (no dropout), restoring its
    training flag afterwards."""

    @functools.wraps(view)
    def run(model: Any, *args: Any, **kwargs: Any) -> Any:
        was_training = isinstance(model, torch.nn.Module) and model.training
        if isinstance(model, torch.nn.Module):
            model.eval()
        try:
            with torch.no_grad():
                return view(model, *args, **kwargs)
        finally:
            if was_training:
                model.train()

    return run


def check_view_model(model: Any) -> None:
    """``TypeError`` naming what is missing unless ``model`` has the VAE family's code interface."""
    missing = [name for name in INTERFACE if not callable(getattr(model, name, None))]
    if missing:
        raise TypeError(f"{type(model).__name__} has no {' and no '.join(missing)}: the representation views need a "
                        "model with an encoder and a decoder (the VAE family's posterior_mean(x) -> (N, k) and "
                        "decode_mean(z) -> (N, D)); a GAN, a flow or a mixture has no such code")


def label_context(model: Any, y: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """``{"y": y}`` for a conditional model (``ValueError`` without labels), ``{}`` for any other."""
    if not getattr(model.capabilities, "conditional", False):
        return {}
    if y is None:
        raise ValueError(f"{type(model).__name__} is conditional on labels: pass the labels y (N,) of the images")
    return {"y": y}


def codes(model: Any, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Posterior means ``(N, k)`` of images ``x`` ``(N, D)`` (labels ``y`` ``(N,)`` for a conditional model)."""
    check_view_model(model)
    z = model.posterior_mean(x, **label_context(model, y))
    if z.dim() != 2 or z.shape[0] != x.shape[0]:
        raise ValueError(f"{type(model).__name__}.posterior_mean returned shape {tuple(z.shape)}; the views need "
                         f"one code vector per image, ({x.shape[0]}, k)")
    return z


@in_eval_mode
def rank_latent_dims(model: Any, x: torch.Tensor, y: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Latent dimensions from most to least active over images ``x`` ``(N, D)``.

    Returns ``(order (k,), score (k,), criterion)``: the mean ``KL(q(z_j | x) || p(z_j))`` in nats per
    dimension where ``model.kl_per_dim`` gives one per dimension of the code (``(N, k)``), else the
    variance of ``posterior_mean`` over ``x`` (in squared code units; e.g. a hierarchical model whose KL
    covers more layers than its code); ``criterion`` names which.
    """
    z = codes(model, x, y)
    kl_per_dim = getattr(model, "kl_per_dim", None)
    kl = kl_per_dim(x, **label_context(model, y)) if callable(kl_per_dim) else None
    if kl is not None and kl.shape == z.shape:
        score, criterion = kl.mean(0), "mean KL per dimension (nats)"
    else:
        score, criterion = z.var(0), "variance of the posterior mean"
    return torch.argsort(score, descending=True, stable=True), score, criterion


def _image_shape(model: Any, image_shape: tuple[int, int] | None) -> tuple[int, int]:
    if image_shape is not None:
        return tuple(image_shape)
    side = math.isqrt(int(getattr(model, "input_dim", 0)))
    if side < 1 or side * side != getattr(model, "input_dim", 0):
        raise ValueError(f"pass image_shape: {type(model).__name__} has no square input_dim to draw images of")
    return side, side


def _vmax(model: Any, images: torch.Tensor, vmax: float | None) -> float:
    if vmax is not None:
        return vmax
    levels = getattr(model, "num_levels", None)
    return float(levels - 1) if levels else float(images.max())


GRAYS = plt.get_cmap("gray_r").with_extremes(bad="white")
"""Colour map of the image tables: dark ink on white, blank (NaN) gaps white."""


def _mosaic(images: torch.Tensor, image_shape: tuple[int, int]) -> torch.Tensor:
    """Images ``(R, C, D)`` tiled into one ``(R (h + 1) - 1, C (w + 1) - 1)`` array, a NaN pixel between tiles."""
    (h, w), (rows, columns) = image_shape, images.shape[:2]
    tiles = images.detach().float().cpu().reshape(rows, columns, h, w)
    tiles = torch.nn.functional.pad(tiles, (0, 1, 0, 1), value=float("nan"))
    return tiles.permute(0, 2, 1, 3).reshape(rows * (h + 1), columns * (w + 1))[:-1, :-1]


def image_rows(images: torch.Tensor, image_shape: tuple[int, int], path: str | Path, vmax: float,
               row_labels: list[str] | None = None, column_labels: list[str] | None = None,
               title: str | None = None) -> Path:
    """Write images ``(R, C, D)`` as an ``R x C`` table of ``image_shape`` pictures (one mosaic, a blank
    pixel between tiles) on one colour scale ``[0, vmax]``, rows and columns optionally labelled; returns
    the PNG's path."""
    (h, w), (rows, columns) = image_shape, images.shape[:2]
    fig, ax = plt.subplots(figsize=(0.45 * columns + 0.8, 0.45 * rows + 0.6))
    ax.imshow(_mosaic(images, image_shape).numpy(), cmap=GRAYS, vmin=0, vmax=vmax, interpolation="nearest")
    ax.set_yticks([r * (h + 1) + (h - 1) / 2 for r in range(rows)] if row_labels else [], row_labels or [],
                  fontsize=8)
    ax.set_xticks([c * (w + 1) + (w - 1) / 2 for c in range(columns)] if column_labels else [],
                  column_labels or [], fontsize=7, rotation=90 if column_labels and
                  max(map(len, column_labels)) > 3 else 0)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_xlabel(title, fontsize=9)
    return _save(fig, path)


@in_eval_mode
def latent_traversals(model: Any, x: torch.Tensor, path: str | Path, *, y: torch.Tensor | None = None,
                      data: torch.Tensor | None = None, data_y: torch.Tensor | None = None,
                      dims: list[int] | None = None, num_dims: int = 8, steps: int = 9, span: float = 2.5,
                      image_shape: tuple[int, int] | None = None, vmax: float | None = None) -> torch.Tensor:
    """Vary one latent dimension at a time around the code of one image; one row per dimension.

    Row ``r`` decodes ``z0 + t * s_j * e_j`` for ``t`` in ``linspace(-span, span, steps)``, where ``z0`` is
    the posterior mean of ``x`` (one image, shape ``(D,)`` or ``(1, D)``; its label ``y`` ``(1,)`` for a
    conditional model), ``j`` the row's dimension and ``s_j`` the standard deviation of the posterior
    means over ``data`` (``(M, D)``, labels ``data_y``; default ``x`` alone, then ``s_j = 1``). With odd
    ``steps`` the middle column is the image's own reconstruction. ``dims`` default: the ``num_dims`` most
    active dimensions by `rank_latent_dims` over ``data``.

    Returns the decoded images ``(len(dims), steps, D)`` in data units; writes the table to ``path``.
    """
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    x = x.reshape(1, -1)
    data, data_y = (x, y) if data is None else (data, data_y)
    z0 = codes(model, x, y)[0]
    spread = codes(model, data, data_y).std(0) if len(data) > 1 else torch.ones_like(z0)
    if dims is None:
        dims = rank_latent_dims(model, data, data_y)[0][:num_dims].tolist()
    if not dims or not all(0 <= d < len(z0) for d in dims):
        raise ValueError(f"dims must be a non-empty list of latent dimensions in 0..{len(z0) - 1}, got {dims}")
    offsets = torch.linspace(-span, span, steps, dtype=z0.dtype, device=z0.device)
    z = z0.repeat(len(dims), steps, 1)
    for row, d in enumerate(dims):
        z[row, :, d] = z0[d] + offsets * spread[d]
    row_y = None if y is None else y.reshape(-1)[:1].repeat(len(dims) * steps)
    images = model.decode_mean(z.reshape(-1, len(z0)), **label_context(model, row_y))
    images = images.reshape(len(dims), steps, -1)
    image_rows(images, _image_shape(model, image_shape), path, _vmax(model, images, vmax),
               row_labels=[f"z{d}" for d in dims], column_labels=[f"{t:+.1f}σ" for t in offsets.tolist()],
               title="latent traversals (offsets in std of the codes)")
    return images


def interpolate(a: torch.Tensor, b: torch.Tensor, steps: int, method: Interpolation = "linear") -> torch.Tensor:
    """Codes from ``a`` to ``b`` (each ``(P, k)``): ``(P, steps, k)``, exactly ``a`` and ``b`` at the ends.

    ``"linear"``: ``(1 - t) a + t b``. ``"slerp"`` (Shoemake, 1985; White, 2016, "Sampling generative
    networks"): ``sin((1 - t) w) / sin(w) a + sin(t w) / sin(w) b`` with ``w`` the angle between ``a`` and
    ``b``; it stays on the sphere between unit codes (a hyperspherical latent) and falls back to linear
    where ``a`` and ``b`` are (anti)parallel within float precision.
    """
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    if method not in ("linear", "slerp"):
        raise ValueError(f"method must be 'linear' or 'slerp', got {method!r}")
    t = torch.linspace(0, 1, steps, dtype=a.dtype, device=a.device).reshape(1, steps, 1)
    a, b = a.unsqueeze(1), b.unsqueeze(1)
    linear = (1 - t) * a + t * b
    if method == "linear":
        return linear
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=-1).unsqueeze(-1).clamp(-1, 1)
    omega = torch.arccos(cosine)
    sine = torch.sin(omega)
    safe = sine.abs() > 1e-6
    sine = torch.where(safe, sine, torch.ones_like(sine))
    spherical = torch.sin((1 - t) * omega) / sine * a + torch.sin(t * omega) / sine * b
    return torch.where(safe, spherical, linear)


@in_eval_mode
def interpolations(model: Any, x_a: torch.Tensor, x_b: torch.Tensor, path: str | Path, *,
                   y: torch.Tensor | None = None, steps: int = 10, method: Interpolation = "linear",
                   image_shape: tuple[int, int] | None = None, vmax: float | None = None) -> torch.Tensor:
    """Decode the path between the codes of image pairs ``x_a``, ``x_b`` (each ``(P, D)``), see `interpolate`.

    A conditional model encodes and decodes pair ``p`` with label ``y[p]`` (``(P,)``): pick pairs of one
    class. Returns images ``(P, steps + 2, D)``: ``x_a``, the ``steps`` decoded codes (the first and last are
    the reconstructions of ``x_a`` and ``x_b``), ``x_b``; writes the table to ``path``.
    """
    if x_a.shape != x_b.shape:
        raise ValueError(f"x_a and x_b must have the same shape, got {tuple(x_a.shape)} and {tuple(x_b.shape)}")
    path_codes = interpolate(codes(model, x_a, y), codes(model, x_b, y), steps, method)
    pairs, _, k = path_codes.shape
    labels = None if y is None else y.repeat_interleave(steps)
    decoded = model.decode_mean(path_codes.reshape(-1, k), **label_context(model, labels)).reshape(pairs, steps, -1)
    images = torch.cat([x_a.unsqueeze(1).to(decoded), decoded, x_b.unsqueeze(1).to(decoded)], dim=1)
    columns = ["x_a", *[f"{t:.2f}" for t in torch.linspace(0, 1, steps).tolist()], "x_b"]
    image_rows(images, _image_shape(model, image_shape), path, _vmax(model, images, vmax), column_labels=columns,
               title=f"{method} interpolation between the codes of two test digits")
    return images


@in_eval_mode
def class_conditional_grid(model: Any, path: str | Path, *, num_classes: int = 10, per_class: int = 10,
                           kind: Literal["mean", "sample"] = "mean", image_shape: tuple[int, int] | None = None,
                           vmax: float | None = None) -> torch.Tensor:
    """Images of a conditional model for each label ``0..num_classes-1`` (one row each), ``z`` drawn from
    the prior (seed with ``torch.manual_seed`` first).

    ``kind="mean"``: the story run forward with the labels, its prior draw at site ``"z"`` decoded by
    ``decode_mean`` (the mean image); ``"sample"``: `ppl_dgm.draw` with the labels (a draw of ``p(x | y, z)``,
    pixel noise included). Returns images ``(num_classes, per_class, D)``; writes the table to ``path``.
    """
    if not getattr(model.capabilities, "conditional", False):
        raise ValueError(f"{type(model).__name__} is not conditional on labels (capabilities.conditional is "
                         "False): a class-conditional grid needs a model like the CVAE")
    labels = torch.arange(num_classes, device=model.device).repeat_interleave(per_class)
    if kind == "sample":
        images = draw(model, len(labels), y=labels)
    elif kind == "mean":
        check_view_model(model)
        story = poutine.condition(model.model, data=model.point_estimate())
        trace = poutine.trace(story).get_trace(None, n=len(labels), y=labels)
        if Z not in trace.nodes:
            raise ValueError(f"{type(model).__name__}'s story has no site {Z!r} to decode; use kind='sample'")
        images = model.decode_mean(trace.nodes[Z]["value"], y=labels)
    else:
        raise ValueError(f"kind must be 'mean' or 'sample', got {kind!r}")
    images = images.reshape(num_classes, per_class, -1)
    image_rows(images, _image_shape(model, image_shape), path, _vmax(model, images, vmax),
               row_labels=[f"y={c}" for c in range(num_classes)],
               title=f"class-conditional {'mean images' if kind == 'mean' else 'draws'}, z from the prior")
    return images


@in_eval_mode
def reconstructions(model: Any, x: torch.Tensor, path: str | Path, *, y: torch.Tensor | None = None,
                    per_row: int = 8, image_shape: tuple[int, int] | None = None,
                    vmax: float | None = None) -> torch.Tensor:
    """Images ``x`` ``(N, D)`` beside their reconstructions (the mean of ``p(x | z)`` at the posterior mean,
    ``model.reconstruct`` where the model has one). Returns ``(N, 2, D)`` pairs ``(x, x_hat)``; writes them
    ``per_row`` pairs a row to ``path``."""
    context = label_context(model, y)
    z = codes(model, x, y)
    rebuild = getattr(model, "reconstruct", None)
    x_hat = rebuild(x, **context) if callable(rebuild) else model.decode_mean(z, **context)
    pairs = torch.stack([x.to(x_hat), x_hat], dim=1)
    rows = math.ceil(len(x) / per_row)
    padded = torch.cat([pairs, pairs.new_zeros(rows * per_row - len(x), 2, pairs.shape[-1])])
    image_rows(padded.reshape(rows, 2 * per_row, -1), _image_shape(model, image_shape), path,
               _vmax(model, pairs, vmax), column_labels=["x", "x̂"] * per_row, title="test digits | reconstructions")
    return pairs


class LatentMap(NamedTuple):
    """What `latent_map` draws: ``points`` ``(N, 2)`` plane coordinates of the codes, their ``labels``
    ``(N,)``, the decoded ``grid`` ``(G, G, D)`` (row ``i`` at ``v[i]``, column ``j`` at ``u[j]``; ``None``
    with ``grid_size=0``), the axes ``u``, ``v`` ``(G,)``, and the plane ``origin + [u, v] @ basis.T`` in code
    space (``origin`` ``(k,)``, ``basis`` ``(k, 2)``; the identity for a 2-D code)."""

    points: torch.Tensor
    labels: torch.Tensor
    grid: torch.Tensor | None
    u: torch.Tensor
    v: torch.Tensor
    origin: torch.Tensor
    basis: torch.Tensor
    projection: str


@in_eval_mode
def latent_map(model: Any, x: torch.Tensor, labels: torch.Tensor, path: str | Path, *,
               projection: Projection = "none", grid_size: int = 12, image_shape: tuple[int, int] | None = None,
               vmax: float | None = None) -> LatentMap:
    """Scatter of the posterior means of ``x`` ``(N, D)`` colored by ``labels`` ``(N,)`` (digit classes), beside
    the images decoded over a ``grid_size x grid_size`` grid spanning the 1st-99th percentiles of the codes.

    Needs a 2-D code (fit ``latent_dim=2``); ``projection="pca"`` maps a ``k``-D code onto its first two
    principal components instead (and decodes that plane through the mean code), titled as a projection.
    A conditional model is encoded with ``labels`` as ``y``; its grid is not drawn (the decoder needs a label).
    """
    z = codes(model, x, labels)
    k = z.shape[1]
    if projection == "none":
        if k != 2:
            raise ValueError(f"the latent map draws a 2-D code and {type(model).__name__} has latent_dim={k}: fit it "
                             "with latent_dim=2 (e.g. -O latent_dim=2), or ask for the PCA projection "
                             "(projection='pca', --pca)")
        origin, basis = z.new_zeros(2), torch.eye(2, dtype=z.dtype, device=z.device)
    elif projection == "pca":
        if k < 2:
            raise ValueError(f"a PCA projection needs a code of at least 2 dimensions, got {k}")
        origin = z.mean(0)
        basis = torch.linalg.svd(z - origin, full_matrices=False).Vh[:2].T
    else:
        raise ValueError(f"projection must be 'none' or 'pca', got {projection!r}")
    points = (z - origin) @ basis
    low, high = torch.quantile(points, 0.01, dim=0), torch.quantile(points, 0.99, dim=0)
    u = torch.linspace(float(low[0]), float(high[0]), max(grid_size, 1), dtype=z.dtype, device=z.device)
    v = torch.linspace(float(low[1]), float(high[1]), max(grid_size, 1), dtype=z.dtype, device=z.device)
    grid = None
    if grid_size > 0 and not getattr(model.capabilities, "conditional", False):
        vv, uu = torch.meshgrid(v, u, indexing="ij")
        plane = origin + torch.stack([uu, vv], dim=-1).reshape(-1, 2) @ basis.T
        grid = model.decode_mean(plane).reshape(grid_size, grid_size, -1)
    result = LatentMap(points, labels, grid, u, v, origin, basis, projection)
    axis_names = ("z0", "z1") if projection == "none" else ("PC1", "PC2")
    title = "2-D latent" if projection == "none" else f"PCA projection of the {k}-D posterior means (not a 2-D latent)"
    _draw_map(result, _image_shape(model, image_shape), path, _vmax(model, x, vmax), axis_names, title)
    return result


def _draw_map(view: LatentMap, image_shape: tuple[int, int], path: str | Path, vmax: float,
              axis_names: tuple[str, str], title: str) -> Path:
    panels = 1 if view.grid is None else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.8), squeeze=False)
    points, labels = view.points.detach().cpu(), view.labels.detach().cpu()
    cmap = plt.get_cmap("tab10")
    ax = axes[0, 0]
    for c in sorted(set(labels.tolist())):
        chosen = labels == c
        ax.scatter(points[chosen, 0], points[chosen, 1], s=6, alpha=0.8, color=cmap(int(c) % 10), label=str(c))
    ax.legend(markerscale=2, fontsize=7, title="label", loc="best")
    ax.set_title("posterior means colored by label", fontsize=9)
    if view.grid is not None:
        g = view.grid.shape[0]
        mosaic = _mosaic(view.grid.flip(0), image_shape)  # top row of the mosaic: the largest v
        u, v = view.u.cpu(), view.v.cpu()
        du, dv = (u[-1] - u[0]) / max(g - 1, 1), (v[-1] - v[0]) / max(g - 1, 1)
        extent = [float(u[0] - du / 2), float(u[-1] + du / 2), float(v[0] - dv / 2), float(v[-1] + dv / 2)]
        axes[0, 1].imshow(mosaic.numpy(), cmap=GRAYS, vmin=0, vmax=vmax, extent=extent, aspect="auto",
                          interpolation="nearest")
        axes[0, 1].set_title("decoded mean images over the plane", fontsize=9)
        ax.set_xlim(extent[:2])
        ax.set_ylim(extent[2:])
    for panel in axes[0]:
        panel.set_xlabel(axis_names[0])
        panel.set_ylabel(axis_names[1])
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
