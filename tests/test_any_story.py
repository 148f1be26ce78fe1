"""Any Pyro story, end to end: autoguides, Pyro idioms, predictive scoring, NUTS and ArviZ, bad input."""

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from pyro.infer import autoguide

import ppl_dgm
import ppl_dgm.plots  # noqa: F401  (the Agg backend for the ArviZ plots)
from ppl_dgm import GenerativeModel, X, data_plate
from ppl_dgm.diagnostics import to_inference_data
from ppl_dgm.infer.mcmc import nuts

A, B = 2.0, 1.0  # Gamma prior of the Poisson rate


class PoissonStory(GenerativeModel):
    """A user's Poisson story with an autoguide: ``rate ~ Gamma(2, 1)``, ``x_n ~ Poisson(rate)``."""

    def __init__(self, guide: str = "AutoNormal"):
        super().__init__()
        self.autoguide = getattr(autoguide, guide)(self.model)

    def model(self, x=None, n=None):
        rate = pyro.sample("rate", dist.Gamma(A, B))
        with data_plate(x, n):
            return pyro.sample(X, dist.Poisson(rate), obs=x)

    def guide(self, x=None, n=None):
        return self.autoguide(x, n)


@pytest.fixture(scope="module")
def counts():
    generator = torch.Generator().manual_seed(1)
    return torch.poisson(torch.full((300,), 3.0), generator=generator)


@pytest.fixture(scope="module")
def fitted_poisson(counts):
    model = PoissonStory()
    ppl_dgm.fit(model, counts[:200], epochs=400, batch_size=200, lr=0.02, seed=0, progress=False)
    return model


def _exact_posterior(x):
    return A + float(x.sum()), B + len(x)


def test_autonormal_story_fits_and_scores_by_the_posterior_predictive(fitted_poisson, counts):
    shape, rate = _exact_posterior(counts[:200])
    assert abs(float(fitted_poisson.point_estimate()["rate"]) - shape / rate) < 0.1
    held_out = counts[200:]
    result = ppl_dgm.log_likelihood(fitted_poisson, held_out, num_samples=3000)
    assert result.kind == "predictive"  # counts: a mass function, no dequantization
    negative_binomial = dist.NegativeBinomial(torch.tensor(shape), probs=torch.tensor(1 / (rate + 1)))
    exact = negative_binomial.log_prob(held_out).double()
    assert abs(result.mean - float(exact.mean())) < 0.02
    assert (result.per_sample - exact).abs().max() < 0.05


def test_autoguide_story_saves_and_loads(fitted_poisson, counts, tmp_path):
    ppl_dgm.save(fitted_poisson, tmp_path / "poisson")
    loaded = ppl_dgm.load(tmp_path / "poisson")
    assert float(loaded.point_estimate()["rate"]) == float(fitted_poisson.point_estimate()["rate"])
    first = ppl_dgm.log_likelihood(fitted_poisson, counts[200:], num_samples=50).per_sample
    np.testing.assert_array_equal(ppl_dgm.log_likelihood(loaded, counts[200:], num_samples=50).per_sample, first)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # ArviZ 0.23's plots against newer matplotlib
def test_nuts_and_arviz_on_the_poisson_story(fitted_poisson, counts):
    x = counts[:200]
    run = nuts(fitted_poisson, x, num_samples=150, warmup_steps=150, num_chains=2, progress=False)
    idata = to_inference_data(fitted_poisson, x, run)
    rates = torch.as_tensor(idata.posterior["rate"].values)
    expected = dist.Poisson(rates[..., None]).log_prob(x).numpy()
    np.testing.assert_allclose(idata.log_likelihood[X].values, expected, atol=1e-4)
    assert float(az.summary(idata)["r_hat"].max()) < 1.05
    shape, rate = _exact_posterior(x)
    assert abs(float(rates.mean()) - shape / rate) < 0.1
    assert idata.log_likelihood.attrs["estimator"] == "exact"
    assert np.isfinite(az.loo(idata).elpd_loo)
    assert idata.posterior_predictive[X].shape == (2, 150, 200)
    import matplotlib.pyplot as plt  # ppl_dgm.plots selected the Agg backend

    az.plot_trace(idata)
    az.plot_ppc(idata, num_pp_samples=20)
    plt.close("all")


NORMAL_GUIDES = ["AutoNormal", "AutoDiagonalNormal", "AutoMultivariateNormal", "AutoLowRankMultivariateNormal",
                 "AutoIAFNormal", "AutoGuideList"]


class NormalMean(GenerativeModel):
    """``mu ~ N(0, 1)``, ``x_n ~ N(mu, 1)`` (a 2-D event); the posterior is N(sum x / (N+1), 1/(N+1))."""

    def __init__(self, guide: str = "AutoNormal"):
        super().__init__()
        if guide == "AutoGuideList":
            self.autoguide = autoguide.AutoGuideList(self.model)
            self.autoguide.append(autoguide.AutoNormal(pyro.poutine.block(self.model, expose=["mu"])))
            self.autoguide.append(autoguide.AutoDelta(pyro.poutine.block(self.model, expose=["offset"])))
        elif guide == "AutoIAFNormal":
            self.autoguide = autoguide.AutoIAFNormal(self.model, hidden_dim=[8], num_transforms=1)
        else:
            self.autoguide = getattr(autoguide, guide)(self.model)

    def model(self, x=None, n=None):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        offset = pyro.sample("offset", dist.Normal(0.0, 10.0))  # weakly identified: x_n ~ N(mu + offset, 1)
        with data_plate(x, n):
            return pyro.sample(X, dist.Normal(mu + 0 * offset, 1.0).to_event(1), obs=x)

    def guide(self, x=None, n=None):
        return self.autoguide(x, n)


@pytest.mark.parametrize("guide", ["AutoDelta", *NORMAL_GUIDES])
def test_every_autoguide_fits_saves_and_loads(guide, tmp_path):
    pyro.set_rng_seed(0)
    x = torch.randn(40, 2) + torch.tensor([1.5, -0.5])
    model = NormalMean(guide)
    ppl_dgm.fit(model, x, epochs=300, batch_size=40, lr=0.05, seed=0, progress=False)
    exact_mean = x.sum(0) / (len(x) + 1)
    assert (model.point_estimate()["mu"] - exact_mean).abs().max() < 0.15, guide
    ppl_dgm.save(model, tmp_path / guide)
    loaded = ppl_dgm.load(tmp_path / guide)
    held_out = torch.randn(10, 2)
    np.testing.assert_array_equal(ppl_dgm.log_likelihood(loaded, held_out, num_samples=20).per_sample,
                                  ppl_dgm.log_likelihood(model, held_out, num_samples=20).per_sample)


class Idioms(GenerativeModel):
    """``pyro.param`` with a constraint, ``pyro.deterministic``, ``pyro.factor``, ``obs_mask`` and nested plates."""

    def model(self, x=None, n=None):
        scale = pyro.param("scale", torch.tensor(1.0), constraint=constraints.positive)
        loc = pyro.sample("loc", dist.Normal(0.0, 5.0))
        pyro.deterministic("loc_squared", loc**2)
        pyro.factor("soft_constraint", -0.5 * loc**2 / 100)
        with pyro.plate(ppl_dgm.DATA, len(x) if x is not None else n, dim=-2), pyro.plate("features", 3, dim=-1):
            mask = None if x is None else ~torch.isnan(x)
            return pyro.sample(X, dist.Normal(loc, scale), obs=None if x is None else torch.nan_to_num(x),
                               obs_mask=mask)

    def guide(self, x=None, n=None):
        loc_mean = pyro.param("loc_mean", torch.tensor(0.0))
        loc_scale = pyro.param("loc_scale", torch.tensor(0.5), constraint=constraints.positive)
        pyro.sample("loc", dist.Normal(loc_mean, loc_scale))


def test_pyro_idioms_in_a_story(tmp_path):
    pyro.set_rng_seed(0)
    x = 2.0 + 0.5 * torch.randn(60, 3)
    model = Idioms()
    ppl_dgm.fit(model, x, epochs=300, batch_size=60, lr=0.05, seed=0, progress=False)
    params = dict(model.named_parameters())
    assert {"pyro_params.scale", "pyro_params.loc_mean", "pyro_params.loc_scale"} <= set(params)
    with pyro.poutine.trace() as tape, torch.no_grad():
        model.model(x)
    assert abs(float(tape.trace.nodes["scale"]["value"].detach()) - 0.5) < 0.1  # the constrained value
    assert abs(float(params["pyro_params.loc_mean"].detach()) - 2.0) < 0.1
    ppl_dgm.save(model, tmp_path / "idioms")
    loaded = ppl_dgm.load(tmp_path / "idioms")
    assert torch.equal(dict(loaded.named_parameters())["pyro_params.scale"], params["pyro_params.scale"])
    # two models never share a pyro.param by name
    assert "pyro_params.scale" not in dict(Idioms().named_parameters())


class SetupMade(GenerativeModel):
    """A 15-line model whose parameter is created from the data in ``setup``."""

    def setup(self, x, **ctx):
        self.loc = torch.nn.Parameter(x.mean(0).clone())

    def model(self, x=None, n=None):
        with data_plate(x, n):
            return pyro.sample(X, dist.Normal(self.loc, 1.0).to_event(1), obs=x)


def test_a_parameter_made_in_setup_survives_save_and_load(tmp_path):
    model = SetupMade()
    ppl_dgm.fit(model, torch.randn(20, 2) + 3, epochs=2, batch_size=10, progress=False)
    ppl_dgm.save(model, tmp_path / "setup")
    assert torch.equal(ppl_dgm.load(tmp_path / "setup").loc, model.loc)


class Mixture(GenerativeModel):
    """Two components with an enumerated assignment and a global weight/locations."""

    def __init__(self):
        super().__init__()
        self.autoguide = autoguide.AutoDelta(pyro.poutine.block(self.model, expose=["weights", "locs"]))

    @pyro.infer.config_enumerate
    def model(self, x=None, n=None):
        weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
        with pyro.plate("components", 2):
            locs = pyro.sample("locs", dist.Normal(0.0, 5.0))
        with data_plate(x, n):
            assignment = pyro.sample("assignment", dist.Categorical(weights))
            return pyro.sample(X, dist.Normal(locs[assignment], 0.5), obs=x)

    def guide(self, x=None, n=None):
        return self.autoguide(x, n)


def test_enumerated_mixture_pointwise_is_the_marginal():
    pyro.set_rng_seed(0)
    x = torch.cat([torch.randn(30) * 0.5 - 2, torch.randn(20) * 0.5 + 2])
    model = Mixture()
    ppl_dgm.fit(model, x, epochs=200, batch_size=50, lr=0.05, seed=0, progress=False)
    point = model.point_estimate()
    assert sorted(point["locs"].tolist()) == pytest.approx([-2, 2], abs=0.3)
    idata = to_inference_data(model, x, num_draws=3, predictive=False)
    mixture = dist.MixtureSameFamily(dist.Categorical(point["weights"]), dist.Normal(point["locs"], 0.5))
    np.testing.assert_allclose(idata.log_likelihood[X].values[0, 0], mixture.log_prob(x).numpy(), rtol=1e-5)
    assert "exact" in idata.log_likelihood.attrs["estimator"]
    result = ppl_dgm.log_likelihood(model, x, num_samples=2)
    np.testing.assert_allclose(result.per_sample.numpy(), mixture.log_prob(x).numpy(), rtol=1e-5)


# ---------------------------------------------------------------------------- bad input
class NoObservedSite(GenerativeModel):
    def model(self, x=None, n=None):
        pyro.sample("rate", dist.Gamma(2.0, 1.0))


class ForeignGuideSite(PoissonStory):
    def guide(self, x=None, n=None):
        pyro.sample("rate", dist.Gamma(2.0, 1.0))
        pyro.sample("typo", dist.Normal(0.0, 1.0))


class NeedsContext(GenerativeModel):
    def model(self, x=None, n=None, weights=None):
        with data_plate(x, n):
            return pyro.sample(X, dist.Normal(weights, 1.0), obs=x)


def test_bad_input_is_named(counts, fitted_poisson):
    with pytest.raises(ValueError, match="no observed site 'x'"):
        ppl_dgm.log_likelihood(NoObservedSite(), counts)
    with pytest.raises(ValueError, match="'typo' that the model does not have"):
        ppl_dgm.log_likelihood(ForeignGuideSite(), counts[:20], num_samples=2)
    with pytest.raises(ValueError, match=r"data\['weights'\] must be a tensor with 20 rows"):
        ppl_dgm.log_likelihood(NeedsContext(), {"x": counts[:20], "weights": torch.zeros(19)})
    other = nuts(Mixture(), torch.randn(20), num_samples=5, warmup_steps=5, num_chains=1, progress=False)
    with pytest.raises(ValueError, match="was it run on another model"):
        to_inference_data(fitted_poisson, counts[:20], other)


def test_autoguide_story_on_each_device(device, counts):
    model = PoissonStory().to(device)
    x = counts[:100].to(device)
    ppl_dgm.fit(model, x, epochs=150, batch_size=100, lr=0.03, seed=0, device=device, progress=False)
    assert model.point_estimate()["rate"].device.type == device.type
    result = ppl_dgm.log_likelihood(model, x[:20], num_samples=200)
    assert result.kind == "predictive" and np.isfinite(result.mean)
    idata = to_inference_data(model, x, num_draws=20)
    assert idata.posterior_predictive[X].shape == (1, 20, 100)


def test_a_story_run_outside_fit_cannot_be_saved_without_its_batch(counts, tmp_path):
    model = PoissonStory()
    ppl_dgm.log_likelihood(model, counts[:10], num_samples=2)  # the autoguide is set up here, outside fit
    with pytest.raises(ValueError, match="initialize_parameters"):
        ppl_dgm.save(model, tmp_path / "never")
    ppl_dgm.lazy.initialize_parameters(model, {"x": counts[:10]})
    ppl_dgm.save(model, tmp_path / "saved")
    assert float(ppl_dgm.load(tmp_path / "saved").point_estimate()["rate"]) == float(model.point_estimate()["rate"])


class ExactPosteriorGuide(GenerativeModel):
    """The Poisson story with the exact posterior Gamma(a + sum x, b + N) of the training counts as its guide."""

    def __init__(self, shape: float = 1.0, rate: float = 1.0):
        super().__init__()
        self.shape, self.rate = shape, rate

    model = PoissonStory.model

    def guide(self, x=None, n=None):
        pyro.sample("rate", dist.Gamma(self.shape, self.rate))


def test_the_predictive_estimator_is_exact_to_a_hundredth_of_a_nat(counts):
    shape, rate = _exact_posterior(counts[:200])
    negative_binomial = dist.NegativeBinomial(torch.tensor(shape), probs=torch.tensor(1 / (rate + 1)))
    exact = negative_binomial.log_prob(counts[200:]).double()
    result = ppl_dgm.log_likelihood(ExactPosteriorGuide(shape, rate), counts[200:], num_samples=4000)
    assert result.kind == "predictive"
    assert (result.per_sample - exact).abs().max() < 0.01


def test_the_predictive_from_a_nuts_run(fitted_poisson, counts):
    run = nuts(fitted_poisson, counts[:200], num_samples=300, warmup_steps=200, num_chains=2, progress=False)
    result = ppl_dgm.log_likelihood(fitted_poisson, counts[200:], posterior=run)
    assert result.kind == "predictive" and result.num_samples == 600
    shape, rate = _exact_posterior(counts[:200])
    exact = dist.NegativeBinomial(torch.tensor(shape), probs=torch.tensor(1 / (rate + 1))).log_prob(counts[200:])
    assert (result.per_sample - exact.double()).abs().max() < 0.02


class AssignedGuide(GenerativeModel):
    """The guide *is* an autoguide: ``self.guide = AutoMultivariateNormal(self.model)``."""

    def __init__(self):
        super().__init__()
        self.guide = autoguide.AutoMultivariateNormal(self.model)

    model = NormalMean.model


def test_a_guide_assigned_as_an_autoguide(tmp_path):
    x = torch.randn(60, 2) + 1.0
    model = AssignedGuide()
    ppl_dgm.fit(model, x, epochs=200, batch_size=60, lr=0.05, seed=0, progress=False)
    assert (model.point_estimate()["mu"] - x.sum(0) / 61).abs().max() < 0.15
    ppl_dgm.save(model, tmp_path / "assigned")
    assert torch.equal(ppl_dgm.load(tmp_path / "assigned").point_estimate()["mu"], model.point_estimate()["mu"])
    with pytest.raises(TypeError, match="defines a guide method"):
        PoissonStory().guide = autoguide.AutoNormal(PoissonStory().model)


def test_fit_refuses_a_story_without_an_observed_site():
    with pytest.raises(ValueError, match="does not observe the data"):
        ppl_dgm.fit(NoObservedSite(), torch.rand(10), epochs=1, progress=False)


# ------------------------------------------------------------- guides with parameters for each example
def hierarchical(y=None, N=None):
    """``mu ~ N(0, 1)``, ``z_n ~ N(mu, 1)``, ``x_n ~ N(z_n, 1)``: marginally ``x_n | mu ~ N(mu, 2)``."""
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("rows", N):
        z = pyro.sample("z", dist.Normal(mu, 1.0))
        return pyro.sample("obs", dist.Normal(z, 1.0), obs=y)


def tight(y=None, N=None):
    """``z_n ~ N(0, 3)``, ``x_n ~ N(z_n, 0.1)``: the posterior of each z_n sits at its x_n."""
    with pyro.plate("rows", N):
        z = pyro.sample("z", dist.Normal(0.0, 3.0))
        return pyro.sample("obs", dist.Normal(z, 0.1), obs=y)


def test_an_autoguide_over_local_latents_keeps_each_example_in_its_row():
    x = torch.linspace(-4.0, 4.0, 12) + 0.01
    model = ppl_dgm.story(tight, "AutoNormal", plate="rows", size_arg="N")
    ppl_dgm.fit(model, x, epochs=600, batch_size=12, lr=0.05, seed=0, progress=False)
    assert (model.autoguide.locs.z.detach() - x).abs().max() < 0.1  # rows are not shuffled under it
    with pytest.raises(ValueError, match="needs all 12 rows in each step"):
        ppl_dgm.fit(ppl_dgm.story(tight, "AutoNormal", plate="rows", size_arg="N"), x, epochs=1, batch_size=4,
                    progress=False)
    with pytest.raises(ValueError, match="cannot score validation data"):
        ppl_dgm.fit(ppl_dgm.story(tight, "AutoNormal", plate="rows", size_arg="N"), x, val=x[:3], epochs=1,
                    batch_size=12, progress=False)


@pytest.mark.parametrize("guide", ["AutoNormal", "AutoDiagonalNormal", "AutoDelta"])
def test_per_example_guides_score_by_the_prior_of_the_local_latents(guide):
    generator = torch.Generator().manual_seed(0)
    x = 1.0 + 2**0.5 * torch.randn(30, generator=generator) + 0.0123
    model = ppl_dgm.story(hierarchical, guide, plate="rows", size_arg="N")
    ppl_dgm.fit(model, x, epochs=300, batch_size=30, lr=0.05, seed=0, progress=False)
    assert set(model.point_estimate()) == {"mu"}  # the story's plate is "rows": z is local all the same
    assert ppl_dgm.draw(model, 3).shape == (3,)
    held_out = torch.tensor([-1.3, 0.4, 2.2, 3.9])  # another number of rows than the guide was fitted to
    draws = ppl_dgm.posterior.posterior_draws(model, {"x": held_out}, num_draws=4000)["mu"].reshape(-1)
    exact = torch.logsumexp(dist.Normal(draws[:, None], 2**0.5).log_prob(held_out).double(), 0) - np.log(4000)
    result = ppl_dgm.log_likelihood(model, held_out, num_samples=4000)
    assert result.kind == "predictive"
    error = (result.per_sample - exact).abs()  # Monte Carlo on both sides; the guide's own z would be ~1 nat off
    assert error.mean() < 0.03 and error.max() < 0.12


def test_a_story_with_nothing_to_sample_is_scored_exactly_in_one_pass():
    class Plain(GenerativeModel):
        def __init__(self):
            super().__init__()
            self.loc = torch.nn.Parameter(torch.tensor(0.5))

        def model(self, x=None, n=None):
            with data_plate(x, n):
                return pyro.sample(X, dist.Normal(self.loc, 1.0), obs=x)

    x = torch.tensor([0.1, 1.7, -0.4])
    result = ppl_dgm.log_likelihood(Plain(), x, num_samples=500)
    assert result.kind == "exact" and result.num_samples == 1
    np.testing.assert_allclose(result.per_sample.numpy(), dist.Normal(0.5, 1.0).log_prob(x).numpy(), rtol=1e-6)
