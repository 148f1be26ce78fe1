"""Models of data on the levels ``0..num_levels-1`` (the digits' 0..16) whose networks work in ``[-1, 1]``."""

from __future__ import annotations

import torch

from ppl_dgm.validation import check_tensor


class UnitRangeLevels:
    """Mixin of models with attributes ``num_levels`` and ``event_shape``: their ``check_data`` (shape,
    finiteness, range ``[0, num_levels - 1]``, continuous values allowed) and the affine map between the
    data range and the networks' space ``[-1, 1]``."""

    num_levels: int
    event_shape: tuple[int, ...]

    def check_data(self, x: torch.Tensor) -> None:
        """Reject data of the wrong shape, non-finite values, or values outside ``[0, num_levels - 1]``."""
        check_tensor(x, "x", event_shape=self.event_shape)
        low, high = float(x.min()), float(x.max())
        if low < 0 or high > self.num_levels - 1:
            raise ValueError(f"x must lie in [0, {self.num_levels - 1}] (num_levels={self.num_levels}), found values "
                             f"in [{low:g}, {high:g}]; rescale the data or set num_levels")

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Data ``(N, D)`` in ``[0, num_levels - 1]`` -> ``[-1, 1]``, same shape."""
        return 2.0 * x / (self.num_levels - 1) - 1.0

    def from_unit(self, u: torch.Tensor) -> torch.Tensor:
        """``(u + 1) (num_levels - 1) / 2`` clamped to ``[0, num_levels - 1]``: ``[-1, 1]`` -> data, same shape."""
        return ((u + 1.0) * (0.5 * (self.num_levels - 1))).clamp(0.0, self.num_levels - 1)
