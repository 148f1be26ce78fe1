"""Plain torch building blocks (no Pyro)."""

from ppl_dgm.nn.masked import GatedResidualBlock, MaskedConv2d, PixelCNN
from ppl_dgm.nn.mlp import MLP

__all__ = ["MLP", "GatedResidualBlock", "MaskedConv2d", "PixelCNN"]
