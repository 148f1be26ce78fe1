"""Baum-Welch for the HMM as hmmlearn runs it: its convergence monitor, its M-step with priors, over
all sequences at once in the padded layout."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from ppl_dgm.models.classical.hmm import checks, numerics, padding
from ppl_dgm.models.classical.hmm import inference as kernels

_log = logging.getLogger(__name__)


@torch.no_grad()
def baum_welch(hmm: Any, X: torch.Tensor, lengths: list[int]) -> None:
    """Run EM on ``hmm`` from its current state: rows ``X`` ``(n_samples, D)`` (symbol ids ``(n_samples,)``
    when categorical) cut into sequences of ``lengths``; stops when hmmlearn's monitor says so."""
    checks.check_state(hmm)
    layout = padding.make_layout(lengths, hmm.device, n_states=hmm.n_components)
    features = hmm._features(X, layout)
    workspace: padding.Workspace = {}
    monitor = hmm.monitor_
    monitor.tol, monitor.n_iter, monitor.verbose = hmm.tol, hmm.n_iter, hmm.verbose
    monitor._reset()
    for _ in range(hmm.n_iter):
        log_frame = hmm._log_frame(features, hmm._buffers, layout)
        result = kernels.forward_backward(hmm.startprob, hmm.transmat, log_frame, layout,
                                          workspace=workspace)
        log_prob = float(result.log_likelihood.sum())
        m_step(hmm, result, features)
        monitor.report(log_prob)
        if monitor.converged:
            break
        if bool((hmm.transmat.sum(1) == 0).any()):
            _log.warning("Some rows of transmat_ have zero sum because no transition from the state was "
                         "ever observed.")


def m_step(hmm: Any, result: kernels.Posteriors, features: torch.Tensor) -> None:
    """hmmlearn's M-step (priors included); zeros in startprob_/transmat_ stay zero."""
    updates, dtype, device = hmm._updates(), hmm.dtype, hmm.device

    def prior(value: Any) -> torch.Tensor:
        return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=dtype, device=device)

    new: dict[str, torch.Tensor] = {}
    if "s" in updates:
        start = (prior(hmm.startprob_prior) - 1 + result.gamma[0, 0].sum(0)).clamp_min(0)
        start = torch.where(hmm.startprob == 0, 0.0, start)
        new["startprob"] = start / start.sum()
    if "t" in updates:
        trans = (prior(hmm.transmat_prior) - 1 + result.xi_sum).clamp_min(0)
        new["transmat"] = numerics.normalize_rows(torch.where(hmm.transmat == 0, 0.0, trans))
    gamma = result.gamma.view(-1, hmm.n_components)
    new.update(hmm._emission.m_step(gamma, features, hmm._buffers, updates))
    hmm._set_state(**new)
