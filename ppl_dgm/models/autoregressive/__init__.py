"""Autoregressive models over pixels (causal convolutions)."""

from ppl_dgm.models.autoregressive.arm import ARM, RasterCategorical

__all__ = ["ARM", "RasterCategorical"]
