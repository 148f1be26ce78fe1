"""Registry of the model zoo: name -> class, so checkpoints and the CLI can rebuild models."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

_MODELS: dict[str, type] = {}
T = TypeVar("T", bound=type)


def register_model(name: str) -> Callable[[T], T]:
    """Class decorator: make a `GenerativeModel` available as ``name``."""

    def add(cls: T) -> T:
        key = name.lower()
        if key in _MODELS and _MODELS[key] is not cls:
            raise ValueError(f"a model named {key!r} is already registered ({_MODELS[key].__name__})")
        _MODELS[key] = cls
        cls.registry_name = key
        return cls

    return add


def get_model_class(name: str) -> type:
    """The class registered as ``name`` (case-insensitive); ``ValueError`` if unknown."""
    try:
        return _MODELS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(_MODELS))}") from None


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(_MODELS)
