"""Hidden Markov models: emission densities, forward-backward kernels, the Pyro story, the general
`HMM` estimator, and hmmlearn's named classes built on it."""

from ppl_dgm.models.classical.hmm.estimator import HMM
from ppl_dgm.models.classical.hmm.named import GMMHMM, CategoricalHMM, GaussianHMM, PoissonHMM

__all__ = ["HMM", "CategoricalHMM", "GaussianHMM", "GMMHMM", "PoissonHMM"]
