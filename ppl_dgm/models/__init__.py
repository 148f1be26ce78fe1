"""The model zoo; every class here is registered by name."""

from ppl_dgm.models.gmm import GMM
from ppl_dgm.models.hmm import HMM
from ppl_dgm.models.ppca import PPCA
from ppl_dgm.models.registry import get_model_class, list_models, register_model
from ppl_dgm.models.vae import VAE

__all__ = ["GMM", "HMM", "PPCA", "VAE", "get_model_class", "list_models", "register_model"]
