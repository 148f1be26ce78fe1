"""ppl_dgm: probabilistic programming with deep generative models, on Pyro."""

from importlib.metadata import PackageNotFoundError, version

from ppl_dgm import datasets, models
from ppl_dgm.core import DATA, Capabilities, GenerativeModel, X, Z, data_plate, draw
from ppl_dgm.evaluation import LogLikelihood, bits_per_dim, log_likelihood
from ppl_dgm.evaluation.compression import compress, decompress
from ppl_dgm.infer import FitResult, NonFiniteLossError, fit
from ppl_dgm.io import load, save
from ppl_dgm.models import register_model
from ppl_dgm.story import Story, story


def __getattr__(name: str):
    """``ppl_dgm.diagnostics`` on first use (it imports ArviZ, which ``import ppl_dgm`` does not need)."""
    if name == "diagnostics":
        import importlib

        return importlib.import_module("ppl_dgm.diagnostics")
    raise AttributeError(f"module 'ppl_dgm' has no attribute {name!r}")


try:
    __version__ = version("ppl_dgm")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "DATA", "X", "Z", "Capabilities", "FitResult", "GenerativeModel", "LogLikelihood", "NonFiniteLossError",
    "Story", "bits_per_dim", "compress", "data_plate", "datasets", "decompress", "draw", "fit", "load",
    "log_likelihood", "models",
    "register_model", "save", "story",
]
