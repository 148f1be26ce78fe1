"""Multi-layer perceptron."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}


class MLP(nn.Sequential):
    """Fully connected network ``(..., in_features) -> (..., out_features)``.

    Args:
        in_features: input width.
        hidden: widths of the hidden layers (may be empty: a single linear map).
        out_features: output width.
        activation: nonlinearity between layers (none after the last).
        dropout: probability of zeroing a hidden unit in training mode.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        activation: Literal["relu", "elu", "tanh", "gelu", "silu"] = "relu",
        dropout: float = 0.0,
    ) -> None:
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        widths = [in_features, *hidden, out_features]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            if i:
                layers.append(ACTIVATIONS[activation]())
                if dropout:
                    layers.append(nn.Dropout(dropout))
            layers.append(nn.Linear(a, b))
        super().__init__(*layers)
