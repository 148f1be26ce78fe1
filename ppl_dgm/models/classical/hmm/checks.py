"""hmmlearn's checks of what an HMM is given: rows and their sequence lengths, and a state whose
distributions sum to one."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ppl_dgm.models.classical.hmm import numerics


def check_rows(hmm: Any, X: Any, fitting: bool = False) -> torch.Tensor:
    """EM's rows on the device, as the emission takes them (``(n, D)``; categorical: symbol ids ``(n,)``)."""
    if not fitting:
        hmm._check_is_fitted()
    emission = hmm._emission
    tensor = hmm._as_tensor(X, "X", integer=emission.integer)
    known = hmm.n_features if fitting else int(hmm._current()[emission.state_names[0]].shape[-1])
    rows = emission.check_rows(tensor, known)
    if fitting and hmm.n_features is None:
        hmm.n_features = emission.width(rows)
    return rows


def check_lengths(lengths: Any, n_samples: int) -> list[int]:
    if lengths is None:
        return [n_samples]
    array = np.asarray(lengths.detach().cpu() if isinstance(lengths, torch.Tensor) else lengths)
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"lengths must be a non-empty 1-D sequence of positive integers, got {lengths!r}")
    if (array != np.round(array)).any() or (array < 1).any():
        raise ValueError(f"lengths must hold positive integers, got {array.tolist()}")
    if int(array.sum()) != n_samples:
        raise ValueError(f"lengths array {array.tolist()} doesn't sum to {n_samples} samples")
    return [int(n) for n in array]


def check_state(hmm: Any) -> None:
    """hmmlearn's ``_check`` of a fitted (or initialized) state: shapes, and distributions that sum to one."""
    state, k = hmm._current(), hmm.n_components
    if state["startprob"].shape != (k,):
        raise ValueError("startprob_ must have length n_components")
    numerics.check_sum_1("startprob_", state["startprob"])
    if state["transmat"].shape != (k, k):
        raise ValueError("transmat_ must have shape (n_components, n_components)")
    numerics.check_sum_1("transmat_", state["transmat"])
    hmm.n_features = hmm._emission.check_state(state, k, hmm.n_features)


def check_hyperparameters(hmm: Any, emissions: Any) -> None:
    """hmmlearn's checks of the constructor arguments; ``emissions``: the known emission names."""
    if not isinstance(hmm.n_components, (int, np.integer)) or hmm.n_components < 1:
        raise ValueError(f"n_components must be a positive integer, got {hmm.n_components!r}")
    if hmm.emission not in emissions:
        raise ValueError(f"emission must be one of {sorted(emissions)}, got {hmm.emission!r}")
    hmm._emission  # noqa: B018 (the emission checks its own hyperparameters, e.g. covariance_type)
    if hmm.algorithm not in ("viterbi", "map"):
        raise ValueError(f"algorithm must be 'viterbi' or 'map', got {hmm.algorithm!r}")
    if hmm.implementation not in ("log", "scaling"):
        raise ValueError(f"implementation must be 'log' or 'scaling', got {hmm.implementation!r}")
    if not isinstance(hmm.n_iter, (int, np.integer)) or hmm.n_iter < 0:
        raise ValueError(f"n_iter must be a non-negative integer, got {hmm.n_iter!r}")
    if hmm.n_features is not None and (not isinstance(hmm.n_features, (int, np.integer)) or hmm.n_features < 1):
        raise ValueError(f"n_features must be a positive integer or None, got {hmm.n_features!r}")
