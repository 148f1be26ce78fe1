"""Density flows as Pyro TransformedDistributions (flow presets), flows as variational families,
and integer discrete flows."""

from ppl_dgm.models.flows.idf import IDF
from ppl_dgm.models.flows.presets import IAF, MAF, NICE, NSF, Glow, RealNVP

__all__ = ["IAF", "IDF", "MAF", "NICE", "NSF", "Glow", "RealNVP"]
