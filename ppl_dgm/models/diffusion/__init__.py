"""Denoising diffusion probabilistic models (DDPM) with ancestral and DDIM sampling."""
