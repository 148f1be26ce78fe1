"""What a compressed stream costs: its size next to the model's exact NLL and next to general-purpose
compressors (gzip, bz2, lzma, PNG) on the same integer data."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ppl_dgm.evaluation.compression import Codable, coding_mode, compress, decompress, header_size


@dataclass(frozen=True)
class CompressionReport:
    """What a stream of `compress` costs next to the model's NLL and general-purpose compressors.

    Attributes:
        num_images: ``N``; ``num_dims``: values per example (``prod(event_shape)``).
        total_bytes: the whole stream; ``header_bytes``: its header; ``payload_bits``: ``8 * (total - header)``.
        nll_bits: ``-sum_n log2 p(x_n)`` under ``model.log_prob`` (exact), bits for all ``N`` examples.
        ratio: ``payload_bits / nll_bits`` (1 is ideal); ``ratio_total``: the same with the header counted.
        decoded_equal: `decompress` gave back exactly ``x``.
        baselines: bytes of the same data by gzip, bz2, lzma and PNG (see `baseline_sizes`).
        encode_seconds, decode_seconds: wall time of `compress` and `decompress`.
        stream: the bytes `compress` wrote (left out of `as_dict`).
    """

    num_images: int
    num_dims: int
    total_bytes: int
    header_bytes: int
    payload_bits: int
    nll_bits: float
    ratio: float
    ratio_total: float
    decoded_equal: bool
    baselines: dict[str, int] = field(default_factory=dict)
    encode_seconds: float = 0.0
    decode_seconds: float = 0.0
    stream: bytes = field(default=b"", repr=False)

    @property
    def payload_bits_per_image(self) -> float:
        """Payload bits per example."""
        return self.payload_bits / self.num_images

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly fields, plus ``payload_bits_per_image`` and ``nll_bits_per_image``."""
        fields = {k: v for k, v in asdict(self).items() if k != "stream"}
        return {**fields, "payload_bits_per_image": self.payload_bits_per_image,
                "nll_bits_per_image": self.nll_bits / self.num_images}

    def table(self) -> str:
        """A text table: method, bytes, bits per example, bits per dim, size relative to the model's stream."""
        rows = [("model NLL (ideal)", self.nll_bits / 8), ("ANS (this stream)", float(self.total_bytes)),
                *((name, float(size)) for name, size in self.baselines.items())]
        lines = [f"{'method':<20}{'bytes':>10}{'bits/image':>12}{'bits/dim':>10}{'x ANS':>8}"]
        for name, size in rows:
            bits = 8 * size / self.num_images
            lines.append(f"{name:<20}{size:>10.0f}{bits:>12.2f}{bits / self.num_dims:>10.3f}"
                         f"{size / self.total_bytes:>8.2f}")
        return "\n".join(lines)


def _image_shape(event_shape: tuple[int, ...]) -> tuple[int, int] | None:
    if len(event_shape) == 2:
        return event_shape
    side = int(round(event_shape[0] ** 0.5)) if len(event_shape) == 1 else 0
    return (side, side) if side > 1 and side * side == event_shape[0] else None


def baseline_sizes(x: np.ndarray, image_shape: tuple[int, int] | None) -> dict[str, int]:
    """Bytes of integer data ``x`` ``(N, ...)`` compressed by gzip, bz2 and lzma (strongest presets), one byte
    per value when they lie in ``0..255`` (else 4 little-endian bytes) and, in the one-byte case with
    ``image_shape`` ``(H, W)`` covering an example, by PNG: each example an 8-bit grayscale PNG (sizes summed,
    key ``png``) and all examples side by side in one PNG (key ``png_strip``), written by Pillow."""
    raw = x.astype(np.uint8 if x.min() >= 0 and x.max() <= 255 else "<i4")
    data = raw.tobytes()
    sizes = {"gzip": len(gzip.compress(data, 9, mtime=0)), "bz2": len(bz2.compress(data, 9)),
             "lzma": len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))}
    if image_shape is None or raw.dtype != np.uint8:
        return sizes
    if math.prod(image_shape) != math.prod(x.shape[1:]):
        raise ValueError(f"image_shape {tuple(image_shape)} does not cover an example of shape {x.shape[1:]}")
    from PIL import Image  # a dependency of matplotlib

    def png(array: np.ndarray) -> int:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", optimize=True)
        return buffer.tell()

    images = raw.reshape(-1, *image_shape)
    sizes["png"] = sum(png(image) for image in images)
    sizes["png_strip"] = png(np.concatenate(list(images), axis=1))
    return sizes


def compressed_size_report(model: Codable, x: torch.Tensor, image_shape: tuple[int, int] | None = None
                           ) -> CompressionReport:
    """Compress ``x`` ``(N, *event_shape)`` with ``model``, decode it back, and compare the size with the
    model's exact NLL and with gzip/bz2/lzma/PNG (see `CompressionReport`). ``image_shape`` ``(H, W)`` for
    the PNG baseline defaults to the event shape when it is 2-D, or a square when it is ``(H * H,)``."""
    start = time.perf_counter()
    stream = compress(model, x)
    encoded = time.perf_counter()
    decoded = decompress(model, stream)
    decode_seconds = time.perf_counter() - encoded
    with coding_mode(model):
        nll_bits = float(-model.log_prob(x.to(model.device, model.dtype)).double().sum()) / math.log(2)
    header = header_size(x.dim())
    payload_bits = 8 * (len(stream) - header)
    shape = image_shape if image_shape is not None else _image_shape(tuple(x.shape[1:]))
    return CompressionReport(
        num_images=x.shape[0], num_dims=math.prod(x.shape[1:]), total_bytes=len(stream), header_bytes=header,
        payload_bits=payload_bits, nll_bits=nll_bits, ratio=payload_bits / nll_bits,
        ratio_total=8 * len(stream) / nll_bits, decoded_equal=torch.equal(decoded.to(x.device), x),
        baselines=baseline_sizes(x.to("cpu", torch.int64).numpy(), shape), encode_seconds=encoded - start,
        decode_seconds=decode_seconds, stream=stream)
