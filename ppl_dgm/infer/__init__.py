"""Fitting engines and their objectives."""

from ppl_dgm.infer.objectives import ELBO, Objective, PyroObjective, RenyiELBO, make_objective
from ppl_dgm.infer.svi import FitResult, NonFiniteLossError, fit

__all__ = ["ELBO", "FitResult", "NonFiniteLossError", "Objective", "PyroObjective", "RenyiELBO", "fit",
           "make_objective"]
