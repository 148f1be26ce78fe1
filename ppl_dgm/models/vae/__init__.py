"""Variational autoencoders with amortized guides: the VAE and its family, on one base (`AmortizedVAE`).

The variants are imported on first use through `ppl_dgm.models` (``from ppl_dgm.models import VampPriorVAE``)."""

from ppl_dgm.models.vae.base import AmortizedVAE
from ppl_dgm.models.vae.vae import VAE

__all__ = ["VAE", "AmortizedVAE"]
