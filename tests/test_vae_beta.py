"""beta-VAE: beta weights the KL term of training objectives only."""

import math

import pyro
import pytest
import torch

import ppl_dgm
from ppl_dgm.datasets import load_dataset
from ppl_dgm.infer import make_objective
from ppl_dgm.models import get_model_class
from ppl_dgm.models.vae.beta import BetaVAE
from ppl_dgm.models.vae.vae import VAE
from ppl_dgm.traces import log_importance_weights

TINY = {"hidden_dims": [16], "latent_dim": 3, "dropout": 0.0}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train").x[:40]


def _twin(beta: float) -> tuple[BetaVAE, VAE]:
    torch.manual_seed(0)
    model = BetaVAE(**TINY, beta=beta)
    plain = VAE(**TINY)
    plain.load_state_dict(model.state_dict())
    return model, plain


def _loss(model, x, seed=0):
    pyro.set_rng_seed(seed)
    return float(make_objective("elbo", model=model).loss(model, {"x": x}, x.shape[0]).detach())


def test_registered_with_defaults():
    assert get_model_class("betavae") is BetaVAE
    model = BetaVAE()
    assert model.beta == 4.0 and model.kl_weight == 4.0 and model.event_shape == (64,)


@pytest.mark.parametrize("beta", [4.0, 0.5])
def test_beta_weights_the_kl_term_of_the_training_loss(digits, beta):
    model, plain = _twin(beta)
    # same draws of z: -loss = sum_n [log p(x|z) + beta (log p(z) - log q(z|x))]
    pyro.set_rng_seed(0)
    weights = log_importance_weights(plain, digits, 1)
    pyro.set_rng_seed(0)
    guide_trace = pyro.poutine.trace(plain.guide).get_trace(digits)
    z = guide_trace.nodes["z"]["value"]
    kl = plain.posterior(digits).log_prob(z) - plain.prior().log_prob(z)
    expected = -(weights.local[0] + kl - beta * kl).sum().detach()
    assert _loss(model, digits) == pytest.approx(float(expected), rel=1e-5)
    assert _loss(plain, digits) == pytest.approx(float(-weights.local[0].sum().detach()), rel=1e-5)


def test_log_likelihood_is_unscaled(digits):
    model, plain = _twin(4.0)
    model.train()  # log_likelihood must not depend on the mode either
    ours = ppl_dgm.log_likelihood(model, digits[:10], num_samples=20, seed=3)
    reference = ppl_dgm.log_likelihood(plain, digits[:10], num_samples=20, seed=3)
    assert torch.equal(ours.per_sample, reference.per_sample)
    assert torch.equal(ours.elbo, reference.elbo)


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_trains_with_each_objective(digits, objective):
    torch.manual_seed(0)
    model = BetaVAE(**TINY)
    before = [p.detach().clone() for p in model.parameters()]
    result = ppl_dgm.fit(model, digits, epochs=2, batch_size=20, objective=objective, progress=False, seed=0)
    assert all(math.isfinite(loss) for loss in result.train_loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_save_load_round_trip(tmp_path, digits):
    torch.manual_seed(0)
    model = BetaVAE(**TINY, beta=0.25).eval()
    ppl_dgm.save(model, tmp_path / "run")
    loaded = ppl_dgm.load(tmp_path / "run")
    assert isinstance(loaded, BetaVAE) and loaded.beta == 0.25
    assert torch.equal(loaded.reconstruct(digits[:4]), model.reconstruct(digits[:4]))


@pytest.mark.parametrize("beta", [0, 0.0, -1.0, math.nan, math.inf, True, "4"])
def test_bad_beta(beta):
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        BetaVAE(beta=beta)


def test_bad_data():
    with pytest.raises(ValueError):
        ppl_dgm.log_likelihood(BetaVAE(**TINY), torch.full((2, 64), 17.0))


@pytest.mark.slow
def test_beta_4_on_the_digits_pays_a_bounded_price():
    """Default fit (as `ppl-dgm fit betavae --data digits`): 98.02 nats measured, the plain VAE 93.21."""
    splits = {name: load_dataset("digits", name).x for name in ("train", "val", "test")}
    torch.manual_seed(0)
    model = BetaVAE()
    ppl_dgm.fit(model, splits["train"], val=splits["val"], patience=50, seed=0, progress=False)
    nll = ppl_dgm.log_likelihood(model, splits["test"], num_samples=1000).nll
    assert 94.0 < nll < 100.0
