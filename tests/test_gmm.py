"""GMM against scikit-learn's GaussianMixture (float64), its Pyro story, and bad input."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture

import ppl_dgm
from ppl_dgm.models import GMM

TYPES = ["full", "tied", "diag", "spherical"]


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    rng = np.random.RandomState(0)
    skew = np.array([[1.0, 0.6, 0.0], [0.0, 1.0, 0.0], [0.0, 0.3, 0.2]])
    return np.vstack([rng.randn(200, 3), rng.randn(150, 3) * 0.5 + [4, 4, 0], rng.randn(100, 3) @ skew + [-4, 2, 1]])


def _initial(data, covariance_type):
    start = GaussianMixture(3, covariance_type=covariance_type, max_iter=0, random_state=3).fit(data)
    return dict(weights_init=start.weights_, means_init=start.means_, precisions_init=start.precisions_)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("covariance_type", TYPES)
def test_one_em_step_matches_sklearn(data, covariance_type):
    init = _initial(data, covariance_type)
    ref = GaussianMixture(3, covariance_type=covariance_type, max_iter=1, **init).fit(data)
    ours = GMM(3, covariance_type=covariance_type, max_iter=1, **init).fit(data)
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-8, atol=0, err_msg=name)
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=1e-12)


@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_fit_matches_sklearn_from_the_same_random_state(data, covariance_type, init_params):
    # One initialization: the same random draws give the same fit, component order included.
    kwargs = dict(covariance_type=covariance_type, init_params=init_params, random_state=1, n_init=1)
    ref = GaussianMixture(3, **kwargs).fit(data)
    ours = GMM(3, **kwargs).fit(data)
    assert ours.n_iter_ == ref.n_iter_ and ours.converged_ == ref.converged_
    np.testing.assert_allclose(ours.score_samples(data), ref.score_samples(data), rtol=0, atol=1e-10)
    assert ours.score(data) == pytest.approx(ref.score(data), abs=1e-10)
    np.testing.assert_array_equal(ours.predict(data), ref.predict(data))
    np.testing.assert_allclose(ours.predict_proba(data), ref.predict_proba(data), atol=1e-10)
    assert ours.bic(data) == pytest.approx(ref.bic(data), rel=1e-12)
    assert ours.aic(data) == pytest.approx(ref.aic(data), rel=1e-12)
    x_ours, y_ours = ours.sample(50)
    x_ref, y_ref = ref.sample(50)
    np.testing.assert_array_equal(y_ours, y_ref)
    np.testing.assert_allclose(x_ours, x_ref, atol=1e-9)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_restarts_reach_sklearns_optimum(data, covariance_type):
    # Several initializations may reach one optimum with lower bounds that differ in the last digits;
    # which one wins is a floating-point tie, so compare what does not depend on it: the scores, and
    # the labels up to a permutation of the components.
    kwargs = dict(covariance_type=covariance_type, init_params="kmeans", random_state=1, n_init=3)
    ref = GaussianMixture(3, **kwargs).fit(data)
    ours = GMM(3, **kwargs).fit(data)
    assert ours.lower_bound_ == pytest.approx(ref.lower_bound_, abs=1e-8)
    np.testing.assert_allclose(ours.score_samples(data), ref.score_samples(data), rtol=0, atol=1e-8)
    assert adjusted_rand_score(ours.predict(data), ref.predict(data)) == 1.0
    order = [int(np.argmin(np.abs(ref.means_ - mean).sum(1))) for mean in ours.means_]
    assert sorted(order) == [0, 1, 2]
    np.testing.assert_allclose(ours.means_, ref.means_[order], atol=1e-6)
    np.testing.assert_allclose(ours.weights_, ref.weights_[order], atol=1e-8)


def test_em_never_decreases_the_log_likelihood(data):
    model = GMM(4, covariance_type="full", tol=0, max_iter=60, random_state=0, init_params="random")
    with pytest.warns(Warning, match="did not converge"):
        model.fit(data)
    bounds = np.array(model.lower_bounds_)
    assert len(bounds) == 60 and (np.diff(bounds) >= -1e-12).all()


def test_sklearn_estimator_protocol(data):
    model = GMM(2, covariance_type="diag", random_state=0)
    copy = clone(model)
    assert copy.get_params() == model.get_params() and copy is not model
    assert model.set_params(n_components=3) is model and model.n_components == 3
    labels = model.fit_predict(data)
    np.testing.assert_array_equal(labels, model.predict(data))



@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_warm_start_continues_like_sklearn(data):
    ours = GMM(3, warm_start=True, max_iter=2, random_state=0)
    ref = GaussianMixture(3, warm_start=True, max_iter=2, random_state=0)
    bounds = []
    for _ in range(3):
        ours.fit(data)
        ref.fit(data)
        bounds.append(ours.lower_bound_)
        assert ours.lower_bound_ == pytest.approx(ref.lower_bound_, abs=1e-12)
        np.testing.assert_allclose(ours.means_, ref.means_, atol=1e-12)
    assert bounds == sorted(bounds)


def test_degenerate_data_without_reg_covar_is_a_clear_error():
    collapsed = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0]]), 10, axis=0)
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        GMM(2, reg_covar=0.0, random_state=0).fit(collapsed)
    GMM(2, random_state=0).fit(collapsed)  # the default reg_covar copes, as in sklearn


@pytest.mark.parametrize("bad,match", [
    (np.array([[0.0, np.nan], [1.0, 2.0], [3.0, 4.0]]), "NaN or infinity"),
    (np.array([[0.0, np.inf], [1.0, 2.0], [3.0, 4.0]]), "NaN or infinity"),
    (np.zeros(5), "Expected 2D array"),
    (np.zeros((2, 2)), "n_samples >= n_components"),
    ([["a", "b"], ["c", "d"], ["e", "f"]], "must hold numbers"),
])
def test_bad_input(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        GMM(3).fit(bad)


def test_bad_parameters_and_unfitted_use(data):
    for kwargs, match in [({"covariance_type": "banana"}, "covariance_type"), ({"init_params": "x"}, "init_params"),
                          ({"n_components": 0}, "n_components"), ({"max_iter": -1}, "max_iter")]:
        with pytest.raises(ValueError, match=match):
            GMM(**kwargs)
    with pytest.raises(ValueError, match="weights_init"):
        GMM(2, weights_init=[0.9, 0.9]).fit(data)
    with pytest.raises(ValueError, match="means_init"):
        GMM(2, means_init=np.zeros((3, 3))).fit(data)
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        GMM(2).predict(data)
    fitted = GMM(2, random_state=0).fit(data)
    with pytest.raises(ValueError, match="expecting 3 features"):
        fitted.predict(data[:, :2])


def test_story_svi_reaches_the_em_solution_and_log_likelihood_is_exact(data):
    x = torch.as_tensor(data)
    em = GMM(3, covariance_type="full", random_state=0).fit(data)
    for posterior in ("map", "normal"):
        model = GMM(3, covariance_type="full", random_state=0, posterior=posterior)
        ppl_dgm.fit(model, x, engine="svi", epochs=100, batch_size=150, lr=0.05, progress=False, seed=0)
        assert model.score(data) == pytest.approx(em.score(data), abs=0.02)
        result = ppl_dgm.log_likelihood(model, x)
        assert result.kind == "exact"
        np.testing.assert_allclose(result.per_sample.numpy(), model.score_samples(data), atol=1e-10)


def test_log_prob_at_a_single_draw_equals_log_prob(data):
    model = GMM(3, covariance_type="tied", random_state=0).fit(data)
    sites = {name: value.detach().unsqueeze(0) for name, value in model.guide_params.points().items()}
    x = torch.as_tensor(data)
    np.testing.assert_allclose(model.log_prob_at(x, sites)[0].numpy(), model.score_samples(data), atol=1e-9)


def test_checkpoint_keeps_the_fitted_state(data, tmp_path):
    model = GMM(3, covariance_type="spherical", random_state=0).fit(data)
    ppl_dgm.save(model, tmp_path)
    loaded = ppl_dgm.load(tmp_path)
    np.testing.assert_array_equal(loaded.means_, model.means_)
    np.testing.assert_array_equal(loaded.score_samples(data), model.score_samples(data))


def test_device_and_float32(data, device):
    model = GMM(3, random_state=0, device=device, dtype=torch.float32).fit(data)
    assert model.means.device.type == device.type and model.means.dtype == torch.float32
    assert model.score(data) == pytest.approx(GaussianMixture(3, random_state=0).fit(data).score(data), abs=1e-3)


def test_draw_samples_the_fitted_mixture_not_the_prior(data):
    model = GMM(3, covariance_type="full", random_state=0).fit(data)
    torch.manual_seed(0)
    draws = ppl_dgm.draw(model, 4000).numpy()
    np.testing.assert_allclose(draws.mean(0), data.mean(0), atol=0.15)
    np.testing.assert_allclose(np.cov(draws.T), np.cov(data.T), atol=0.4)
    assert not bool(model.uses_guide_point)  # drawing leaves the EM state in charge
