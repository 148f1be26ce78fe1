"""Site and plate names the evaluation keys on; this module imports nothing."""

DATA = "data"
"""Name of the plate over examples; every observed example lives inside it."""
X = "x"
"""Name of the observed sample site."""
Z = "z"
"""Conventional name of the main latent sample site."""
