"""Lossless compression of integer data with an ANS entropy coder driven by an exact discrete model.

The coder (``constriction``'s ``AnsCoder`` with a ``Categorical`` model family; Duda et al., "The use
of asymmetric numeral systems as an accurate replacement for Huffman coding", PCS 2015; Bamler,
"Understanding entropy coding with asymmetric numeral systems (ANS): a statistician's perspective",
2022) spends ``-log2 p(x)`` bits on an example plus a constant, so the size of a stream proves the
model's negative log-likelihood. Any model with the members of `Codable` can be coded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import constriction
import numpy as np
import torch

MAGIC = b"PDGC"
VERSION = 1
_FIXED = struct.Struct("<4sBBBB16sIII8s")  # magic, version, dtype, device, ndim, fingerprint, D, words, crc, hash
_DIM = struct.Struct("<I")
_CRC = struct.Struct("<I")
_DTYPES = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16, torch.bfloat16,
           torch.float32, torch.float64]
_DEVICES = ["cpu", "cuda"]
PERFECT = False
"""constriction's quantization of each probability table (part of the format): the fast "lazy" one, which
spends a negligible fraction of a bit more than ``perfect=True`` and needs no search per table."""
_MEMBERS = ("num_symbols", "to_symbols", "from_symbols", "coding_steps", "coding_log_probs")


@runtime_checkable
class Codable(Protocol):
    """An exact discrete model that an entropy coder can drive (see the members' docstrings)."""

    num_symbols: int
    """``K``: the alphabet size of every symbol."""

    def to_symbols(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, *event_shape)`` data -> ``(N, D)`` long symbols in ``[0, K)`` (a bijection)."""

    def from_symbols(self, s: torch.Tensor) -> torch.Tensor:
        """``(N, D)`` symbols -> ``(N, *event_shape)`` data in the model's float dtype."""

    def coding_steps(self) -> int:
        """``T``: the number of sequential decoding steps."""

    def coding_log_probs(self, s: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Dims ``(G,)`` decoded at ``step`` and their log-probabilities ``(N, G, K)`` (nats), given
        the symbols ``s`` ``(N, D)`` at the dims of earlier steps only."""


def is_codable(model: Any) -> bool:
    """Whether ``model`` has every member of `Codable`."""
    return all(hasattr(model, name) for name in _MEMBERS)


def require_codable(model: Any) -> None:
    """Raise ``TypeError`` naming the members of `Codable` that ``model`` lacks."""
    missing = [name for name in _MEMBERS if not hasattr(model, name)]
    if missing:
        raise TypeError(f"{type(model).__name__} cannot be entropy coded: it lacks {', '.join(missing)}; only exact "
                        "discrete models with the Codable members (e.g. ARM, IDF) can")


def header_size(ndim: int) -> int:
    """Bytes of the stream header for data with ``ndim`` dimensions (batch included): ``48 + 4 * ndim``."""
    return _FIXED.size + ndim * _DIM.size + _CRC.size


def model_fingerprint(model: torch.nn.Module) -> bytes:
    """16 bytes identifying ``model``: sha256 over its registry name (or class path), its JSON configuration
    and the name, dtype, shape and bytes of every ``state_dict`` tensor (so another dtype is another model)."""
    cls = type(model)
    name = getattr(cls, "registry_name", None) or f"{cls.__module__}:{cls.__qualname__}"
    digest = hashlib.sha256()

    def add(data: bytes) -> None:
        digest.update(len(data).to_bytes(8, "little") + data)

    add(name.encode())
    add(json.dumps(getattr(model, "config", {}), sort_keys=True).encode())
    for key, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        add(f"{key}|{flat.dtype}|{tuple(tensor.shape)}".encode())
        add(flat.view(torch.uint8).numpy().tobytes())
    return digest.digest()[:16]


def _data_hash(x: torch.Tensor) -> bytes:
    values = x.detach().to("cpu", torch.int64).contiguous().numpy().astype("<i8")
    return hashlib.sha256(values.tobytes()).digest()[:8]


@contextlib.contextmanager
def coding_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout), no autograd, deterministic cuDNN; the training flag is restored after."""
    training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, benchmark=False,
                                                                 deterministic=True):
            yield
    finally:
        model.train(training)


def _step_probabilities(model: Codable, partial: torch.Tensor, step: int) -> tuple[torch.Tensor, np.ndarray]:
    """The dims ``(G,)`` decoded at ``step`` and their probabilities as float64 numpy ``(N * G, K)``, rows
    in ``(example, dim)`` order; the one computation that encoding and decoding share."""
    dims, log_probs = model.coding_log_probs(partial, step)
    n, k = partial.shape[0], model.num_symbols
    dims = torch.as_tensor(dims, device=partial.device).reshape(-1)
    if log_probs.shape != (n, dims.numel(), k):
        raise ValueError(f"{type(model).__name__}.coding_log_probs(step={step}) returned log_probs of shape "
                         f"{tuple(log_probs.shape)} for {dims.numel()} dims; expected ({n}, {dims.numel()}, {k})")
    table = log_probs.detach().to("cpu", torch.float64).exp().reshape(-1, k).numpy()
    if not np.isfinite(table).all():
        raise ValueError(f"{type(model).__name__}.coding_log_probs(step={step}) returned NaN or +inf log-probabilities")
    return dims, table


def _symbols(model: Codable, x: torch.Tensor) -> torch.Tensor:
    """``model.to_symbols(x)`` checked: shape ``(N, D)``, values in ``[0, K)``, inverted by ``from_symbols``."""
    check = getattr(model, "check_data", None)
    if check is not None:
        check(x)
    symbols = model.to_symbols(x.to(model.device, model.dtype))
    k = model.num_symbols
    if symbols.dim() != 2 or symbols.shape[0] != x.shape[0] or symbols.dtype.is_floating_point:
        raise ValueError(f"{type(model).__name__}.to_symbols must return integer symbols of shape (N, D), got "
                         f"{symbols.dtype} {tuple(symbols.shape)}")
    if bool((symbols < 0).any()) or bool((symbols >= k).any()):
        raise ValueError(f"the data map to symbols outside 0..{k - 1}; pass data in the model's alphabet")
    if not torch.equal(model.from_symbols(symbols).to(x.device, x.dtype), x):
        raise ValueError(f"{type(model).__name__}.from_symbols does not invert to_symbols on these data (are they "
                         "integers in the model's range?)")
    return symbols.long()


def coding_tables(model: Codable, x: torch.Tensor) -> tuple[torch.Tensor, list[tuple[np.ndarray, np.ndarray]]]:
    """The symbols ``(N, D)`` of ``x`` and, per decoding step, the coded symbols (int32 ``(N * G,)``) with their
    probabilities (float64 ``(N * G, K)``), rows in ``(example, dim)`` order: what `compress` encodes. Step
    ``t`` runs the model once on all examples with the dims of steps ``< t`` filled in and zeros elsewhere,
    exactly as `decompress` sees them."""
    require_codable(model)
    if not isinstance(x, torch.Tensor) or x.dim() == 0 or x.shape[0] == 0:
        raise ValueError("x must be a non-empty tensor of shape (N, *event_shape)")
    with coding_mode(model):
        symbols = _symbols(model, x)
        partial = torch.zeros_like(symbols)
        decoded = torch.zeros(symbols.shape[1], dtype=torch.long, device=symbols.device)
        tables = []
        for step in range(model.coding_steps()):
            dims, probabilities = _step_probabilities(model, partial, step)
            decoded[dims] += 1
            partial[:, dims] = symbols[:, dims]
            tables.append((symbols[:, dims].reshape(-1).to("cpu", torch.int32).numpy(), probabilities))
    if not bool((decoded == 1).all()):
        raise ValueError(f"{type(model).__name__}.coding_log_probs must decode every dim at exactly one step; "
                         f"dims decoded {decoded.tolist()} times")
    return symbols, tables


def ans_encode(tables: list[tuple[np.ndarray, np.ndarray]], perfect: bool = PERFECT) -> np.ndarray:
    """ANS words (uint32) of `coding_tables`' steps, so that decoding pops step 0 first; ``perfect`` picks
    constriction's quantization of the probabilities (the stream format fixes `PERFECT`)."""
    coder = constriction.stream.stack.AnsCoder()
    family = constriction.stream.model.Categorical(perfect=perfect)
    for step_symbols, probabilities in reversed(tables):  # a stack: the last step is pushed first
        coder.encode_reverse(step_symbols, family, probabilities)
    return coder.get_compressed()


def compress(model: Codable, x: torch.Tensor) -> bytes:
    """Encode integer data ``x`` of shape ``(N, *event_shape)`` losslessly with ``model``'s probabilities.

    Returns the stream: a header of `header_size` ``(x.dim())`` bytes, then the ANS words (uint32,
    little endian). Its payload is ``-log2 p(x)`` bits plus at most a few words. The ``coding_steps()``
    steps each run the model once on all ``N`` examples, as `decompress` does.

    Raises:
        TypeError: ``model`` lacks a member of `Codable` (they are named).
        ValueError: ``x`` is not in the model's alphabet, or the model breaks the `Codable` contract.
    """
    if isinstance(x, torch.Tensor) and x.dtype not in _DTYPES:
        raise ValueError(f"cannot store data of dtype {x.dtype}; use an integer or floating dtype")
    symbols, tables = coding_tables(model, x)
    payload = ans_encode(tables).astype("<u4").tobytes()
    device = _DEVICES.index(symbols.device.type) if symbols.device.type in _DEVICES else 255
    fixed = _FIXED.pack(MAGIC, VERSION, _DTYPES.index(x.dtype), device, x.dim(), model_fingerprint(model),
                        symbols.shape[1], len(payload) // 4, zlib.crc32(payload), _data_hash(x))
    header = fixed + b"".join(_DIM.pack(size) for size in x.shape)
    return header + _CRC.pack(zlib.crc32(header)) + payload


@dataclass(frozen=True)
class _Header:
    dtype: torch.dtype
    device: str
    shape: tuple[int, ...]
    num_dims: int
    fingerprint: bytes
    data_hash: bytes
    payload: bytes


def _parse(data: bytes) -> _Header:
    corrupt = "the compressed stream is truncated/corrupt"
    if len(data) < _FIXED.size:
        raise ValueError(f"{corrupt}: {len(data)} bytes, shorter than the header")
    magic, version, dtype, device, ndim, fingerprint, num_dims, words, crc, data_hash = _FIXED.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"not a ppl_dgm compressed stream (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise ValueError(f"compressed stream format version {version}; this ppl_dgm reads version {VERSION}")
    if dtype >= len(_DTYPES) or ndim == 0:
        raise ValueError(f"{corrupt}: invalid dtype code {dtype} or number of dimensions {ndim}")
    size = header_size(ndim)
    if len(data) < size:
        raise ValueError(f"{corrupt}: {len(data)} bytes, shorter than its {size}-byte header")
    (header_crc,) = _CRC.unpack_from(data, size - _CRC.size)
    if zlib.crc32(data[: size - _CRC.size]) != header_crc:
        raise ValueError(f"{corrupt}: header checksum mismatch")
    payload = data[size:]
    if len(payload) != 4 * words:
        raise ValueError(f"{corrupt}: {len(payload)} payload bytes, the header says {4 * words}")
    if zlib.crc32(payload) != crc:
        raise ValueError(f"{corrupt}: payload checksum mismatch")
    shape = tuple(_DIM.unpack_from(data, _FIXED.size + i * _DIM.size)[0] for i in range(ndim))
    return _Header(_DTYPES[dtype], _DEVICES[device] if device < len(_DEVICES) else "other", shape, num_dims,
                   fingerprint, data_hash, payload)


def decompress(model: Codable, data: bytes) -> torch.Tensor:
    """Decode a stream written by `compress` with the same ``model``: the data, shape ``(N, *event_shape)``
    and dtype as encoded, on the model's device. Every step decodes all ``N`` examples at once.

    Raises:
        TypeError: ``model`` lacks a member of `Codable`.
        ValueError: the stream is truncated/corrupt, was written by another model (or the same weights in
            another dtype), or decodes to data whose checksum differs (e.g. encoded on another device).
    """
    require_codable(model)
    header = _parse(bytes(data))
    if header.fingerprint != model_fingerprint(model):
        raise ValueError("the stream was compressed with another model (or the same weights in another dtype); "
                         "decompress it with the model that compressed it")
    n, *_ = header.shape
    coder = constriction.stream.stack.AnsCoder(np.frombuffer(header.payload, dtype="<u4").astype(np.uint32))
    family = constriction.stream.model.Categorical(perfect=PERFECT)
    with coding_mode(model):
        partial = torch.zeros(n, header.num_dims, dtype=torch.long, device=model.device)
        for step in range(model.coding_steps()):
            dims, probabilities = _step_probabilities(model, partial, step)
            step_symbols = coder.decode(family, probabilities)
            partial[:, dims] = torch.from_numpy(step_symbols.astype(np.int64)).to(partial.device).view(n, -1)
        x = model.from_symbols(partial)
    x = x.to(header.dtype)
    if not coder.is_empty() or tuple(x.shape) != header.shape or _data_hash(x) != header.data_hash:
        raise ValueError(f"the stream's checksums hold but it does not decode to the data it recorded: the model "
                         f"computes other probabilities than when it encoded (encoded on {header.device}, decoded "
                         f"on {model.device.type}; decode on the same kind of device)")
    return x



def verify_coding(model: Codable, x: torch.Tensor, atol: float = 1e-4) -> torch.Tensor:
    """Check that ``model`` keeps the `Codable` contract on data ``x`` ``(N, *event_shape)``; return the
    per-example sum of its coding log-probabilities, shape ``(N,)`` in nats.

    Checked: every dim is decoded at exactly one step; each step's log-probabilities are normalized; they do
    not change when the dims not yet decoded hold other symbols; their sum at the true symbols equals
    ``model.log_prob(x)`` within ``atol`` nats per dim. ``ValueError`` names the first broken rule.
    """
    require_codable(model)
    generator = torch.Generator().manual_seed(0)
    with coding_mode(model):
        symbols = _symbols(model, x)
        n, num_dims = symbols.shape
        decoded = torch.zeros(num_dims, dtype=torch.bool, device=symbols.device)
        total = torch.zeros(n, dtype=torch.float64, device=symbols.device)
        for step in range(model.coding_steps()):
            partial = torch.where(decoded, symbols, torch.zeros_like(symbols))
            dims, log_probs = model.coding_log_probs(partial, step)
            dims = torch.as_tensor(dims, device=symbols.device).reshape(-1)
            if bool(decoded[dims].any()) or dims.unique().numel() != dims.numel():
                raise ValueError(f"step {step} decodes dims {dims.tolist()}, some of them decoded before")
            if not torch.allclose(log_probs.logsumexp(-1).double(), torch.zeros(()).double(), atol=atol):
                raise ValueError(f"step {step}: log_probs are not normalized over the {model.num_symbols} symbols")
            noise = torch.randint(model.num_symbols, symbols.shape, generator=generator).to(symbols.device)
            _, other = model.coding_log_probs(torch.where(decoded, symbols, noise), step)
            if not torch.allclose(other, log_probs, atol=atol):
                raise ValueError(f"step {step}: log_probs depend on dims that are not decoded yet")
            decoded[dims] = True
            total += log_probs.gather(-1, symbols[:, dims, None]).squeeze(-1).double().sum(-1)
        if not bool(decoded.all()):
            raise ValueError(f"dims {torch.nonzero(~decoded).flatten().tolist()} are decoded at no step")
        exact = model.log_prob(x.to(model.device, model.dtype)).double()
    if not torch.allclose(total, exact, atol=atol * num_dims):
        worst = float((total - exact).abs().max())
        raise ValueError(f"the coding log-probabilities differ from model.log_prob by up to {worst:.3g} nats")
    return total
