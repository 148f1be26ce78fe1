"""The model zoo, one subpackage per family; every class is registered by name and imported on
first use (``from ppl_dgm.models import VAE`` imports the VAE's family only)."""

from __future__ import annotations

from ppl_dgm.models.registry import BUILTIN_MODELS, get_model_class, list_models, register_model

_CLASS_NAMES = {spec.partition(":")[2]: name for name, spec in BUILTIN_MODELS.items()}
_CLASS_NAMES["GMM"] = "gmm"  # the old name of GaussianMixture


def __getattr__(name: str) -> type:
    """A zoo class by its class name (``GMM``, ``VAE``, ``RealNVP``, ...), imported on first use."""
    if name in _CLASS_NAMES:
        return get_model_class(_CLASS_NAMES[name])
    raise AttributeError(f"module 'ppl_dgm.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_CLASS_NAMES])


__all__ = ["get_model_class", "list_models", "register_model", *_CLASS_NAMES]  # noqa: PLE0604
