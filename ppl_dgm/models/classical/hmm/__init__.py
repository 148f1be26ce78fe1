"""Hidden Markov models: emission densities, forward-backward kernels, the Pyro story, and the
hmmlearn-style estimator that wraps it."""

from ppl_dgm.models.classical.hmm.estimator import HMM

__all__ = ["HMM"]
