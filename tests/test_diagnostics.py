"""NUTS and ArviZ: InferenceData groups, the marginal pointwise log-likelihood, R-hat/ESS, LOO."""

import warnings

import arviz as az
import numpy as np
import pytest
import torch

import ppl_dgm
from ppl_dgm.diagnostics import compare_loo, to_inference_data
from ppl_dgm.diagnostics.predictive import posterior_predictive
from ppl_dgm.infer.mcmc import nuts
from ppl_dgm.models import GMM, PPCA


@pytest.fixture(scope="module")
def clusters() -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.as_tensor(np.vstack([rng.normal(0, 0.5, (40, 2)), rng.normal(3, 0.5, (30, 2))]))


@pytest.fixture(scope="module")
def nuts_fit(clusters):
    model = GMM(2, covariance_type="diag", random_state=0).fit(clusters)
    return model, nuts(model, clusters, num_samples=30, warmup_steps=30, num_chains=2, progress=False)


def test_nuts_runs_several_chains_near_the_fit(nuts_fit):
    model, run = nuts_fit
    assert run.num_chains == 2 and run.num_draws == 30
    assert set(run.samples) == {"weights", "means", "scales"}
    assert run.samples["means"].shape == (2, 30, 2, 2)
    # chains start at the EM solution, so components keep their labels
    centre = torch.as_tensor(model.means_)
    assert (run.samples["means"].mean((0, 1)) - centre).abs().max() < 0.3


def test_inference_data_from_nuts(nuts_fit, clusters):
    model, run = nuts_fit
    idata = to_inference_data(model, clusters, run)
    for group in ("posterior", "posterior_predictive", "log_likelihood", "observed_data"):
        assert hasattr(idata, group), group
    assert idata.log_likelihood["x"].shape == (2, 30, 70)
    assert idata.posterior_predictive["x"].shape == (2, 30, 70, 2)
    # the pointwise log-likelihood is the marginal one: at each draw, log sum_k w_k N(x | mu_k, s_k)
    draw = {name: torch.as_tensor(idata.posterior[name].values[1, 7]) for name in ("weights", "means", "scales")}
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(draw["weights"]),
        torch.distributions.Independent(torch.distributions.Normal(draw["means"], draw["scales"]), 1))
    np.testing.assert_allclose(idata.log_likelihood["x"].values[1, 7], mixture.log_prob(clusters).numpy(),
                               rtol=1e-10)
    summary = az.summary(idata, var_names=["means"])
    assert {"r_hat", "ess_bulk", "ess_tail"} <= set(summary.columns)
    loo = az.loo(idata)
    assert np.isfinite(loo.elpd_loo)


def test_inference_data_from_an_svi_fit(clusters):
    model = GMM(2, covariance_type="spherical", random_state=0, posterior="normal")
    ppl_dgm.fit(model, clusters, engine="svi", epochs=20, batch_size=35, lr=0.05, progress=False)
    idata = to_inference_data(model, clusters, num_draws=40, predictive=False)
    assert idata.posterior["means"].shape == (1, 40, 2, 2)
    assert idata.posterior["means"].values.std(axis=1).max() > 0  # draws from the mean-field posterior
    assert idata.log_likelihood["x"].shape == (1, 40, 70)
    assert not hasattr(idata, "posterior_predictive")


def test_bad_arguments(clusters):
    model = GMM(2, random_state=0).fit(clusters)
    with pytest.raises(ValueError, match="num_chains"):
        nuts(model, clusters, num_chains=0)
    with pytest.raises(ValueError, match="non-finite"):
        nuts(model, torch.full((5, 2), float("nan")))


@pytest.mark.slow
def test_loo_chooses_the_number_of_components(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
    from gmm_arviz import main

    result = main(["--samples", "200", "--warmup", "200", "--out", str(tmp_path), "--no-progress"])
    assert result["chosen"] == "K=3"
    assert result["max_r_hat_chosen"] < 1.05 and result["min_ess_bulk_chosen"] > 100


def test_hmm_and_ppca_give_per_sequence_and_per_row_marginal_log_likelihoods():
    from ppl_dgm.models import HMM, PPCA

    x = ppl_dgm.datasets.load_dataset("digits_sequence", "val", dtype=torch.float64).x[:12] / 16
    hmm = HMM(2, covariance_type="diag", random_state=0).fit_data(x)
    run = nuts(hmm, x, num_samples=5, warmup_steps=5, num_chains=2, progress=False)
    idata = to_inference_data(hmm, x, run, predictive=False)
    assert idata.log_likelihood["x"].shape == (2, 5, 12)  # one value per sequence
    assert set(idata.posterior.data_vars) >= {"startprob", "transmat", "means", "scales"}

    flat = x.reshape(12, 64)
    ppca = PPCA(2, posterior="normal").fit(flat.numpy())
    ppl_dgm.fit(ppca, flat, engine="svi", epochs=3, batch_size=12, progress=False)
    idata = to_inference_data(ppca, flat, num_draws=10)
    assert idata.log_likelihood["x"].shape == (1, 10, 12) and idata.posterior_predictive["x"].shape == (1, 10, 12, 64)
    point = {name: value.unsqueeze(0) for name, value in ppca.point_estimate().items()}
    np.testing.assert_allclose(ppca.log_prob_at(flat, point)[0].numpy(), ppca.score_samples(flat.numpy()), atol=1e-8)


PREDICTIVE_CASES = [pytest.param(GMM(2, covariance_type=kind, random_state=0), "means", id=f"gmm-{kind}")
                    for kind in ("full", "tied", "diag", "spherical")] + [pytest.param(PPCA(1), "mu", id="ppca")]


@pytest.mark.parametrize("model,location", PREDICTIVE_CASES)
def test_posterior_predictive_of_gmm_and_ppca_runs_all_draws_in_one_batch(model, location, clusters):
    model.fit(clusters.numpy())
    point = model.point_estimate()
    shifted = {**point, location: point[location] + 100.0}
    draws = {name: torch.stack([point[name], shifted[name]]).unsqueeze(0) for name in point}  # one chain, two draws
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to one run per draw
        replicas = posterior_predictive(model, {"x": clusters}, draws)
    assert replicas.shape == (1, 2, 70, 2)
    # each replica follows its own draw: the second one is the first moved by 100
    np.testing.assert_allclose((replicas[0, 1].mean(0) - replicas[0, 0].mean(0)).numpy(), [100.0, 100.0], atol=1.5)
    np.testing.assert_allclose(replicas[0, 0].mean(0).numpy(), clusters.mean(0).numpy(), atol=1.0)


def _idata(log_lik: np.ndarray):
    return az.from_dict(posterior={"mu": log_lik.mean(-1)}, log_likelihood={"x": log_lik})


def test_compare_loo_warns_once_in_its_own_line_not_once_per_model():
    rng = np.random.default_rng(0)
    good = rng.normal(-1.0, 0.05, size=(2, 200, 30))
    heavy = good.copy()
    heavy[..., :3] += rng.standard_cauchy(size=(2, 200, 3)) * 20  # three points with unreliable LOO
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = compare_loo({"good": _idata(good), "heavy": _idata(heavy)})
    assert not caught
    assert list(result.table.index) == ["good", "heavy"]
    counts = result.khat_counts()
    assert counts["good"] == (0, 30) and 1 <= counts["heavy"][0] <= 3
    assert result.khat_line().startswith("Pareto k-hat > 0.7") and "good 0 of 30" in result.khat_line()
