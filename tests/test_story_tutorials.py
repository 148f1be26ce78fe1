"""Models transcribed from Pyro's tutorials and examples, run through ``ppl_dgm.story`` without edits."""

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import config_enumerate
from pyro.infer.autoguide import AutoDelta

import ppl_dgm
from ppl_dgm.diagnostics import to_inference_data
from ppl_dgm.infer.mcmc import nuts


# Bayesian regression (Pyro tutorial "Bayesian Regression - Introduction", with an autoguide)
def regression(x, y=None):
    a = pyro.sample("a", dist.Normal(0.0, 10.0))
    b_a = pyro.sample("bA", dist.Normal(0.0, 1.0))
    b_r = pyro.sample("bR", dist.Normal(0.0, 1.0))
    b_ar = pyro.sample("bAR", dist.Normal(0.0, 1.0))
    sigma = pyro.sample("sigma", dist.Uniform(0.0, 10.0))
    is_cont_africa, ruggedness = x[:, 0], x[:, 1]
    mean = a + b_a * is_cont_africa + b_r * ruggedness + b_ar * is_cont_africa * ruggedness
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("obs", dist.Normal(mean, sigma), obs=y)


# Eight schools (Pyro example eight_schools, non-centred)
def eight_schools(J, sigma, y=None):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("J", J):
        eta = pyro.sample("eta", dist.Normal(0.0, 1.0))
        theta = pyro.deterministic("theta", mu + tau * eta)
        return pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


SCHOOLS_Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SCHOOLS_SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])

# Gaussian mixture (Pyro tutorial "Gaussian Mixture Model", enumerated assignment)
K = 2


@config_enumerate
def mixture(data):
    weights = pyro.sample("weights", dist.Dirichlet(0.5 * torch.ones(K)))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 2.0))
    with pyro.plate("components", K):
        locs = pyro.sample("locs", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(data)):
        assignment = pyro.sample("assignment", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[assignment], scale), obs=data)


def test_bayesian_regression_with_an_autoguide(tmp_path):
    generator = torch.Generator().manual_seed(0)
    features = torch.stack([torch.bernoulli(torch.full((170,), 0.3), generator=generator),
                            torch.rand(170, generator=generator) * 4], 1)
    truth = 9.0 - 1.5 * features[:, 0] - 0.2 * features[:, 1] + 0.4 * features[:, 0] * features[:, 1]
    y = truth + 0.8 * torch.randn(170, generator=generator)
    model = ppl_dgm.story(regression, "AutoDiagonalNormal", data_arg="y", context_args={"features": "x"})
    train = {"x": y[:150], "features": features[:150]}
    ppl_dgm.fit(model, train, epochs=1500, batch_size=150, lr=0.03, seed=0, progress=False)
    point = model.point_estimate()
    assert abs(float(point["a"]) - 9.0) < 0.4 and abs(float(point["sigma"]) - 0.8) < 0.2
    held_out = ppl_dgm.log_likelihood(model, {"x": y[150:], "features": features[150:]}, num_samples=500)
    assert held_out.kind == "predictive" and -1.6 < held_out.mean < -0.9  # log N(0; 0, 0.8) = -1.0
    run = nuts(model, train, num_samples=100, warmup_steps=100, num_chains=2, progress=False)
    idata = to_inference_data(model, train, run)
    assert float(az.summary(idata)["r_hat"].max()) < 1.1
    assert idata.constant_data["features"].shape == (150, 2)
    svi_mean, nuts_mean = float(point["bA"]), float(idata.posterior["bA"].mean())
    assert abs(svi_mean - nuts_mean) < 0.3
    ppl_dgm.save(model, tmp_path / "regression")
    loaded = ppl_dgm.load(tmp_path / "regression")
    assert float(loaded.point_estimate()["a"]) == float(point["a"])


def test_eight_schools_pointwise_is_the_marginal():
    model = ppl_dgm.story(eight_schools, plate="J", size_arg="J")
    data = {"x": SCHOOLS_Y, "sigma": SCHOOLS_SIGMA}
    run = nuts(model, data, num_samples=60, warmup_steps=100, num_chains=2, progress=False)
    assert set(run.samples) >= {"mu", "tau", "eta"}
    idata = to_inference_data(model, data, run, num_particles=4000)
    assert "prior" in idata.log_likelihood.attrs["estimator"]
    assert idata.posterior["eta"].shape == (2, 60, 8)  # the local latents, with an example axis
    mu = torch.as_tensor(idata.posterior["mu"].values)[..., None].double()
    tau = torch.as_tensor(idata.posterior["tau"].values)[..., None].double()
    # theta_j integrated out: y_j | mu, tau ~ N(mu, tau^2 + sigma_j^2)
    marginal = dist.Normal(mu, (tau**2 + SCHOOLS_SIGMA.double() ** 2).sqrt()).log_prob(SCHOOLS_Y.double())
    error = np.abs(idata.log_likelihood["x"].values - marginal.numpy())  # importance sampling from the prior
    assert error.mean() < 0.01 and error.max() < 0.06
    assert np.isfinite(az.loo(idata).elpd_loo)


def test_tutorial_mixture_with_enumeration():
    pyro.set_rng_seed(0)
    data = torch.tensor([0.0, 1.0, 10.0, 11.0, 12.0])

    def init_loc_fn(site):  # the tutorial's initialization (with fixed rows for the locations)
        if site["name"] == "weights":
            return torch.ones(K) / K
        if site["name"] == "scale":
            return (data.var() / 2).sqrt()
        return data[[0, 2]]

    guide = AutoDelta(pyro.poutine.block(mixture, expose=["weights", "locs", "scale"]), init_loc_fn=init_loc_fn)
    model = ppl_dgm.story(mixture, guide)
    ppl_dgm.fit(model, data, epochs=300, batch_size=5, lr=0.1, seed=0, progress=False)
    point = model.point_estimate()
    assert sorted(point["locs"].tolist()) == pytest.approx([0.5, 11.0], abs=0.6)
    idata = to_inference_data(model, data, num_draws=2, predictive=False)
    marginal = dist.MixtureSameFamily(dist.Categorical(point["weights"]), dist.Normal(point["locs"], point["scale"]))
    np.testing.assert_allclose(idata.log_likelihood["x"].values[0, 1], marginal.log_prob(data).numpy(), rtol=1e-5)


def test_story_input_errors():
    with pytest.raises(ValueError, match="cannot tell which parameter"):
        ppl_dgm.story(lambda a, b: None)
    with pytest.raises(ValueError, match="no parameter 'K'"):
        ppl_dgm.story(eight_schools, size_arg="K")
    with pytest.raises(ValueError, match="not a pyro.infer.autoguide class"):
        ppl_dgm.story(regression, "AutoNothing", data_arg="y")
    unsaveable = ppl_dgm.story(lambda data=None: mixture(data))
    with pytest.raises(TypeError, match="not a module-level function"):
        ppl_dgm.save(unsaveable, "/tmp/never-written")
