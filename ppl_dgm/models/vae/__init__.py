"""Variational autoencoders with amortized guides."""

from ppl_dgm.models.vae.vae import VAE

__all__ = ["VAE"]
