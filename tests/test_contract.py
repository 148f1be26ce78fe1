"""Every registered model honours the contract of GenerativeModel."""

import math

import pyro
import pytest
import torch

import ppl_dgm
from ppl_dgm.datasets import load_dataset
from ppl_dgm.evaluation import log_importance_weights
from ppl_dgm.infer import make_objective
from ppl_dgm.models import get_model_class, list_models

# Small configurations of every registered model, with the data set it is checked on.
CASES = {
    "vae": [
        ({"hidden_dims": [16], "latent_dim": 3, "likelihood": likelihood}, "digits")
        for likelihood in ("categorical", "gaussian", "discretized_logistic")
    ] + [({"hidden_dims": [16], "latent_dim": 3, "likelihood": "bernoulli"}, "digits_binary")],
    "gmm": [({"n_components": 2, "covariance_type": kind, "random_state": 0}, "digits")
            for kind in ("full", "tied", "diag", "spherical")],
    "hmm": [({"n_components": 2, "covariance_type": kind, "random_state": 0, "posterior": posterior}, "digits_sequence")
            for kind, posterior in (("full", "map"), ("tied", "normal"), ("diag", "map"), ("spherical", "normal"))],
    "ppca": [({"n_components": 3, "random_state": 0, "posterior": kind}, "digits") for kind in ("map", "normal")],
}


def test_every_registered_model_has_a_contract_case():
    assert sorted(CASES) == list_models()


def _data(name: str, device, dtype=torch.float32) -> torch.Tensor:
    if name == "digits_binary":
        return (load_dataset("digits", "val", device=device, dtype=dtype).x[:20] > 8).to(dtype)
    return load_dataset(name, "val", device=device, dtype=dtype).x[:20]


def _built(name: str, kwargs: dict, x: torch.Tensor, device) -> torch.nn.Module:
    """A model of the registry, moved to ``device`` and set up on ``x`` as fit would."""
    model = get_model_class(name)(**kwargs).to(device)
    model.setup(x)
    return model


PARAMS = [pytest.param(name, kwargs, data, id=f"{name}-{i}")
          for name, cases in CASES.items() for i, (kwargs, data) in enumerate(cases)]


@pytest.mark.parametrize("name,kwargs,data", PARAMS)
def test_sample_shape_and_support(name, kwargs, data, device):
    x = _data(data, device)
    model = _built(name, kwargs, x, device)
    samples = ppl_dgm.draw(model, 7)
    assert samples.shape == (7, *x.shape[1:])
    assert samples.device.type == device.type and samples.dtype == model.dtype
    model.check_data(samples)  # draws lie in the support the model scores


@pytest.mark.parametrize("name,kwargs,data", PARAMS)
def test_log_likelihood_is_finite(name, kwargs, data, device):
    x = _data(data, device)
    model = _built(name, kwargs, x, device)
    result = ppl_dgm.log_likelihood(model, x, num_samples=8)
    assert result.per_sample.shape == (20,)
    assert torch.isfinite(result.per_sample).all()
    assert math.isfinite(result.stderr)


@pytest.mark.parametrize("name,kwargs,data", PARAMS)
def test_gradients_reach_every_parameter(name, kwargs, data, device):
    x = _data(data, device)
    model = _built(name, kwargs, x, device)
    with pyro.validation_enabled(True):
        loss = make_objective("elbo", model=model).loss(model, {"x": x}, dataset_size=20)
    loss.backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"no gradient reaches {pname}"
        assert torch.isfinite(param.grad).all(), pname
        assert param.grad.abs().sum() > 0, f"zero gradient at {pname}"


@pytest.mark.parametrize("name,kwargs,data", PARAMS)
def test_save_load_gives_identical_outputs(name, kwargs, data, device, tmp_path):
    x = _data(data, device)
    model = _built(name, kwargs, x, device)
    ppl_dgm.fit(model, x, epochs=2, batch_size=10, progress=False)
    ppl_dgm.save(model, tmp_path / "ckpt")
    loaded = ppl_dgm.load(tmp_path / "ckpt", device=device)
    assert type(loaded) is type(model) and loaded.config == model.config
    outputs = []
    for m in (model, loaded):
        m.eval()
        torch.manual_seed(3)
        outputs.append((ppl_dgm.log_likelihood(m, x, num_samples=4, seed=3).per_sample, ppl_dgm.draw(m, 5)))
    assert torch.equal(outputs[0][0], outputs[1][0])
    assert torch.equal(outputs[0][1], outputs[1][1])


@pytest.mark.parametrize("name,kwargs,data", PARAMS)
def test_float64_is_honoured(name, kwargs, data):
    x = _data(data, "cpu", torch.float64)
    model = _built(name, kwargs, x, "cpu").double()
    assert log_importance_weights(model, x, 2).local.dtype == torch.float64
    assert ppl_dgm.draw(model, 3).dtype == torch.float64
