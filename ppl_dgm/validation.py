"""Input checks that turn bad data into one clear ``ValueError``/``TypeError``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ppl_dgm.sites import X


def check_tensor(
    x: object,
    name: str = "x",
    *,
    event_shape: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Check that ``x`` is a non-empty, finite, floating tensor of shape ``(N, *event_shape)``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 0:
        raise ValueError(f"{name} must have a leading batch dimension, got a scalar")
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers (floats or integers), got {x.dtype}; convert it, "
                        "e.g. x.float()")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if event_shape is not None and tuple(x.shape[1:]) != tuple(event_shape):
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}, expected (N, {', '.join(map(str, event_shape))})"
        )
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} holds {bad} non-finite values (NaN or inf)")
    return x


def check_integer_levels(x: torch.Tensor, num_levels: int, name: str = "x") -> None:
    """Check that every value of ``x`` is an integer in ``0..num_levels-1``."""
    if bool((x != torch.round(x)).any()):
        raise ValueError(f"{name} must hold integers for this likelihood, found non-integer values")
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > num_levels - 1:
        raise ValueError(
            f"{name} must lie in 0..{num_levels - 1} for this likelihood, found values in "
            f"[{low:g}, {high:g}]"
        )


def check_labels(y: Any, num_classes: int, rows: int | None = None) -> torch.Tensor:
    """``y`` if it is a 1-D integer tensor (of ``rows`` labels, when given) with values in ``0..num_classes-1``,
    else a ``ValueError`` that names what is wrong."""
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.is_floating_point() or y.is_complex() \
            or y.dtype == torch.bool:
        raise ValueError(f"y must be a 1-D integer tensor of labels (e.g. torch.long), got "
                         f"{getattr(y, 'dtype', type(y).__name__)} of shape {tuple(getattr(y, 'shape', ()))}")
    if rows is not None and len(y) != rows:
        raise ValueError(f"y holds {len(y)} labels for {rows} examples: pass one label per example")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels y must lie in 0..{num_classes - 1} (num_classes={num_classes}), "
                         f"found values in [{int(y.min())}, {int(y.max())}]")
    return y


def prepare_data(data: torch.Tensor | Mapping[str, torch.Tensor], model: Any, name: str,
             device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Check ``data`` (a tensor, or a mapping with key ``"x"`` and per-example context) and move it."""
    batch = dict(data) if isinstance(data, Mapping) else {X: data}
    if X not in batch:
        raise ValueError(f"{name} must be a tensor or a mapping with key {X!r}, got keys {sorted(batch)}")
    model.check_data(batch[X])
    n = batch[X].shape[0]
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor) or value.dim() == 0 or value.shape[0] != n:
            raise ValueError(f"{name}[{key!r}] must be a tensor with {n} rows like {name}[{X!r}]")
    return {k: v.to(device, dtype if k == X or v.is_floating_point() else v.dtype) for k, v in batch.items()}


def check_device(device: str | torch.device | None) -> torch.device:
    """Parse ``device`` and check that this machine has it (``ValueError`` otherwise)."""
    if device is None:
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"not a device: {device!r} (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("CUDA is not available on this machine; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"no CUDA device {device.index}; this machine has {torch.cuda.device_count()}")
    elif device.type != "cpu":
        raise ValueError(f"unsupported device {device} (use cpu or cuda)")
    return device
