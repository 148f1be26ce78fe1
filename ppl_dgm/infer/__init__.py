"""Fitting engines and their objectives: `fit` (any registered engine: SVI, EM, adversarial, denoising,
contrastive) and NUTS (`nuts`)."""

from ppl_dgm.infer.engine import Engine, NonFiniteLossError, get_engine_class, list_engines, register_engine
from ppl_dgm.infer.fitting import fit
from ppl_dgm.infer.loop import FitResult
from ppl_dgm.infer.mcmc import MCMCResult, nuts
from ppl_dgm.infer.objectives import ELBO, Objective, PyroObjective, RenyiELBO, make_objective

__all__ = ["ELBO", "Engine", "FitResult", "MCMCResult", "NonFiniteLossError", "Objective", "PyroObjective",
           "RenyiELBO", "fit", "get_engine_class", "list_engines", "make_objective", "nuts", "register_engine"]
