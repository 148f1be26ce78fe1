"""Plain torch building blocks (no Pyro)."""

from ppl_dgm.nn.mlp import MLP

__all__ = ["MLP"]
