"""Active units and the KL per latent dimension (`ppl_dgm.evaluation.latents`)."""

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from ppl_dgm.evaluation.latents import latent_usage
from ppl_dgm.models import GMM, VAE


def _vae(latent_dim=3):
    torch.manual_seed(0)
    return VAE(hidden_dims=(8,), latent_dim=latent_dim)


def test_activity_is_the_variance_of_the_posterior_means_and_kl_is_the_gaussian_kl():
    model, x = _vae(), torch.randint(0, 17, (20, 64)).float()
    usage = latent_usage(model, x)
    assert model.training  # the mode it was in comes back
    model.eval()
    loc, scale = model.encode(x)
    assert torch.allclose(torch.as_tensor(usage.activity), loc.double().var(0), rtol=1e-5)
    expected = kl_divergence(Normal(loc, scale), Normal(0.0, 1.0)).mean(0).double()
    assert torch.allclose(torch.as_tensor(usage.kl_per_dim), expected, rtol=1e-5)
    assert usage.active_units == int((loc.double().var(0) > 0.01).sum())


def test_a_dimension_the_encoder_ignores_is_inactive():
    model, x = _vae(), torch.randint(0, 17, (20, 64)).float()
    with torch.no_grad():  # the first code dimension's mean no longer depends on x
        model.encoder[-1].weight[0].zero_()
    usage = latent_usage(model, x)
    assert usage.activity[0] < 1e-12 and usage.active_units <= 2
    assert usage.summary()["latent_dims"] == 3


def test_models_without_a_code_space_and_too_little_data_are_refused():
    with pytest.raises(TypeError, match="posterior_mean"):
        latent_usage(GMM(2), torch.randn(10, 2))
    with pytest.raises(ValueError, match="at least 2 examples"):
        latent_usage(_vae(), torch.zeros(1, 64))
