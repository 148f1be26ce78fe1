"""Stochastic variational inference: the engine that fits a model/guide pair by a variational bound."""

from __future__ import annotations

from typing import Any

import pyro
import torch

from ppl_dgm.core import GenerativeModel, X
from ppl_dgm.evaluation.dequantization import needs_dequantization
from ppl_dgm.infer import distributed
from ppl_dgm.infer.compiled import CompiledObjective
from ppl_dgm.infer.engine import Engine, register_engine
from ppl_dgm.infer.objectives import ELBO, Objective, RenyiELBO, make_objective
from ppl_dgm.lazy import initialize_parameters, trim_prototype
from ppl_dgm.posterior import per_example_guide_sites
from ppl_dgm.sites import context_of
from ppl_dgm.traces import enumerated_sites

VALIDATION_CHUNK = 256
"""Rows per chunk when the bound is computed on validation data."""


@torch.no_grad()
def evaluate_loss(model: GenerativeModel, objective: Objective, batch: dict[str, torch.Tensor],
                  batch_size: int = VALIDATION_CHUNK) -> float:
    """Objective on ``batch`` in nats per example, computed in chunks of ``batch_size`` rows."""
    n = batch[X].shape[0]
    total = 0.0
    for start in range(0, n, batch_size):
        chunk = {k: v[start:start + batch_size] for k, v in batch.items()}
        total += float(objective.loss(model, chunk, chunk[X].shape[0]))
    return total / n


@register_engine("svi")
class SVIEngine(Engine):
    """Stochastic variational inference with AdamW over shuffled minibatches.

    The loss of a minibatch of ``B`` rows scales the sites inside plate ``"data"`` by ``N / B``, so it
    estimates the bound on the whole training set; the figures are in nats per example. The
    validation figure is the same bound on the validation data.

    Args:
        objective: ``"elbo"``, ``"iwae"``, ``"renyi"``, any ``pyro.infer.ELBO``, or an `Objective`.
        num_particles: guide samples per example (default 1 for the ELBO, 5 otherwise).
        alpha: order of the Renyi bound.
        dequantize: fit ``x + u``, ``u ~ U[0, 1)`` drawn afresh for every batch (default: for
            continuous densities on integer-valued data, as ``log_likelihood`` scores them).
        compile: record the training loss once per batch shape as a graph and replay it
            (`ppl_dgm.infer.compiled`); ``None`` (default): for the built-in ELBO and Renyi/IWAE bounds. Where the
            story cannot be recorded, the fit runs eagerly and `compile_reason` says why.
    """

    unit = "nats per example"

    def __init__(self, model: GenerativeModel, *, objective: str | Objective | pyro.infer.ELBO = "elbo",
                 num_particles: int | None = None, alpha: float = 0.5, dequantize: bool | None = None,
                 compile: bool | None = None, **common: Any) -> None:
        super().__init__(model, **common)
        self.objective = objective
        self.num_particles = num_particles
        self.alpha = alpha
        self.dequantize = dequantize
        self.compile = compile
        self.loss_fn = make_objective(objective, num_particles, alpha, model)
        self._eager_reason: str | None = None  # why `prepare` left the loss eager
        self.optimizer: torch.optim.Optimizer | None = None

    def dequantizes(self, train: dict[str, torch.Tensor]) -> bool:
        if self.dequantize is not None:
            return self.dequantize
        if self.model.capabilities.data is None:  # a run of the story tells mass from density
            self.model.setup(train[X], **context_of(train))
            first = {k: v[:VALIDATION_CHUNK] for k, v in train.items()}
            return needs_dequantization(self.model, first[X], context_of(first))
        return needs_dequantization(self.model, train[X])

    def prepare(self, first_batch: dict[str, torch.Tensor]) -> None:
        guide_trace, model_trace = initialize_parameters(self.model, first_batch)
        if isinstance(self.loss_fn, ELBO) and enumerated_sites(guide_trace, model_trace):
            self.loss_fn = make_objective(self.objective, self.num_particles, self.alpha, self.model,
                                          enumerate_discrete=True)
        self._compile_loss()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError(f"{type(self.model).__name__} has no parameters to fit: neither the model nor the guide "
                             "holds an nn.Parameter, a pyro.param or an autoguide")
        self.optimizer = torch.optim.AdamW(self.params, lr=self.lr, weight_decay=self.weight_decay)

    def _compile_loss(self) -> None:
        if self.compile is False:
            self._eager_reason = "compile=False"
        elif not isinstance(self.loss_fn, ELBO | RenyiELBO) and self.compile is None:
            self._eager_reason = f"{type(self.loss_fn).__name__} is compiled only with compile=True"
        elif type(self).step is not SVIEngine.step and self.compile is None:  # it may read the story's side effects
            self._eager_reason = f"{type(self).__name__} has its own step; it is compiled only with compile=True"
        elif getattr(self.loss_fn, "elbo", None) is not None:
            self._eager_reason = "Pyro's ELBOs (enumeration, score-function terms) run eagerly"
        elif distributed.active():
            self._eager_reason = "not compiled under torchrun"
        else:
            self.loss_fn = CompiledObjective(self.loss_fn)

    @property
    def compile_reason(self) -> str | None:
        """Why the training loss runs eagerly (``None`` while it is compiled): `prepare`'s choice, or why
        the compiled loss fell back."""
        return self.loss_fn.reason if isinstance(self.loss_fn, CompiledObjective) else self._eager_reason

    def finish(self) -> None:
        if isinstance(self.loss_fn, CompiledObjective):
            self.loss_fn.release()  # the process's kept graphs then hold no tensor of this model

    def shuffles(self, dataset_size: int, batch_size: int, validating: bool) -> bool:
        return _check_per_example_guide(self.model, dataset_size, batch_size, validating)

    def step(self, batch: dict[str, torch.Tensor], dataset_size: int) -> dict[str, float]:
        loss = self.loss_fn.loss(self.model, batch, dataset_size)
        return {"loss": self.update(loss, self.optimizer, self.params) / dataset_size}

    def validation_loss(self, batch: dict[str, torch.Tensor]) -> float:
        return evaluate_loss(self.model, self.loss_fn, batch)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


def _check_per_example_guide(model: GenerativeModel, n: int, batch_size: int, validating: bool) -> bool:
    """Whether to shuffle the rows: not for a guide with parameters of its own for each training example
    (an autoguide over local latents), which needs every row, in order, at each step.

    Raises:
        ValueError: such a guide with minibatches or validation data.
    """
    sites = per_example_guide_sites(model)
    if not sites:
        trim_prototype(model)
        return True
    what = f"{type(model).__name__}'s guide has parameters for each training example (local site(s) " \
           f"{', '.join(sorted(sites))})"
    if batch_size < n:
        raise ValueError(f"{what}, so it needs all {n} rows in each step: pass batch_size >= {n}, or write an "
                         "amortized guide (a network of x) for the local latents")
    if validating:
        raise ValueError(f"{what}, so it cannot score validation data: pass val=None, or write an amortized guide")
    return False
