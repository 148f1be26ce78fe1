"""The registry resolves names lazily: importing ppl_dgm, loading a checkpoint or running the CLI
imports only the families it needs."""

import subprocess
import sys

import pytest

import ppl_dgm
from ppl_dgm.models import get_model_class, list_models, register_model, registry
from ppl_dgm.models.registry import BUILTIN_MODELS

FAMILIES = ["ppl_dgm.models.classical", "ppl_dgm.models.vae", "ppl_dgm.models.flows", "ppl_dgm.models.autoregressive"]


def _imported_families(code: str) -> list[str]:
    """Families imported by running ``code`` in a fresh interpreter."""
    probe = f"import sys\n{code}\nprint(sorted({{m for m in sys.modules if m in {FAMILIES!r}}}))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return eval(result.stdout.strip().splitlines()[-1])


def test_importing_the_package_imports_no_family():
    assert _imported_families("import ppl_dgm, ppl_dgm.io, ppl_dgm.cli") == []


def test_a_class_by_name_imports_its_family_only():
    assert _imported_families("from ppl_dgm.models import VAE") == ["ppl_dgm.models.vae"]
    assert _imported_families("import ppl_dgm; ppl_dgm.models.get_model_class('gmm')") == ["ppl_dgm.models.classical"]


@pytest.mark.parametrize("name", sorted(BUILTIN_MODELS))
def test_every_builtin_name_resolves_to_a_class_registered_under_it(name):
    cls = get_model_class(name)
    assert cls.registry_name == name
    assert getattr(ppl_dgm.models, cls.__name__) is cls


def test_user_models_register_and_the_zoo_names_are_taken(monkeypatch):
    monkeypatch.setattr(registry, "_USER_MODELS", {})  # leave the registry as other tests expect it

    @register_model("my_registry_test_model")
    class Mine(ppl_dgm.GenerativeModel):
        def model(self, x=None, n=None):
            pass

    assert get_model_class("My_Registry_Test_Model") is Mine and "my_registry_test_model" in list_models()
    with pytest.raises(ValueError, match="belongs to the zoo"):
        register_model("vae")(Mine)
    with pytest.raises(ValueError, match="unknown model 'nope'; known models: arm"):
        get_model_class("nope")
