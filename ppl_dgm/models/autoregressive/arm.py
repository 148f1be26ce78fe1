"""ARM: an autoregressive model over the pixels of small images with causal (masked) convolutions."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import pyro
import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints
from torch import nn

from ppl_dgm.core import Capabilities, GenerativeModel, X, data_plate
from ppl_dgm.models.registry import register_model
from ppl_dgm.nn.masked import PixelCNN
from ppl_dgm.validation import check_integer_levels, check_tensor


class RasterCategorical(TorchDistribution):
    """``p(x) = prod_i Categorical(x_i | logits_fn(x)_i)`` over ``D`` pixels in raster order.

    ``logits_fn`` maps data ``(M, D)`` (float, values ``0..K-1``) to logits ``(M, D, K)`` whose row ``i``
    depends only on ``x_{<i}``. `log_prob` is one teacher-forced pass; `sample` runs ``D`` passes,
    drawing pixel ``i`` at pass ``i``. Event shape ``(D,)``; values are floats ``0..K-1``.

    Args:
        logits_fn: the causal network, ``(M, D) -> (M, D, K)``.
        num_levels: ``K``.
        num_dims: ``D``.
        batch_shape: batch shape of the distribution (``(N,)`` inside the data plate).
        dtype: floating dtype of samples.
        device: device of samples.
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, logits_fn: Callable[[torch.Tensor], torch.Tensor], num_levels: int, num_dims: int,
                 batch_shape: Sequence[int], dtype: torch.dtype, device: torch.device, validate_args=None) -> None:
        self.logits_fn, self.num_levels, self.num_dims = logits_fn, num_levels, num_dims
        self.dtype, self.device = dtype, device
        super().__init__(torch.Size(batch_shape), torch.Size([num_dims]), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        return constraints.independent(constraints.integer_interval(0, self.num_levels - 1), 1)

    def expand(self, batch_shape, _instance=None) -> RasterCategorical:
        return RasterCategorical(self.logits_fn, self.num_levels, self.num_dims, batch_shape, self.dtype,
                                 self.device, validate_args=self._validate_args)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``sum_i log p(x_i | x_{<i})`` in nats; ``value (..., D) -> (...)``."""
        if self._validate_args:
            self._validate_sample(value)
        shape = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        rows = value.expand(*shape, self.num_dims).reshape(-1, self.num_dims)
        log_probs = self.logits_fn(rows).log_softmax(-1)
        picked = log_probs.gather(-1, rows.long().unsqueeze(-1)).squeeze(-1)
        return picked.sum(-1).reshape(shape)

    @torch.no_grad()
    def sample(self, sample_shape: Sequence[int] = ()) -> torch.Tensor:
        """Draw pixel by pixel in raster order (``D`` network passes); shape ``sample_shape + batch_shape + (D,)``."""
        shape = self._extended_shape(torch.Size(sample_shape))
        rows = torch.zeros(math.prod(shape[:-1]), self.num_dims, dtype=self.dtype, device=self.device)
        for i in range(self.num_dims):
            logits = self.logits_fn(rows)[:, i]
            rows[:, i] = torch.distributions.Categorical(logits=logits).sample().to(self.dtype)
        return rows.reshape(shape)


@register_model("arm")
class ARM(GenerativeModel):
    """Autoregressive model over pixels in raster order, PixelCNN-style (van den Oord, Kalchbrenner &
    Kavukcuoglu, 2016, Pixel Recurrent Neural Networks, ICML; van den Oord et al., 2016, Conditional
    Image Generation with PixelCNN Decoders, NeurIPS; Tomczak, 2022, Deep Generative Modeling, ch. 2).

    ``p(x) = prod_{i=1}^{D} Categorical(x_i | softmax(f(x_{<i})_i))`` with ``f`` a `PixelCNN` (one type-A
    masked convolution, gated residual blocks of type-B masked convolutions, 1x1 output layers) on the
    image (each pixel as its scaled value and/or one-hot level, see ``encoding``), plus a learned logit
    bias per pixel and level. The likelihood is exact and discrete.
    Data are flat, ``(N, H * W)``, integer values ``0..num_levels-1``. Sampling takes ``D = H * W`` passes.
    The model also offers the entropy-coding interface (``to_symbols``, ``from_symbols``,
    ``coding_steps``, ``coding_log_probs``): one pixel per step.

    Args:
        image_shape: ``(H, W)``.
        num_levels: ``K``, the number of integer values a pixel takes.
        channels: hidden channels of the network.
        num_blocks: gated residual blocks.
        first_kernel_size: odd side of the first (type-A) kernel; ``None``: ``2 * max(H, W) - 1``, so that
            the first layer already sees every earlier pixel (no blind spot).
        kernel_size: odd side of the type-B kernels in the blocks.
        dropout: dropout rate while fitting (a regularizer for small data sets).
        encoding: what the network sees of a pixel: ``"one_hot"`` (``K`` channels), ``"scalar"`` (one channel,
            ``x / (K - 1)``: neighbouring levels look alike) or ``"both"`` (``K + 1`` channels).
    """

    capabilities = Capabilities(likelihood="exact", data="discrete")

    def __init__(
        self,
        image_shape: Sequence[int] = (8, 8),
        num_levels: int = 17,
        channels: int = 64,
        num_blocks: int = 4,
        first_kernel_size: int | None = None,
        kernel_size: int = 3,
        dropout: float = 0.3,
        encoding: Literal["one_hot", "scalar", "both"] = "scalar",
    ) -> None:
        super().__init__()
        image_shape = tuple(image_shape)
        if len(image_shape) != 2 or not all(isinstance(s, int) and s >= 1 for s in image_shape):
            raise ValueError(f"image_shape must be two positive integers (H, W), got {image_shape!r}")
        for name, value, low in (("num_levels", num_levels, 2), ("channels", channels, 1),
                                 ("num_blocks", num_blocks, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if encoding not in ("one_hot", "scalar", "both"):
            raise ValueError(f"encoding must be one_hot, scalar or both, got {encoding!r}")
        first_kernel_size = first_kernel_size if first_kernel_size is not None else 2 * max(image_shape) - 1
        self.image_shape, self.num_levels, self.encoding = image_shape, num_levels, encoding
        self.event_shape = (math.prod(image_shape),)
        in_channels = (num_levels if encoding != "scalar" else 0) + (encoding != "one_hot")
        self.network = PixelCNN(in_channels, num_levels, channels, num_blocks, first_kernel_size, kernel_size,
                                dropout)
        self.position_bias = nn.Parameter(torch.zeros(self.event_shape[0], num_levels))

    def check_data(self, x: torch.Tensor) -> None:
        """Reject data of the wrong shape or with values outside the integers ``0..num_levels-1``."""
        check_tensor(x, "x", event_shape=self.event_shape)
        try:
            check_integer_levels(x, self.num_levels)
        except ValueError as error:
            raise ValueError(f"{error}; quantize the data to the integers 0..{self.num_levels - 1} first, or build "
                             "the ARM with a num_levels that covers them") from None

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``p(x_i | x_{<i})`` for every pixel: data ``(N, D)`` -> ``(N, D, K)``; row ``i`` of an
        example depends only on its pixels ``< i``."""
        dtype = self.position_bias.dtype
        channels = []
        if self.encoding != "scalar":
            channels.append(F.one_hot(x.long(), self.num_levels).to(dtype).transpose(1, 2))
        if self.encoding != "one_hot":
            channels.append((x.to(dtype) / (self.num_levels - 1)).unsqueeze(1))
        images = torch.cat(channels, 1).unflatten(2, self.image_shape)
        return self.network(images).flatten(2).transpose(1, 2) + self.position_bias

    def model(self, x: torch.Tensor | None = None, n: int | None = None) -> torch.Tensor:
        """``x ~ RasterCategorical(logits)`` for each example in plate ``"data"`` (event ``(D,)``)."""
        with data_plate(x, n):
            rows = x.shape[0] if x is not None else n
            observation = RasterCategorical(self.logits, self.num_levels, self.event_shape[0], (rows,),
                                            self.position_bias.dtype, self.position_bias.device)
            return pyro.sample(X, observation, obs=x)

    @property
    def num_symbols(self) -> int:
        """Alphabet size of every symbol for entropy coding: ``num_levels``."""
        return self.num_levels

    def to_symbols(self, x: torch.Tensor) -> torch.Tensor:
        """Data ``(N, D)`` -> integer symbols ``(N, D)`` in ``[0, K)`` (the pixel values);
        ``ValueError`` for data the model cannot score (see `check_data`)."""
        self.check_data(x)
        return x.long()

    def from_symbols(self, s: torch.Tensor) -> torch.Tensor:
        """Symbols ``(N, D)`` -> data ``(N, D)`` in the model's float dtype; the inverse of `to_symbols`."""
        return s.to(self.position_bias.dtype)

    def coding_steps(self) -> int:
        """Sequential decoding steps: ``D``, one pixel per step in raster order."""
        return self.event_shape[0]

    @torch.no_grad()
    def coding_log_probs(self, s: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel ``step`` and its normalized log-probabilities given pixels ``< step``: symbols ``(N, D)`` ->
        (dims ``(1,)``, log-probabilities ``(N, 1, K)``, nats). Pixels ``>= step`` are set to zero before
        the pass, so the output is bit-identical whatever ``s`` holds there. Call ``eval()`` first
        (dropout would make encoder and decoder disagree)."""
        if not 0 <= step < self.coding_steps():
            raise ValueError(f"step must lie in 0..{self.coding_steps() - 1}, got {step!r}")
        known = s.clone()
        known[:, step:] = 0
        log_probs = self.logits(self.from_symbols(known))[:, step].log_softmax(-1)
        return torch.tensor([step], device=s.device), log_probs.unsqueeze(1)
