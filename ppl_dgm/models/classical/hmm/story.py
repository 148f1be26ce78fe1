"""The HMM's Pyro story, as functions of an `Emission`: Dirichlet priors over the start and transition
probabilities, sequences observed through ``DiscreteHMM`` (hidden states summed out, padding masked),
and the exact marginal of each sequence under many parameter draws."""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import torch

from ppl_dgm.core import X, data_plate
from ppl_dgm.models.classical.hmm import inference as kernels
from ppl_dgm.models.classical.hmm.emissions import Emission, EmissionDistribution, State


def sequence_mask(lengths: torch.Tensor | None, n: int, steps: int, device: torch.device) -> torch.Tensor | None:
    """``(n, steps)`` booleans, true at the steps within each sequence's length (``None``: all full)."""
    if lengths is None:
        return None
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.shape != (n,) or bool((lengths < 1).any()) or bool((lengths > steps).any()):
        raise ValueError(f"lengths must hold {n} integers in 1..{steps}, got {lengths.tolist()}")
    return torch.arange(steps, device=device) < lengths.unsqueeze(-1)


def sample_parameters(emission: Emission, model: Any, k: int, d: int) -> State:
    """``startprob ~ Dirichlet(1)``, each row of ``transmat ~ Dirichlet(1)``, and the emission's prior."""
    ones = torch.ones(k, dtype=model.dtype, device=model.device)
    startprob = pyro.sample("startprob", dist.Dirichlet(ones))
    transmat = pyro.sample("transmat", dist.Dirichlet(ones.expand(k, k)).to_event(1))
    return {"startprob": startprob, "transmat": transmat, **emission.sample_state(model, k, d)}


def observe(emission: Emission, state: State, d: int, x: torch.Tensor | None, n: int | None, steps: int,
            mask: torch.Tensor | None) -> torch.Tensor:
    """Sequences ``x`` ``(N, steps, d)`` (or ``n`` drawn) at site ``"x"`` in plate ``"data"``, the
    hidden states summed out by ``DiscreteHMM``; steps where ``mask`` is false are left out."""
    startprob, transmat = state["startprob"], state["transmat"]
    k = startprob.shape[-1]
    trans_logits = torch.cat([startprob.log().expand(1, k, k), transmat.log().expand(steps - 1, k, k)])
    observation = EmissionDistribution(emission, {name: state[name] for name in emission.state_names}, d)
    if mask is not None:
        observation = observation.expand((mask.shape[0], steps, k)).mask(mask.unsqueeze(-1))
    with data_plate(x, n):
        hmm = dist.DiscreteHMM(torch.zeros_like(startprob), trans_logits, observation, duration=steps)
        return pyro.sample(X, hmm, obs=x)


def marginal_log_likelihood(emission: Emission, state: State, x: torch.Tensor, mask: torch.Tensor | None
                            ) -> torch.Tensor:
    """``log p(x_n | state_s)`` in nats, ``(S, N)``, for parameters with a leading batch of ``S`` draws
    and padded sequences ``x`` ``(N, T, d)``."""
    log_frame = emission.log_density(emission.features(x), {name: state[name] for name in emission.state_names})
    return kernels.forward_log_likelihood(state["startprob"].log(), state["transmat"].log(), log_frame, mask)
