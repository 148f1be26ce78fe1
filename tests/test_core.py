"""A user's own story, written with nothing but model and guide, works with everything."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Predictive
from torch import nn

import ppl_dgm
from ppl_dgm import Capabilities, GenerativeModel, X, Z, data_plate


class TwoClusters(GenerativeModel):
    """``z ~ N(0, 1)``, ``x ~ N(a * z + b, 0.5)`` in 2-D; the guide is a learned linear map."""

    capabilities = Capabilities(likelihood="bound")
    event_shape = (2,)

    def __init__(self, spread: float = 1.0) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor([spread, -spread]))
        self.b = nn.Parameter(torch.zeros(2))
        self.encoder = nn.Linear(2, 2)

    def model(self, x=None, n=None):
        with data_plate(x, n):
            z = pyro.sample(Z, dist.Normal(0.0, 1.0))
            return pyro.sample(X, dist.Normal(z[:, None] * self.a + self.b, 0.5).to_event(1), obs=x)

    def guide(self, x=None, n=None):
        with data_plate(x, n):
            loc, log_scale = self.encoder(x).unbind(-1)
            pyro.sample(Z, dist.Normal(loc, log_scale.exp()))


def test_user_story_gets_fit_evaluation_sampling_and_checkpoints(tmp_path):
    torch.manual_seed(0)
    truth = TwoClusters(spread=2.0)
    x = truth.sample(600)
    model = TwoClusters()
    before = ppl_dgm.log_likelihood(model, x[500:], num_samples=200).mean
    result = ppl_dgm.fit(model, x[:500], val=x[500:], epochs=40, batch_size=50, lr=0.05, progress=False)
    after = ppl_dgm.log_likelihood(model, x[500:], num_samples=200)
    assert after.mean > before + 0.5 and result.best_epoch is not None
    assert model.config == {"spread": 1.0}
    ppl_dgm.save(model, tmp_path)
    assert torch.equal(ppl_dgm.load(tmp_path).a, model.a)
    # pyro.infer.Predictive over the model draws from the same distribution as sample()
    direct = model.sample(4000)
    predictive = Predictive(model.model, num_samples=1)(None, n=4000)[X][0].detach()
    assert predictive.shape == direct.shape
    assert torch.allclose(direct.mean(0), predictive.mean(0), atol=0.1)
    assert torch.allclose(direct.std(0), predictive.std(0), rtol=0.05)


def test_a_model_is_required():
    class NoStory(GenerativeModel):
        pass

    with pytest.raises(TypeError, match="must define model"):
        NoStory()


def test_sample_needs_a_positive_count():
    with pytest.raises(ValueError, match="positive integer"):
        TwoClusters().sample(0)
    with pytest.raises(ValueError, match="number of examples"):
        TwoClusters().model()


def test_global_latents_are_scored_by_the_posterior_predictive():
    class GlobalMean(GenerativeModel):
        event_shape = (1,)

        def __init__(self):
            super().__init__()
            self.loc = nn.Parameter(torch.zeros(()))

        def model(self, x=None, n=None):
            mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
            with data_plate(x, n):
                pyro.sample(X, dist.Normal(mu, 1.0).expand([1]).to_event(1), obs=x)

        def guide(self, x=None, n=None):
            pyro.sample("mu", dist.Normal(self.loc, 0.05))

    model = GlobalMean()
    # held-out data is scored by log E_q[p(x | mu)] = log N(x; loc, 1 + 0.05^2), not refused
    held_out = torch.linspace(-2.1, 1.9, 5)[:, None]
    result = ppl_dgm.log_likelihood(model, held_out, num_samples=4000)
    assert result.kind == "predictive"
    exact = dist.Normal(0.0, (1 + 0.05**2) ** 0.5).log_prob(held_out[:, 0]).double()
    assert (result.per_sample - exact).abs().max() < 0.01
    # the ELBO handles them: one global term, scaled once
    result = ppl_dgm.fit(model, torch.full((50, 1), 2.3), epochs=30, batch_size=10, lr=0.1, progress=False)
    assert result.train_loss[-1] < result.train_loss[0]
    # the optimum is the posterior mean of mu, 115/51; scaling the prior with the batch would give 115/55
    assert abs(float(model.loc.detach()) - 115 / 51) < 0.05
