"""Registry of the model zoo: name -> class, resolved lazily so that checkpoints and the CLI can
rebuild a model without importing every family."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TypeVar

BUILTIN_MODELS: dict[str, str] = {
    "gmm": "ppl_dgm.models.classical.gmm:GaussianMixture",
    "hmm": "ppl_dgm.models.classical.hmm:HMM",
    "gaussian_hmm": "ppl_dgm.models.classical.hmm:GaussianHMM",
    "categorical_hmm": "ppl_dgm.models.classical.hmm:CategoricalHMM",
    "gmm_hmm": "ppl_dgm.models.classical.hmm:GMMHMM",
    "poisson_hmm": "ppl_dgm.models.classical.hmm:PoissonHMM",
    "ppca": "ppl_dgm.models.classical.ppca:PPCA",
    "vae": "ppl_dgm.models.vae.vae:VAE",
    "betavae": "ppl_dgm.models.vae.beta:BetaVAE",
    "betatcvae": "ppl_dgm.models.vae.beta_tc:BetaTCVAE",
    "cvae": "ppl_dgm.models.vae.cvae:CVAE",
    "vampprior": "ppl_dgm.models.vae.vampprior:VampPriorVAE",
    "flowvae": "ppl_dgm.models.vae.flow_posterior:FlowPosteriorVAE",
    "hvae": "ppl_dgm.models.vae.ladder:HierarchicalVAE",
    "vqvae": "ppl_dgm.models.vae.vqvae:VQVAE",
    "svae": "ppl_dgm.models.vae.svae:SVAE",
    "nice": "ppl_dgm.models.flows.presets:NICE",
    "realnvp": "ppl_dgm.models.flows.presets:RealNVP",
    "maf": "ppl_dgm.models.flows.presets:MAF",
    "iaf": "ppl_dgm.models.flows.presets:IAF",
    "nsf": "ppl_dgm.models.flows.presets:NSF",
    "glow": "ppl_dgm.models.flows.presets:Glow",
    "idf": "ppl_dgm.models.flows.idf:IDF",
    "arm": "ppl_dgm.models.autoregressive.arm:ARM",
    "gan": "ppl_dgm.models.adversarial.gan:GAN",
    "dcgan": "ppl_dgm.models.adversarial.dcgan:DCGAN",
    "wgan": "ppl_dgm.models.adversarial.wgan:WGAN",
    "wgangp": "ppl_dgm.models.adversarial.wgan:WGANGP",
    "cgan": "ppl_dgm.models.adversarial.cgan:CGAN",
    "stylegan": "ppl_dgm.models.adversarial.style:StyleGAN",
    "ddpm": "ppl_dgm.models.diffusion.ddpm:DDPM",
    "ebm": "ppl_dgm.models.energy.ebm:EBM",
}
"""The zoo: registered name -> ``"module:Class"``; the module is imported on first use."""

_USER_MODELS: dict[str, type] = {}
T = TypeVar("T", bound=type)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _is_builtin(cls: type, spec: str) -> bool:
    """Whether ``cls`` is the class ``spec`` names (defined in that module or one of its submodules)."""
    module, _, qualname = spec.partition(":")
    return cls.__qualname__ == qualname and (cls.__module__ == module or cls.__module__.startswith(module + "."))


def register_model(name: str) -> Callable[[T], T]:
    """Class decorator: make a `GenerativeModel` available as ``name`` (case-insensitive) to
    `ppl_dgm.load` and ``ppl-dgm fit``. The zoo's own classes are listed in `BUILTIN_MODELS`."""

    def add(cls: T) -> T:
        key = name.lower()
        builtin = BUILTIN_MODELS.get(key)
        if builtin is not None and not _is_builtin(cls, builtin):
            raise ValueError(f"the name {key!r} belongs to the zoo's {builtin}; register {cls.__name__} under "
                             "another name")
        if builtin is None:
            known = _USER_MODELS.get(key)
            if known is not None and _qualified(known) != _qualified(cls):
                raise ValueError(f"a model named {key!r} is already registered ({known.__name__}); pick another name")
            _USER_MODELS[key] = cls
        cls.registry_name = key
        return cls

    return add


def get_model_class(name: str) -> type:
    """The class registered as ``name`` (case-insensitive), importing its module if needed;
    ``ValueError`` if unknown."""
    key = name.lower()
    if key in _USER_MODELS:
        return _USER_MODELS[key]
    if key not in BUILTIN_MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    module, _, qualname = BUILTIN_MODELS[key].partition(":")
    return getattr(importlib.import_module(module), qualname)


def list_models() -> list[str]:
    """Names of the registered models (the zoo and any registered since), sorted."""
    return sorted({*BUILTIN_MODELS, *_USER_MODELS})
