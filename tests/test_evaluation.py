"""log_likelihood: exact path, importance weighting, dequantization, units, bad input."""

import math

import pytest
import torch

import ppl_dgm
from ppl_dgm.evaluation import bits_per_dim
from ppl_dgm.models import VAE

from helpers import DiagonalGaussian, LinearGaussian


def test_exact_models_use_log_prob():
    model = DiagonalGaussian(2)
    x = torch.randn(30, 2)
    result = ppl_dgm.log_likelihood(model, x)
    expected = torch.distributions.Normal(0.0, math.log(2)).log_prob(x).sum(-1).double()
    assert result.kind == "exact" and result.num_samples == 1 and result.elbo is None
    assert result.per_sample.shape == (30,)
    assert torch.allclose(result.per_sample, expected, rtol=1e-6)
    assert result.stderr == pytest.approx(float(expected.std()) / math.sqrt(30), rel=1e-5)


def test_integer_data_under_a_density_gets_the_dequantization_bound():
    model = DiagonalGaussian(2)
    x = torch.randint(0, 3, (2000, 2)).float()
    result = ppl_dgm.log_likelihood(model, x)
    assert result.kind == "bound"
    # E_u log p(x + u) with u ~ U[0,1): close to the average of the density over the unit cell
    cells = torch.stack([model.log_prob(x + u).detach() for u in torch.rand(200, 1, 2)]).mean(0)
    assert result.per_sample.shape == (2000,)
    assert abs(result.mean - float(cells.mean())) < 0.05
    assert ppl_dgm.log_likelihood(model, x, dequantize=False).kind == "exact"


def test_importance_weighted_estimate_increases_with_samples():
    torch.manual_seed(0)
    model = LinearGaussian(4, 2)
    x = model.sample(200)
    small = ppl_dgm.log_likelihood(model, x, num_samples=1)
    large = ppl_dgm.log_likelihood(model, x, num_samples=500)
    exact = float(model.exact_log_prob(x).mean())
    assert small.mean < large.mean <= exact + 0.01
    assert large.elbo_mean < large.mean


def test_evaluation_is_reproducible_and_independent_of_batching():
    model = VAE(hidden_dims=(16,), latent_dim=2)
    x = ppl_dgm.datasets.load_dataset("digits", "val").x[:40]
    a = ppl_dgm.log_likelihood(model, x, num_samples=30, seed=5)
    b = ppl_dgm.log_likelihood(model, x, num_samples=30, seed=5)
    assert torch.equal(a.per_sample, b.per_sample)
    c = ppl_dgm.log_likelihood(model, x, num_samples=30, batch_size=7, seed=5)
    assert torch.allclose(a.mean * torch.ones(()), c.mean * torch.ones(()), atol=0.2)


def test_units():
    assert bits_per_dim(64 * math.log(2), 64) == pytest.approx(1.0)
    model = DiagonalGaussian(2)
    result = ppl_dgm.log_likelihood(model, torch.randn(10, 2))
    assert result.bits_per_dim == pytest.approx(result.nll / (2 * math.log(2)))
    summary = result.summary()
    assert {"test_nll_nats", "test_nll_stderr", "bits_per_dim", "kind"} <= set(summary)


@pytest.mark.parametrize("bad,match", [
    (torch.full((3, 64), float("nan")), "non-finite"),
    (torch.full((3, 64), float("inf")), "non-finite"),
    (torch.zeros(0, 64), "empty"),
    (torch.zeros(3, 8, 8), r"expected \(N, 64\)"),
    (torch.full((3, 64), 17.0), r"0\.\.16"),
    (torch.full((3, 64), -1.0), r"0\.\.16"),
    (torch.full((3, 64), 2.5), "integers"),
])
def test_bad_data_for_the_categorical_vae_is_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        ppl_dgm.log_likelihood(VAE(hidden_dims=(8,)), bad)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_samples"):
        ppl_dgm.log_likelihood(DiagonalGaussian(2), torch.zeros(3, 2), num_samples=0)
    with pytest.raises(ValueError, match="no exact log_prob"):
        VAE().log_prob(torch.zeros(2, 64))


def test_log_likelihood_on_device(device):
    model = VAE(hidden_dims=(16,), latent_dim=2).to(device)
    x = ppl_dgm.datasets.load_dataset("digits", "val", device=device).x[:16]
    result = ppl_dgm.log_likelihood(model, x, num_samples=10)
    assert result.per_sample.device.type == "cpu" and torch.isfinite(result.per_sample).all()


def test_a_log_likelihood_prints_its_figures_not_every_value():
    from ppl_dgm.evaluation import LogLikelihood

    result = LogLikelihood(torch.full((500,), -93.0, dtype=torch.float64), "estimate", 1000, 64,
                           elbo=torch.full((500,), -96.0, dtype=torch.float64))
    text = repr(result)
    assert "NLL 93.00 ± 0.00" in text and "-ELBO 96.00" in text and "N=500" in text
    assert len(text) < 200
