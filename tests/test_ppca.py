"""PPCA against scikit-learn's PCA and closed forms (float64), its Pyro story, and bad input."""

import math

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning, NotFittedError

import ppl_dgm
from ppl_dgm.evaluation import log_importance_weights
from ppl_dgm.models import PPCA
from ppl_dgm.models.classical.ppca import marginal_log_prob

Q = 2


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    rng = np.random.RandomState(0)
    W = rng.randn(6, Q) * [3.0, 1.5]
    return rng.randn(300, Q) @ W.T + 0.5 * rng.randn(300, 6) + np.arange(6.0)


@pytest.fixture(scope="module")
def fitted(data) -> PPCA:
    return PPCA(Q).fit(data)


def _sklearn_ml(data: np.ndarray) -> PCA:
    """sklearn's PCA with its variances rescaled from the unbiased (N - 1) to the ML (N) covariance."""
    pca = PCA(Q).fit(data)
    n = data.shape[0]
    pca.explained_variance_ = pca.explained_variance_ * (n - 1) / n
    pca.noise_variance_ = pca.noise_variance_ * (n - 1) / n
    return pca


def _mean_log_likelihood(x: torch.Tensor, W, mu, s2) -> float:
    W, mu, s2 = (torch.as_tensor(v, dtype=torch.float64) for v in (W, mu, s2))
    return float(marginal_log_prob(x, W, mu, s2).mean())


def test_closed_form_matches_sklearn_pca(data, fitted):
    ref = _sklearn_ml(data)
    np.testing.assert_allclose(fitted.score_samples(data), ref.score_samples(data), rtol=0, atol=1e-8)
    assert fitted.score(data) == pytest.approx(ref.score(data), abs=1e-8)
    np.testing.assert_allclose(fitted.get_covariance(), ref.get_covariance(), rtol=0, atol=1e-8)
    np.testing.assert_allclose(fitted.get_precision(), ref.get_precision(), rtol=0, atol=1e-8)
    assert fitted.noise_variance_ == pytest.approx(ref.noise_variance_, abs=1e-10)
    np.testing.assert_allclose(fitted.mean_, ref.mean_, atol=1e-12)
    np.testing.assert_allclose(fitted.explained_variance_, ref.explained_variance_, atol=1e-8)
    # the ratio does not depend on the covariance's denominator: it matches the unscaled PCA
    np.testing.assert_allclose(fitted.explained_variance_ratio_, PCA(Q).fit(data).explained_variance_ratio_,
                               atol=1e-12)
    signs = np.sign((fitted.components_ * ref.components_).sum(1))
    np.testing.assert_allclose(fitted.components_ * signs[:, None], ref.components_, atol=1e-10)
    # sklearn's sign convention: the largest entry of each direction is positive
    assert (fitted.components_[np.arange(Q), np.abs(fitted.components_).argmax(1)] > 0).all()
    # W = components^T (Lambda - sigma^2)^{1/2} (R = I)
    scale = np.sqrt(fitted.explained_variance_ - fitted.noise_variance_)
    np.testing.assert_allclose(np.abs(fitted.W_), np.abs(fitted.components_.T * scale), atol=1e-10)
    assert fitted.W_.shape == (6, Q) and fitted.n_features_in_ == 6 and fitted.n_components_ == Q
    np.testing.assert_allclose(fitted.get_covariance() @ fitted.get_precision(), np.eye(6), atol=1e-10)


def test_closed_form_is_a_maximum_of_the_likelihood(data, fitted):
    x = torch.as_tensor(data)
    W, mu, s2 = fitted.W_, fitted.mean_, fitted.noise_variance_
    best = _mean_log_likelihood(x, W, mu, s2)
    assert best == pytest.approx(fitted.score(data), abs=1e-10)
    rng = np.random.RandomState(1)
    for _ in range(20):
        step = 1e-3
        perturbed = (W + step * rng.randn(*W.shape), mu + step * rng.randn(6), s2 * math.exp(step * rng.randn()))
        assert _mean_log_likelihood(x, *perturbed) < best


def test_em_converges_to_the_closed_form_and_never_decreases(data, fitted):
    em = PPCA(Q, method="em", tol=1e-11, max_iter=5000, random_state=0).fit(data)
    bounds = np.array(em.lower_bounds_)
    assert em.converged_ and em.n_iter_ == len(bounds) > 5
    assert (np.diff(bounds) >= -1e-12).all()
    best = fitted.score(data)
    assert bounds.max() <= best + 1e-10  # the closed form is >= every EM iterate
    assert bounds[-1] == pytest.approx(em.score(data), abs=1e-10)
    assert abs(em.score(data) - best) < 1e-6
    assert bounds[0] < best - 0.1  # EM started away from the optimum
    # the likelihood is flat near its maximum: the parameters agree to the square root of its gap
    np.testing.assert_allclose(em.get_covariance(), fitted.get_covariance(), rtol=1e-3, atol=1e-3)
    signs = np.sign((em.components_ * fitted.components_).sum(1))
    np.testing.assert_allclose(em.components_ * signs[:, None], fitted.components_, atol=1e-3)


def test_em_warns_when_it_does_not_converge(data):
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        model = PPCA(Q, method="em", max_iter=3, tol=0, random_state=0).fit(data)
    assert model.n_iter_ == 3 and not model.converged_


def test_log_prob_and_log_prob_at_are_the_gaussian_marginal(data, fitted):
    x = torch.as_tensor(data)
    W, mu, s2 = (torch.as_tensor(v, dtype=torch.float64) for v in (fitted.W_, fitted.mean_, fitted.noise_variance_))
    direct = dist.MultivariateNormal(mu, W @ W.T + s2 * torch.eye(6, dtype=torch.float64)).log_prob(x)
    assert torch.allclose(fitted.log_prob(x), direct, rtol=0, atol=1e-10)
    # S parameter draws at once: (S, N)
    gen = torch.Generator().manual_seed(0)
    sites = {"W": W + 0.1 * torch.randn(3, 6, Q, generator=gen, dtype=W.dtype),
             "mu": mu + 0.1 * torch.randn(3, 6, generator=gen, dtype=W.dtype),
             "noise_scale": s2.sqrt() * torch.tensor([0.8, 1.0, 1.3], dtype=W.dtype)}
    batched = fitted.log_prob_at(x, sites)
    assert batched.shape == (3, 300)
    for s in range(3):
        cov = sites["W"][s] @ sites["W"][s].T + sites["noise_scale"][s] ** 2 * torch.eye(6, dtype=torch.float64)
        expected = dist.MultivariateNormal(sites["mu"][s], cov).log_prob(x)
        assert torch.allclose(batched[s], expected, rtol=0, atol=1e-10)


def test_log_likelihood_is_exact(data, fitted):
    result = ppl_dgm.log_likelihood(fitted, torch.as_tensor(data))
    assert result.kind == "exact" and result.num_samples == 1
    np.testing.assert_allclose(result.per_sample.numpy(), fitted.score_samples(data), rtol=0, atol=1e-12)


@pytest.mark.parametrize("fit_first", [True, False])
def test_importance_weights_with_the_exact_posterior_are_constant(data, fit_first):
    x = torch.as_tensor(data)
    model = PPCA(Q, random_state=0)
    if fit_first:
        model.fit(data)
    else:
        model.setup(x)  # a random point: exactness does not depend on being at the optimum
    weights = log_importance_weights(model, x, num_particles=20)
    assert weights.local.shape == (20, 300) and weights.global_latents == ()
    assert float(weights.local.detach().std(0).max()) < 1e-8
    estimate = torch.logsumexp(weights.local, 0) - math.log(20)
    np.testing.assert_allclose(estimate.detach().numpy(), model.score_samples(data), rtol=0, atol=1e-6)


def test_svi_reaches_the_maximum_likelihood(data, fitted):
    x = torch.as_tensor(data)
    model = PPCA(Q, random_state=0)
    model.setup(x)
    start = model.score(data)
    assert start < fitted.score(data) - 1.0
    ppl_dgm.fit(model, x, engine="svi", epochs=100, batch_size=300, lr=0.05, seed=0, progress=False, patience=None)
    assert bool(model.uses_guide_point)
    assert abs(model.score(data) - fitted.score(data)) < 1e-3
    assert model.noise_variance_ == pytest.approx(fitted.noise_variance_, rel=1e-2)
    assert model.noise_variance_ == pytest.approx(float(model.guide_params.point("noise_scale").detach()) ** 2)
    np.testing.assert_allclose(model.mean_, model.guide_params.point("mu").detach().numpy())
    covariance = fitted.get_covariance()  # MAP: the prior on W shrinks it by about 1%
    assert np.abs(model.get_covariance() - covariance).max() < 0.03 * np.abs(covariance).max()
    model.fit(data)  # refitting in closed form reads the fitted state again
    assert not bool(model.uses_guide_point)
    assert model.score(data) == pytest.approx(fitted.score(data), abs=1e-12)


def test_transform_sample_and_draw(data, fitted):
    W, mu, s2 = fitted.W_, fitted.mean_, fitted.noise_variance_
    M = W.T @ W + s2 * np.eye(Q)
    np.testing.assert_allclose(fitted.transform(data), np.linalg.solve(M, W.T @ (data - mu).T).T, atol=1e-10)
    np.testing.assert_allclose(fitted.inverse_transform(np.ones((2, Q))), np.ones((2, Q)) @ W.T + mu, atol=1e-12)
    samples = fitted.sample(20000)
    assert isinstance(samples, np.ndarray) and samples.shape == (20000, 6)
    seeded = PPCA(Q, random_state=0).fit(data)
    np.testing.assert_array_equal(seeded.sample(5), seeded.sample(5))  # drawn from random_state, as sklearn
    covariance = fitted.get_covariance()
    assert np.abs(np.cov(samples.T) - covariance).max() < 0.05 * np.abs(covariance).max()
    np.testing.assert_allclose(samples.mean(0), mu, atol=0.1)
    drawn = ppl_dgm.draw(fitted, 5)
    assert drawn.shape == (5, 6) and drawn.dtype == torch.float64


def test_save_load_round_trip(data, tmp_path):
    model = PPCA(Q, method="em", random_state=2, tol=1e-8).fit(data)
    ppl_dgm.save(model, tmp_path / "ppca")
    loaded = ppl_dgm.load(tmp_path / "ppca")
    assert isinstance(loaded, PPCA) and loaded.get_params() == model.get_params()
    for name in ("W_", "mean_", "components_", "explained_variance_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name), err_msg=name)
    assert loaded.noise_variance_ == model.noise_variance_
    np.testing.assert_array_equal(loaded.score_samples(data), model.score_samples(data))


def test_sklearn_estimator_protocol(data):
    model = PPCA(Q, method="em", random_state=0)
    copy = clone(model)
    assert copy.get_params() == model.get_params() and copy is not model
    assert model.set_params(n_components=3, method="closed_form") is model and model.n_components == 3
    assert model.fit(data).W_.shape == (6, 3)
    assert model.fit_data(data) is model


def test_float32():
    x = torch.randn(100, 4, dtype=torch.float64) @ torch.tensor([[2.0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0],
                                                                 [0, 0, 0, 0.5]], dtype=torch.float64)
    model = PPCA(1, dtype="float32").fit(x)
    assert model.W.dtype == torch.float32 and model.log_prob(x).dtype == torch.float32
    assert np.allclose(model.score_samples(x.numpy()), PPCA(1).fit(x).score_samples(x.numpy()), atol=1e-4)


def test_bad_input(data, fitted):
    bad = data.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        PPCA(Q).fit(bad)
    bad[3, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        fitted.score_samples(bad)
    with pytest.raises(ValueError, match="Expected 2D array"):
        PPCA(Q).fit(data[:, 0])
    with pytest.raises(ValueError, match="expecting 6 features"):
        fitted.score_samples(data[:, :5])
    with pytest.raises(ValueError, match="smaller than n_features"):
        PPCA(6).fit(data)
    with pytest.raises(ValueError, match="at most n_samples"):
        PPCA(4).fit(data[:3])
    with pytest.raises(ValueError, match="method must be"):
        PPCA(Q, method="svd")
    with pytest.raises(ValueError, match="method must be"):
        PPCA(Q).set_params(method="svd").fit(data)
    with pytest.raises(ValueError, match="n_components must be a positive integer"):
        PPCA(0)
    with pytest.raises(ValueError, match="noise variance is 0"):
        PPCA(1).fit(np.outer(np.arange(10.0), [1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="guide kind"):
        PPCA(Q, posterior="laplace")
    with pytest.raises(NotFittedError):
        PPCA(Q).score_samples(data)
    with pytest.raises(ValueError, match="n_samples"):
        fitted.sample(0)
    with pytest.raises(ValueError, match=r"shape \(300, 6, 1\)|expected \(N, 6\)"):
        fitted.check_data(torch.as_tensor(data)[..., None])
