"""Classical latent-variable models with EM baselines: GMM, HMM and pPCA, as scikit-learn /
hmmlearn drop-ins whose Pyro stories give SVI, NUTS and ArviZ."""

from ppl_dgm.models.classical.gmm import GMM, GaussianMixture
from ppl_dgm.models.classical.hmm import GMMHMM, HMM, CategoricalHMM, GaussianHMM, PoissonHMM
from ppl_dgm.models.classical.ppca import PPCA

__all__ = ["GMM", "GMMHMM", "CategoricalHMM", "GaussianHMM", "GaussianMixture", "HMM", "PPCA", "PoissonHMM"]
