"""Fitting engines and their objectives: SVI (`fit`) and NUTS (`nuts`)."""

from ppl_dgm.infer.mcmc import MCMCResult, nuts
from ppl_dgm.infer.objectives import ELBO, Objective, PyroObjective, RenyiELBO, make_objective
from ppl_dgm.infer.svi import FitResult, NonFiniteLossError, fit

__all__ = ["ELBO", "FitResult", "MCMCResult", "NonFiniteLossError", "Objective", "PyroObjective", "RenyiELBO", "fit",
           "make_objective", "nuts"]
