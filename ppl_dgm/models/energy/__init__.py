"""Energy-based models: an unnormalized density exp(-E(x)) sampled by Langevin dynamics."""

from ppl_dgm.models.energy.ebm import EBM
from ppl_dgm.models.energy.langevin import langevin

__all__ = ["EBM", "langevin"]
