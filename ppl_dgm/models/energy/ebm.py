"""Energy-based model (Du & Mordatch, 2019): an unnormalized density exp(-E(x)) with a neural energy."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import pyro
import torch
from torch import nn

from ppl_dgm.core import Capabilities, GenerativeModel, X, data_plate
from ppl_dgm.levels import UnitRangeLevels
from ppl_dgm.models.energy.langevin import langevin
from ppl_dgm.models.registry import register_model
from ppl_dgm.nn import MLP
from ppl_dgm.nn.mlp import ACTIVATIONS

ENERGY = "energy"
"""Name of the factor site that carries ``-E(x)``."""

Network = Literal["conv", "mlp"]
Activation = Literal["relu", "elu", "tanh", "gelu", "silu"]


def _conv_energy(side: int, widths: Sequence[int], activation: Activation) -> nn.Sequential:
    """A CNN ``(N, side*side) -> (N, 1)``: a 3x3 convolution to ``widths[0]`` channels, then one
    stride-2 3x3 convolution per further width, then a linear read-out of the flattened features."""
    layers: list[nn.Module] = [nn.Unflatten(1, (1, side, side))]
    channels = 1
    for i, width in enumerate(widths):
        layers += [nn.Conv2d(channels, width, 3, stride=1 if i == 0 else 2, padding=1), ACTIVATIONS[activation]()]
        channels = width
        if i:
            side = (side + 1) // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * side * side, 1))


@register_model("ebm")
class EBM(UnitRangeLevels, GenerativeModel):
    """Energy-based model: the story ``pyro.factor("energy", -E(x))`` with ``x`` observed.

    Du & Mordatch, "Implicit Generation and Modeling with Energy-Based Models", NeurIPS 2019.
    The density ``p(x) = exp(-E(x)) / Z`` is never normalized (``Z`` is intractable), so the
    model has no likelihood (``Capabilities(likelihood="none")``): ``ppl_dgm.log_likelihood``
    refuses it, and models are compared by sample quality. The energy network sees
    ``u = 2 x / (num_levels - 1) - 1``, the data scaled to ``[-1, 1]`` (the *sampling space* in
    which Langevin dynamics runs; a constant Jacobian, irrelevant to an unnormalized density).
    Drawn from (``x=None``), the story starts at uniform noise, runs ``sample_steps`` Langevin
    updates on ``E`` and records the result, mapped back to ``[0, num_levels - 1]``, at site
    ``"x"`` with ``pyro.deterministic``. Fitted by contrastive divergence
    (`ppl_dgm.infer.contrastive.ContrastiveEngine`).

    Args:
        input_dim: number of dimensions ``D`` of an example (data shape ``(N, D)``); a square
            number for ``network="conv"`` (an image of side ``sqrt(D)``).
        num_levels: the data lie in ``[0, num_levels - 1]`` (17 for the digits' values 0..16).
        network: ``"conv"`` (a small CNN on the image) or ``"mlp"`` (a fully connected net).
        hidden_dims: channels of the convolutions (each after the first halves the image side)
            or widths of the MLP's hidden layers.
        activation: nonlinearity; a smooth one (``"silu"``) gives Langevin dynamics smooth gradients.
        sample_steps: Langevin updates from noise when drawing.
        step_size: gradient step of the Langevin updates, in sampling-space units.
        noise: standard deviation of the Langevin noise per update, in sampling-space units.
    """

    capabilities = Capabilities(likelihood="none", data="continuous")
    default_engine = "contrastive"

    def __init__(
        self,
        input_dim: int = 64,
        num_levels: int = 17,
        network: Network = "conv",
        hidden_dims: Sequence[int] = (32, 64),
        activation: Activation = "silu",
        sample_steps: int = 40,
        step_size: float = 4.0,
        noise: float = 0.01,
    ) -> None:
        super().__init__()
        for name, value, low in (("input_dim", input_dim, 1), ("num_levels", num_levels, 2),
                                 ("sample_steps", sample_steps, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if network not in ("conv", "mlp"):
            raise ValueError(f"network must be 'conv' or 'mlp', got {network!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if not hidden_dims or any(not isinstance(w, int) or w < 1 for w in hidden_dims):
            raise ValueError(f"hidden_dims must be a non-empty list of positive integers, got {hidden_dims!r}")
        if not (step_size > 0 and noise >= 0):
            raise ValueError(f"step_size must be positive and noise non-negative, got {step_size!r} and {noise!r}")
        side = math.isqrt(input_dim)
        if network == "conv" and side * side != input_dim:
            raise ValueError(f"network='conv' needs a square image, but input_dim={input_dim} is not a square "
                             "number; use network='mlp'")
        self.input_dim, self.num_levels = input_dim, num_levels
        self.sample_steps, self.step_size, self.noise_scale = sample_steps, float(step_size), float(noise)
        self.event_shape = (input_dim,)
        self.net = (_conv_energy(side, hidden_dims, activation) if network == "conv"
                    else MLP(input_dim, hidden_dims, 1, activation))

    def energy(self, u: torch.Tensor) -> torch.Tensor:
        """Energy ``E(u)`` of points ``(N, D)`` in sampling space; shape ``(N,)``, unnormalized (nats up to
        the unknown ``log Z``)."""
        return self.net(u).squeeze(-1)

    def noise(self, n: int) -> torch.Tensor:
        """``n`` uniform points in the sampling space ``[-1, 1]^D``, shape ``(n, D)``, the model's dtype
        and device: where Langevin chains start."""
        return torch.rand(n, self.input_dim, dtype=self.dtype, device=self.device) * 2.0 - 1.0

    def langevin(self, u: torch.Tensor, steps: int | None = None, step_size: float | None = None,
                 noise: float | None = None) -> torch.Tensor:
        """Langevin dynamics on `energy` from ``u`` ``(N, D)`` in sampling space, kept in ``[-1, 1]``;
        settings default to the model's (``sample_steps``, ``step_size``, ``noise``). Shape ``(N, D)``."""
        return langevin(self.energy, u, steps=self.sample_steps if steps is None else steps,
                        step_size=self.step_size if step_size is None else step_size,
                        noise=self.noise_scale if noise is None else noise, bounds=(-1.0, 1.0))

    def model(self, x: torch.Tensor | None = None, n: int | None = None) -> torch.Tensor:
        """``x`` observed: the factor ``-E(x)`` per example. ``x=None``: ``n`` draws by Langevin
        dynamics from noise. Either way ``x`` is recorded at site ``"x"``, shape ``(N, D)``."""
        with data_plate(x, n):
            if x is None:
                x = self.from_unit(self.langevin(self.noise(n)))
            pyro.factor(ENERGY, -self.energy(self.to_unit(x)))
            return pyro.deterministic(X, x)
