"""PSIS k̂ of guides: an exact posterior gives equal weights, a wide guide small k̂, a narrow one large k̂."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F

import ppl_dgm.diagnostics.psis as psis_module
from ppl_dgm import GenerativeModel, X, data_plate
from ppl_dgm.datasets import load_dataset
from ppl_dgm.diagnostics import psis_diagnostic
from ppl_dgm.models import VAE

from helpers import DiagonalGaussian, Implicit, LinearGaussian


def guide_at_posterior(scale_factor: float) -> LinearGaussian:
    """A `LinearGaussian` whose guide is the exact posterior with its scale times ``scale_factor``.

    With orthogonal columns of ``W`` the posterior covariance ``(I + W^T W / sigma^2)^-1`` is
    diagonal, so the guide's family holds it: mean ``A (x - b)`` with ``A = Sigma W^T / sigma^2``.
    """
    model = LinearGaussian(dim=5, latent_dim=2)
    with torch.no_grad():
        columns, _ = torch.linalg.qr(torch.randn(5, 2))
        model.weight.copy_(columns * torch.tensor([2.0, 0.5]))
        model.bias.copy_(torch.randn(5))
        noise = F.softplus(model.raw_noise)
        covariance = torch.linalg.inv(torch.eye(2) + model.weight.T @ model.weight / noise**2)
        gain = covariance @ model.weight.T / noise**2
        model.encoder.weight.copy_(gain)
        model.encoder.bias.copy_(-gain @ model.bias)
        model.raw_posterior_scale.copy_(torch.log(torch.expm1(covariance.diagonal().sqrt() * scale_factor)))
    return model


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    torch.manual_seed(1)
    return guide_at_posterior(1.0).sample(100)


def test_exact_posterior_gives_equal_weights_and_the_exact_likelihood(data, monkeypatch):
    model = guide_at_posterior(1.0)
    monkeypatch.setattr(psis_module, "ROWS_PER_PASS", 1000)  # particle chunks of 33, batches of 30
    result = psis_diagnostic(model, data, num_samples=100, batch_size=30)
    assert result.khat.shape == (100,)
    assert np.all(result.khat == -np.inf)  # no tail to fit: every weight is p(x_n)
    np.testing.assert_allclose(result.log_likelihood, model.exact_log_prob(data).numpy(), rtol=1e-5)
    assert result.share_above(0.0) == 0.0


def test_wider_guide_has_small_khat(data):
    result = psis_diagnostic(guide_at_posterior(1.3), data, num_samples=500)
    assert np.all(np.isfinite(result.khat))
    assert result.khat.max() < 0.5  # bounded weights: k <= 0 in theory
    assert result.share_above(0.5) == 0.0


def test_narrow_guide_has_large_khat(data, tmp_path):
    # q with scale s, posterior sigma: the weights' tail has k = 1 - s^2 / sigma^2 = 0.96
    result = psis_diagnostic(guide_at_posterior(0.2), data, num_samples=500, plot=tmp_path / "khat.png")
    assert np.median(result.khat) > 0.7
    assert result.share_above(0.7) > 0.5
    summary = result.summary()
    assert summary["num_examples"] == 100 and summary["num_samples"] == 500
    assert summary["share_above_0.7"] == result.share_above(0.7)
    assert summary["max_khat"] > 1.0 and not summary["dequantized"]
    # a too-narrow proposal underestimates the log-likelihood
    assert summary["log_likelihood_nats"] < float(guide_at_posterior(0.2).exact_log_prob(data).mean())
    assert (tmp_path / "khat.png").stat().st_size > 0


def test_seeded():
    model, x = guide_at_posterior(0.5), torch.randn(10, 5)
    first, second = (psis_diagnostic(model, x, num_samples=50, seed=3) for _ in range(2))
    np.testing.assert_array_equal(first.khat, second.khat)
    assert not np.array_equal(first.khat, psis_diagnostic(model, x, num_samples=50, seed=4).khat)


def test_vae_on_digits():
    x = load_dataset("digits", "test").x[:6]
    result = psis_diagnostic(VAE(hidden_dims=(16,), latent_dim=2), x, num_samples=50)
    assert result.khat.shape == (6,) and np.all(np.isfinite(result.log_likelihood))
    gaussian = psis_diagnostic(VAE(hidden_dims=(16,), latent_dim=2, likelihood="gaussian"), x, num_samples=50)
    assert gaussian.summary()["dequantized"]  # a density on integer pixels is scored on x + u


class GlobalRate(GenerativeModel):
    """``mu ~ N(0, 1)`` shared by every example; the guide samples it outside plate ``"data"``."""

    def model(self, x=None, n=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with data_plate(x, n):
            return pyro.sample(X, dist.Normal(mu, 1.0), obs=x)

    def guide(self, x=None, n=None):
        pyro.sample("mu", dist.Normal(0.0, 0.5))


def test_refuses_what_it_cannot_diagnose():
    with pytest.raises(ValueError, match="exact likelihood.*no latent"):
        psis_diagnostic(DiagonalGaussian(2), torch.randn(4, 2))
    with pytest.raises(ValueError, match="no normalized likelihood"):
        psis_diagnostic(Implicit(), torch.randn(4, 2))
    with pytest.raises(ValueError, match="global latents mu"):
        psis_diagnostic(GlobalRate(), torch.randn(4), num_samples=30)
    with pytest.raises(ValueError, match=f"num_samples must be an integer >= {psis_module.MIN_SAMPLES}"):
        psis_diagnostic(guide_at_posterior(1.0), torch.randn(4, 5), num_samples=20)
    with pytest.raises(ValueError, match="shape"):
        psis_diagnostic(guide_at_posterior(1.0), torch.randn(4, 3))


def test_min_samples_is_what_psis_needs():
    # ArviZ fits the largest ceil(min(K/5, 3 sqrt K)) weights and gives up below 5 of them
    assert math.ceil(min(psis_module.MIN_SAMPLES / 5, 3 * math.sqrt(psis_module.MIN_SAMPLES))) == 5
    assert math.ceil(min((psis_module.MIN_SAMPLES - 1) / 5, 3 * math.sqrt(psis_module.MIN_SAMPLES - 1))) == 4
