"""Every registered model honours the contract of GenerativeModel."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

import ppl_dgm
from ppl_dgm.datasets import load_dataset
from ppl_dgm.evaluation import log_importance_weights
from ppl_dgm.evaluation.compression import is_codable, verify_coding
from ppl_dgm.infer import get_engine_class, make_objective
from ppl_dgm.infer.fitting import make_engine
from ppl_dgm.models import get_model_class, list_models
from ppl_dgm.traces import in_data_plate, is_latent

# Small configurations of every registered model, with the data set it is checked on.
CASES = {
    "vae": [
        ({"hidden_dims": [16], "latent_dim": 3, "likelihood": likelihood}, "digits")
        for likelihood in ("categorical", "gaussian", "discretized_logistic")
    ] + [({"hidden_dims": [16], "latent_dim": 3, "likelihood": "bernoulli"}, "digits_binary")],
    "gmm": [({"n_components": 2, "covariance_type": kind, "random_state": 0}, "digits")
            for kind in ("full", "tied", "diag", "spherical")]
           + [({"n_components": 2, "covariance_type": "diag", "random_state": 0, "posterior": "normal"}, "digits")],
    "gaussian_hmm": [({"n_components": 2, "covariance_type": "diag", "random_state": 0}, "digits_sequence")],
    "categorical_hmm": [({"n_components": 2, "n_features": 17, "random_state": 0}, "digits_symbols")],
    "gmm_hmm": [({"n_components": 2, "n_mix": 2, "covariance_type": kind, "random_state": 0, **prior},
                 "digits_sequence")
                for kind, prior in (("diag", {"covars_weight": 0.1}), ("full", {"covars_prior": np.eye(8).tolist()}))],
    "poisson_hmm": [({"n_components": 2, "random_state": 0}, "digits_sequence")],
    "hmm": [({"n_components": 2, "covariance_type": kind, "random_state": 0, "posterior": posterior}, "digits_sequence")
            for kind, posterior in (("full", "map"), ("tied", "normal"), ("diag", "map"), ("spherical", "normal"))],
    "ppca": [({"n_components": 3, "random_state": 0, "posterior": kind}, "digits") for kind in ("map", "normal")],
    **{name: [({"bounds": [0, 17], **kwargs}, "digits"),
              ({"bounds": [0, 17], "dequantization": "variational", **kwargs}, "digits")]
       for name, kwargs in {"nice": {"num_layers": 2, "hidden_dims": [16]},
                            "realnvp": {"num_layers": 2, "hidden_dims": [16]},
                            "maf": {"num_layers": 2, "hidden_dims": [16]},
                            "iaf": {"num_layers": 1, "hidden_dims": [16]},
                            "nsf": {"num_layers": 2, "hidden_dims": [16], "bins": 4},
                            "glow": {"num_steps": 2, "hidden_channels": 8}}.items()},
    "idf": [({"hidden_dims": [16], "num_couplings": 2, "num_components": 3}, "digits"),
            ({"hidden_dims": [16], "num_couplings": 2, "num_parts": 2, "dropout": 0.0}, "digits")],
    "arm": [({"channels": 8, "num_blocks": 1}, "digits"),
            ({"channels": 8, "num_blocks": 1, "encoding": "one_hot", "first_kernel_size": 3}, "digits")],
    "gan": [({"latent_dim": 4, "hidden_dims": [16]}, "digits")],
    "dcgan": [({"latent_dim": 4, "channels": 4}, "digits")],
    "wgan": [({"latent_dim": 4, "channels": 4, "n_critic": 1}, "digits"),  # one step updates the generator too
             ({"latent_dim": 4, "network": "mlp", "hidden_dims": [16], "n_critic": 1}, "digits")],
    "wgangp": [({"latent_dim": 4, "channels": 4, "n_critic": 1}, "digits")],
    "cvae": [({"hidden_dims": [16], "latent_dim": 3}, "digits")],
    "vampprior": [({"hidden_dims": [16], "latent_dim": 3, "num_pseudo_inputs": 5}, "digits")],
    "betavae": [({"hidden_dims": [16], "latent_dim": 3, "beta": 4.0}, "digits")],
    "betatcvae": [({"hidden_dims": [16], "latent_dim": 3}, "digits"),
                  ({"hidden_dims": [16], "latent_dim": 3, "likelihood": "discretized_logistic", "alpha": 0.0},
                   "digits")],
    "vqvae": [({"hidden_dims": [16], "num_positions": 3, "code_dim": 2, "num_codes": 4,
                "prior_hidden_dims": [8], "codebook": codebook}, "digits") for codebook in ("ema", "loss")],
    "svae": [({"hidden_dims": [16], "latent_dim": 3}, "digits")],
    "hvae": [({"hidden_dims": [16], "latent_dims": [3, 2], "ladder_width": 8, "likelihood": likelihood}, "digits")
             for likelihood in ("categorical", "discretized_logistic")],
    "flowvae": [({"hidden_dims": [16], "latent_dim": 3, "num_flows": 2, "context_dim": 4, "flow_hidden": 8,
                  "flow": flow, "likelihood": "categorical"}, "digits")
                for flow in ("planar", "householder", "sylvester", "iaf")],
    "cgan": [({"latent_dim": 4, "hidden_dims": [16]}, "digits"),
             ({"latent_dim": 4, "hidden_dims": [16], "conditioning": "concat"}, "digits")],
    "stylegan": [({"latent_dim": 4, "style_dim": 8, "mapping_layers": 2, "channels": 4}, "digits")],
    "ebm": [({"hidden_dims": [4, 8], "sample_steps": 5}, "digits"),
            ({"network": "mlp", "hidden_dims": [16], "sample_steps": 5}, "digits")],
    "ddpm": [({"timesteps": 4, "width": 16, "num_blocks": 1}, "digits"),
             ({"timesteps": 4, "width": 16, "num_blocks": 1, "schedule": "cosine", "parameterization": "levels",
               "variance": "learned", "loss": "hybrid", "timestep_sampling": "importance"}, "digits")],
}


def test_every_registered_model_has_a_contract_case():
    assert sorted(CASES) == list_models()


def _data(name: str, device, dtype=torch.float32) -> torch.Tensor:
    if name == "digits_binary":
        return (load_dataset("digits", "val", device=device, dtype=dtype).x[:20] > 8).to(dtype)
    if name == "digits_symbols":  # one symbol (0..16) per step: the first pixel of each of the 8 rows
        return load_dataset("digits_sequence", "val", device=device, dtype=dtype).x[:20, :, :1]
    return load_dataset(name, "val", device=device, dtype=dtype).x[:20]


def _context(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The labels a conditional model takes beside ``x`` (the digits' own)."""
    if not model.capabilities.conditional:
        return {}
    return {"y": load_dataset("digits", "val", device=x.device).y[: x.shape[0]]}


def _built(name: str, kwargs: dict, x: torch.Tensor, device) -> torch.nn.Module:
    """A model of the registry, moved to ``device`` and set up on ``x`` as fit would."""
    model = get_model_class(name)(**kwargs).to(device)
    if x.dtype == torch.float64:  # set up in the dtype it will run in
        model = model.double()
    model.setup(x, **_context(model, x))
    return model


PARAMS = [pytest.param(name, kwargs, data, id=f"{name}-{i}")
          for name, cases in CASES.items() for i, (kwargs, data) in enumerate(cases)]


@pytest.mark.parametrize("name,kwargs,data", PARAMS)
def test_sample_shape_and_support(name, kwargs, data, device):
    x = _data(data, device)
    model = _built(name, kwargs, x, device)
    samples = ppl_dgm.draw(model, 7, **_context(model, x[:7]))
    assert samples.shape == (7, *x.shape[1:])
    assert samples.device.type == device.type and samples.dtype == model.dtype
    model.check_data(samples)  # draws lie in the support the model scores


@pytest.mark.parametrize("name,kwargs,data", PARAMS)
def test_log_likelihood_is_finite(name, kwargs, data, device):
    x = _data(data, device)
    model = _built(name, kwargs, x, device)
    if model.capabilities.likelihood == "none":  # scored by its samples: the error says so
        with pytest.raises(ValueError, match="defines no normalized likelihood.*sample-quality metrics"):
            ppl_dgm.log_likelihood(model, x, num_samples=8)
        return
    result = ppl_dgm.log_likelihood(model, {"x": x, **_context(model, x)}, num_samples=8)
    assert result.per_sample.shape == (20,)
    assert torch.isfinite(result.per_sample).all()
    assert math.isfinite(result.stderr)


def _one_engine_step(model, x: torch.Tensor) -> None:
    """One update by the model's own engine (its parameters' gradients stay in place)."""
    engine = make_engine(model)
    batch = {"x": x, **_context(model, x)}
    engine.prepare(batch)
    engine.step(batch, x.shape[0])


@pytest.mark.parametrize("name,kwargs,data", PARAMS)
def test_gradients_reach_every_parameter(name, kwargs, data, device):
    x = _data(data, device)
    model = _built(name, kwargs, x, device)
    if model.default_engine in ("svi", "em"):  # the story's bound
        with pyro.validation_enabled(True):
            loss = make_objective("elbo", model=model).loss(model, {"x": x, **_context(model, x)}, dataset_size=20)
        loss.backward()
        for pname, param in model.named_parameters():
            assert param.grad is not None, f"no gradient reaches {pname}"
            assert torch.isfinite(param.grad).all(), pname
            assert param.grad.abs().sum() > 0, f"zero gradient at {pname}"
        return
    # the engine's own objective(s): a gradient from one step, or else a move over a short fit (an engine may
    # update some parameters without a gradient, a VQ-VAE's EMA codebook, or in a later stage, its code prior)
    before = {pname: param.detach().clone() for pname, param in model.named_parameters()}
    _one_engine_step(model, x)
    for pname, param in model.named_parameters():
        assert param.grad is None or torch.isfinite(param.grad).all(), pname
    idle = [pname for pname, param in model.named_parameters() if param.grad is None or not param.grad.abs().sum()]
    if idle:
        ppl_dgm.fit(model, {"x": x, **_context(model, x)}, epochs=1, batch_size=10, progress=False)
        params = dict(model.named_parameters())
        for pname in idle:
            assert not torch.equal(params[pname].detach(), before[pname]), f"{pname}: no gradient, and no move in a fit"


@pytest.mark.parametrize("name,kwargs,data", PARAMS)
def test_save_load_gives_identical_outputs(name, kwargs, data, device, tmp_path):
    x = _data(data, device)
    model = _built(name, kwargs, x, device)
    minibatches = get_engine_class(model.default_engine).minibatches
    ppl_dgm.fit(model, {"x": x, **_context(model, x)}, progress=False,
                **({"epochs": 2, "batch_size": 10} if minibatches else {}))
    ppl_dgm.save(model, tmp_path / "ckpt")
    loaded = ppl_dgm.load(tmp_path / "ckpt", device=device)
    assert type(loaded) is type(model) and loaded.config == model.config
    outputs = []
    for m in (model, loaded):
        m.eval()
        torch.manual_seed(3)
        scores = ppl_dgm.log_likelihood(m, {"x": x, **_context(m, x)}, num_samples=4, seed=3).per_sample \
            if m.capabilities.likelihood != "none" else torch.zeros(())
        outputs.append((scores, ppl_dgm.draw(m, 5, **_context(m, x[:5]))))
    assert torch.equal(outputs[0][0], outputs[1][0])
    assert torch.equal(outputs[0][1], outputs[1][1])


@pytest.mark.parametrize("name,kwargs,data", PARAMS)
def test_float64_is_honoured(name, kwargs, data):
    x = _data(data, "cpu", torch.float64)
    model = _built(name, kwargs, x, "cpu")
    if model.capabilities.likelihood == "none":  # no weights to score; its engine trains in float64
        _one_engine_step(model, x)
        assert all(p.grad is None or p.grad.dtype == torch.float64 for p in model.parameters())
    else:
        assert log_importance_weights(model, x, 2, _context(model, x)).local.dtype == torch.float64
    assert ppl_dgm.draw(model, 3, **_context(model, x[:3])).dtype == torch.float64


# The classical estimators: a guide derived from a trace of the story, checkpoints of SVI fits.
CLASSICAL = [pytest.param(name, {**kwargs, "posterior": "normal"}, data, id=f"{name}-{i}")
             for name in ("gmm", "hmm", "gaussian_hmm", "categorical_hmm", "gmm_hmm", "poisson_hmm", "ppca")
             for i, (kwargs, data) in enumerate(CASES[name])]


def _with_an_extra_site(cls: type) -> type:
    """``cls`` whose story draws one more global site, named nowhere else."""
    def model(self, x=None, n=None, **ctx):
        pyro.sample("extra", dist.LogNormal(0.0, 0.01))
        return cls.model(self, x, n, **ctx)

    return type(f"{cls.__name__}WithExtra", (cls,), {"model": model})


def _global_latents(trace) -> dict[str, dict]:
    return {name: site for name, site in trace.nodes.items() if is_latent(site) and not in_data_plate(site)}


@pytest.mark.parametrize("extra", [False, True], ids=["story", "story-with-a-new-site"])
@pytest.mark.parametrize("name,kwargs,data", CLASSICAL)
def test_guide_sites_are_the_global_latents_of_a_trace_of_the_story(name, kwargs, data, extra):
    x = _data(data, "cpu", torch.float64)
    cls = _with_an_extra_site(get_model_class(name)) if extra else get_model_class(name)
    model = cls(**kwargs)
    model.setup(x)
    expected = _global_latents(poutine.trace(model.model).get_trace(x))
    assert ("extra" in expected) == extra and "assignment" not in expected and "z" not in expected
    guide_sites = _global_latents(poutine.trace(model.guide).get_trace(x))
    assert set(model.guide_params.sites) == set(guide_sites) == set(expected)
    for site_name, site in expected.items():
        assert guide_sites[site_name]["value"].shape == site["value"].shape, site_name
        assert repr(model.guide_params.sites[site_name]["fn"].support) == repr(site["fn"].support), site_name
    assert set(model.point_estimate()) == set(expected)
    if extra:  # a site the fitted state does not determine starts at its prior median
        assert float(model.point_estimate()["extra"]) == pytest.approx(1.0, abs=0.05)


def _score_samples(model, x: torch.Tensor) -> np.ndarray:
    if x.dim() == 3:  # sequences: hmmlearn's rows and lengths
        return np.asarray(model.score_samples(x.reshape(-1, x.shape[-1]).numpy(), [x.shape[1]] * x.shape[0])[1])
    return model.score_samples(x.numpy())


@pytest.mark.parametrize("name,kwargs,data", CLASSICAL)
def test_svi_fit_with_a_normal_posterior_saves_and_loads(name, kwargs, data, tmp_path):
    x = _data(data, "cpu", torch.float64)
    model = get_model_class(name)(**kwargs)
    ppl_dgm.fit(model, x, engine="svi", epochs=2, batch_size=10, lr=0.05, progress=False, seed=0)
    assert bool(model.uses_guide_point) and model.guide_params.raw_scale  # the normal guide's scales are fitted
    ppl_dgm.save(model, tmp_path / "ckpt")
    loaded = ppl_dgm.load(tmp_path / "ckpt")
    assert bool(loaded.uses_guide_point)
    saved, restored = model.state_dict(), loaded.state_dict()
    assert set(restored) == set(saved) and all(torch.equal(restored[k], saved[k]) for k in saved)
    np.testing.assert_array_equal(_score_samples(loaded, x), _score_samples(model, x))
    points = model.point_estimate()
    assert set(loaded.point_estimate()) == set(points)
    for site_name, value in loaded.point_estimate().items():
        assert torch.equal(value, points[site_name]), site_name


CODABLE = [case for case in PARAMS if is_codable(get_model_class(case.values[0])(**case.values[1]))]


@pytest.mark.parametrize("name,kwargs,data", CODABLE)
def test_exact_discrete_models_entropy_code_their_data_bit_exactly(name, kwargs, data, device):
    x = _data(data, device)
    model = _built(name, kwargs, x, device).eval()
    verify_coding(model, x)
    assert torch.equal(ppl_dgm.decompress(model, ppl_dgm.compress(model, x)), x)
