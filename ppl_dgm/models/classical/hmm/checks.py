"""hmmlearn's checks of what an HMM is given: rows and their sequence lengths, and a state whose
distributions sum to one."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ppl_dgm.models.classical import gaussian
from ppl_dgm.models.classical.estimator import to_numpy


def check_rows(hmm: Any, X: Any, fitting: bool = False) -> torch.Tensor:
    """``(n, D)`` floats (gaussian) or ``(n,)`` symbol ids (categorical) on the device."""
    if not fitting:
        hmm._check_is_fitted()
    if hmm.emission == "categorical":
        symbols = hmm._as_tensor(X, "X", integer=True)
        if symbols.shape[1] != 1:
            raise ValueError(f"categorical emissions need X of shape (n_samples, 1) holding symbol ids, "
                             f"got shape {tuple(symbols.shape)}")
        symbols = symbols[:, 0]
        largest = int(symbols.max())
        if fitting and hmm.n_features is None:
            hmm.n_features = largest + 1
        known = hmm.n_features if fitting else hmm._current()["emissionprob"].shape[1]
        if largest > known - 1:
            raise ValueError(f"Largest symbol is {largest} but the model only emits symbols up to {known - 1}")
        return symbols
    tensor = hmm._as_tensor(X, "X")
    if fitting and hmm.n_features is None:
        hmm.n_features = int(tensor.shape[1])
    expected = hmm.n_features if fitting else hmm._current()["means"].shape[1]
    if expected is not None and tensor.shape[1] != expected:
        raise ValueError(f"Unexpected number of dimensions, got {tensor.shape[1]} but expected {expected}")
    return tensor


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


def _check_sum_1(name: str, value: torch.Tensor) -> None:
    sums = to_numpy(value.sum(-1))
    if not np.allclose(sums, 1):
        raise ValueError(f"{name} must sum to 1 (got {float(sums):.4f})" if sums.ndim == 0
                         else f"{name} rows must sum to 1 (got row sums of {sums})")


def check_state(hmm: Any) -> None:
    """hmmlearn's ``_check`` of a fitted (or initialized) state: shapes, and distributions that sum to one."""
    state, k = hmm._current(), hmm.n_components
    if state["startprob"].shape != (k,):
        raise ValueError("startprob_ must have length n_components")
    _check_sum_1("startprob_", state["startprob"])
    if state["transmat"].shape != (k, k):
        raise ValueError("transmat_ must have shape (n_components, n_components)")
    _check_sum_1("transmat_", state["transmat"])
    if hmm.emission == "categorical":
        if hmm.n_features is None and state["emissionprob"].dim() == 2:
            hmm.n_features = int(state["emissionprob"].shape[1])
        if state["emissionprob"].shape != (k, hmm.n_features):
            raise ValueError(f"emissionprob_ must have shape ({k}, {hmm.n_features})")
        _check_sum_1("emissionprob_", state["emissionprob"])
        return
    means = state["means"]
    if means.dim() != 2 or means.shape[0] != k or hmm.n_features not in (None, means.shape[1]):
        raise ValueError(f"means_ must have shape (n_components, n_features) = ({k}, {hmm.n_features or 'D'}), "
                         f"got {tuple(means.shape)}")
    hmm.n_features = int(means.shape[1])
    shape = gaussian.covariance_shape(hmm.covariance_type, k, hmm.n_features)
    if tuple(state["covars"].shape) != shape:
        raise ValueError(f"covars_ of a {hmm.covariance_type!r} model must have shape {shape}, "
                         f"got {tuple(state['covars'].shape)}")


def check_hyperparameters(hmm: Any) -> None:
    """hmmlearn's checks of the constructor arguments."""
    if not isinstance(hmm.n_components, (int, np.integer)) or hmm.n_components < 1:
        raise ValueError(f"n_components must be a positive integer, got {hmm.n_components!r}")
    if hmm.emission not in ("gaussian", "categorical"):
        raise ValueError(f"emission must be 'gaussian' or 'categorical', got {hmm.emission!r}")
    if hmm.emission == "gaussian":
        gaussian.check_covariance_type(hmm.covariance_type)
    if hmm.algorithm not in ("viterbi", "map"):
        raise ValueError(f"algorithm must be 'viterbi' or 'map', got {hmm.algorithm!r}")
    if hmm.implementation not in ("log", "scaling"):
        raise ValueError(f"implementation must be 'log' or 'scaling', got {hmm.implementation!r}")
    if not isinstance(hmm.n_iter, (int, np.integer)) or hmm.n_iter < 0:
        raise ValueError(f"n_iter must be a non-negative integer, got {hmm.n_iter!r}")
    if hmm.n_features is not None and (not isinstance(hmm.n_features, (int, np.integer)) or hmm.n_features < 1):
        raise ValueError(f"n_features must be a positive integer or None, got {hmm.n_features!r}")
