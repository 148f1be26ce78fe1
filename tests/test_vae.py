"""The VAE's options and its likelihoods."""

import pytest
import torch

import ppl_dgm
from ppl_dgm.distributions import DiscretizedLogistic
from ppl_dgm.models import VAE


def test_defaults_suit_digits():
    model = VAE()
    assert model.event_shape == (64,) and model.num_levels == 17 and model.likelihood == "categorical"
    assert model.capabilities.data == "discrete"
    assert VAE(likelihood="gaussian").capabilities.data == "continuous"


@pytest.mark.parametrize("kwargs,match", [
    ({"likelihood": "poisson"}, "likelihood must be one of"),
    ({"likelihood": "bernoulli", "num_levels": 17}, "num_levels=2"),
    ({"latent_dim": 0}, "latent_dim"),
    ({"dropout": 1.0}, "dropout"),
    ({"activation": "sigmoid"}, "activation"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VAE(**kwargs)


def test_bernoulli_rejects_non_binary_data():
    with pytest.raises(ValueError, match=r"0\.\.1"):
        ppl_dgm.log_likelihood(VAE(likelihood="bernoulli"), torch.full((2, 64), 3.0))


def test_discretized_logistic_is_a_distribution_over_the_levels():
    loc = torch.tensor([[-3.0], [0.2], [7.5], [16.9]], dtype=torch.float64)
    scale = torch.tensor([[0.3], [2.0], [0.01], [5.0]], dtype=torch.float64)
    d = DiscretizedLogistic(loc, scale, num_levels=17)
    levels = torch.arange(17, dtype=torch.float64)
    log_p = d.log_prob(levels)  # (4, 17)
    assert torch.allclose(log_p.exp().sum(-1), torch.ones(4, dtype=torch.float64), atol=1e-12)
    # interior bins against the plain difference of sigmoids
    upper, lower = torch.sigmoid((levels + 0.5 - loc) / scale), torch.sigmoid((levels - 0.5 - loc) / scale)
    plain = (upper - lower)[:, 1:-1]
    ok = plain > 1e-6  # where the plain difference itself has no cancellation
    assert torch.allclose(log_p[:, 1:-1][ok], plain[ok].log(), rtol=1e-8)
    assert torch.isfinite(log_p).all()  # far tails stay finite


def test_discretized_logistic_samples_follow_the_masses():
    torch.manual_seed(0)
    d = DiscretizedLogistic(torch.tensor(8.3), torch.tensor(1.5), num_levels=17)
    draws = d.sample((200_000,))
    freq = torch.bincount(draws.long(), minlength=17).double() / draws.numel()
    assert torch.allclose(freq, d.log_prob(torch.arange(17.0)).exp().double(), atol=3e-3)


@pytest.mark.parametrize("likelihood", ["categorical", "gaussian", "discretized_logistic"])
def test_reconstructions_are_means_in_data_units(likelihood):
    model = VAE(hidden_dims=(8,), likelihood=likelihood)
    x = ppl_dgm.datasets.load_dataset("digits", "val").x[:5]
    mean = model.reconstruct(x)
    assert mean.shape == (5, 64) and torch.isfinite(mean).all()
    assert (mean >= 0).all() and (mean <= 16).all()


def test_discretized_logistic_mean():
    d = DiscretizedLogistic(torch.tensor([3.0, 8.0]), torch.tensor([0.2, 100.0]), num_levels=17)
    assert torch.allclose(d.mean, torch.tensor([3.0, 8.0]), atol=0.05)
