"""Where padded sequences live in the HMM kernels' tensors: the chunked time-major layout, moving rows
in and out of it, and reusable buffers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

_SEQUENTIAL_ROWS = 4096
"""With at least this many sequences x states, one step over every sequence at once is cheap enough
that forward-backward runs step by step; fewer, and time is cut into chunks processed in parallel."""


Workspace = dict
"""Buffers kept between calls (EM iterations): fresh large allocations cost page faults every time."""


def buffer(workspace: Workspace | None, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """An uninitialized tensor of ``shape`` (dtype and device of ``like``), reused from ``workspace``."""
    shape = tuple(shape)
    if workspace is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    found = workspace.get(name)
    if found is None or tuple(found.shape) != shape or found.dtype != like.dtype or found.device != like.device:
        found = workspace[name] = torch.empty(shape, dtype=like.dtype, device=like.device)
    return found


@dataclass
class Layout:
    """Where padded sequences live in the kernels' tensors.

    Time step ``t = c * chunk + l`` of sequence ``n`` is stored at ``[l, c, n]``: the tensors have
    shape ``(chunk, n_chunks, N, ...)``, so one step ``l`` of every chunk of every sequence is a
    contiguous slice. With ``n_chunks == 1`` this is the plain time-major layout ``(T, 1, N, ...)``.

    Attributes:
        lengths: sequence lengths ``(N,)`` (host list).
        chunk: steps per chunk ``L``.
        n_chunks: chunks per sequence ``C`` (``L * C >= max(lengths)``).
        mask: ``(L, C, N)`` bool, true at real (not padded) steps.
        full: per ``l``, whether no sequence is padded at that step (host list).
        index: position of each row of the concatenated data in the flattened ``(N, C * L)`` padding.
    """

    lengths: list[int]
    chunk: int
    n_chunks: int
    mask: torch.Tensor
    full: list[bool]
    index: torch.Tensor | None

    @property
    def n_sequences(self) -> int:
        return len(self.lengths)

    @property
    def all_full(self) -> bool:
        return all(self.full)

    @property
    def padded_length(self) -> int:
        return self.chunk * self.n_chunks


def choose_chunk(n_sequences: int, max_length: int, n_states: int) -> int:
    """Steps per chunk: the whole sequence when many sequences fill each step, else about
    ``sqrt(2 T)`` (a step inside the chunks costs about half a step between them; measured)."""
    if n_sequences * n_states >= _SEQUENTIAL_ROWS or max_length <= 64:
        return max_length
    return max(8, math.ceil(math.sqrt(2 * max_length)))


def make_layout(lengths: Sequence[int], device: torch.device, chunk: int | None = None, n_states: int = 1) -> Layout:
    """The `Layout` of sequences with these lengths (``chunk=None``: chosen by `choose_chunk`)."""
    lengths = [int(n) for n in lengths]
    n, max_length = len(lengths), max(lengths)
    chunk = min(chunk or choose_chunk(n, max_length, n_states), max_length)
    n_chunks = math.ceil(max_length / chunk)
    padded = chunk * n_chunks
    lengths_t = torch.tensor(lengths, device=device)
    steps = torch.arange(padded, device=device)
    valid = steps[None, :] < lengths_t[:, None]  # (N, C*L)
    mask = valid.view(n, n_chunks, chunk).permute(2, 1, 0).contiguous()
    shortest = min(lengths)
    full_steps = [t < shortest for t in range(padded)]
    full = [all(full_steps[c * chunk + step] for c in range(n_chunks)) for step in range(chunk)]
    index = None if shortest == padded else valid.reshape(-1).nonzero().squeeze(1)
    return Layout(lengths, chunk, n_chunks, mask, full, index)


def to_layout(values: torch.Tensor, layout: Layout, fill: float = 0.0) -> torch.Tensor:
    """Rows of the concatenated sequences ``(n_samples, F)`` -> ``(L, C, N, F)`` (``fill`` where padded)."""
    n, width = layout.n_sequences, values.shape[1]
    if layout.index is None:
        padded = values.reshape(n, layout.n_chunks, layout.chunk, width)
    else:
        padded = values.new_full((n * layout.padded_length, width), fill)
        padded[layout.index] = values
        padded = padded.view(n, layout.n_chunks, layout.chunk, width)
    return padded.permute(2, 1, 0, 3).contiguous()


def from_layout(values: torch.Tensor, layout: Layout) -> torch.Tensor:
    """Inverse of `to_layout`: ``(L, C, N, F)`` -> ``(n_samples, F)`` in the order of the data."""
    rows = values.permute(2, 1, 0, 3).reshape(-1, values.shape[-1])
    return rows if layout.index is None else rows[layout.index]
