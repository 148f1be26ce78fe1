"""Site and plate names the evaluation keys on, and how a batch splits into data and context; this
module imports nothing."""

DATA = "data"
"""Name of the plate over examples; every observed example lives inside it."""
X = "x"
"""Name of the observed sample site."""
Z = "z"
"""Conventional name of the main latent sample site."""


def context_of(batch: dict) -> dict:
    """The per-example context of a batch ``{"x": data, **context}``: every entry but ``"x"``."""
    return {key: value for key, value in batch.items() if key != X}
