"""GaussianMixture against scikit-learn's (float64): EM, the estimator protocol, its Pyro story, and bad input.
scikit-learn's own test file runs against it too: python .ci/reference_suites.py sklearn."""

import inspect
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.utils.estimator_checks import check_estimator

import ppl_dgm
from ppl_dgm.models.classical.gmm import GMM, GaussianMixture

TYPES = ["full", "tied", "diag", "spherical"]


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    rng = np.random.RandomState(0)
    skew = np.array([[1.0, 0.6, 0.0], [0.0, 1.0, 0.0], [0.0, 0.3, 0.2]])
    return np.vstack([rng.randn(200, 3), rng.randn(150, 3) * 0.5 + [4, 4, 0], rng.randn(100, 3) @ skew + [-4, 2, 1]])


def _initial(data, covariance_type):
    start = SkGaussianMixture(3, covariance_type=covariance_type, max_iter=0, random_state=3).fit(data)
    return dict(weights_init=start.weights_, means_init=start.means_, precisions_init=start.precisions_)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("covariance_type", TYPES)
def test_one_em_step_matches_sklearn(data, covariance_type):
    init = _initial(data, covariance_type)
    ref = SkGaussianMixture(3, covariance_type=covariance_type, max_iter=1, **init).fit(data)
    ours = GaussianMixture(3, covariance_type=covariance_type, max_iter=1, **init).fit(data)
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-8, atol=0, err_msg=name)
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=1e-12)


@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_fit_matches_sklearn_from_the_same_random_state(data, covariance_type, init_params):
    # One initialization: the same random draws give the same fit, component order included.
    kwargs = dict(covariance_type=covariance_type, init_params=init_params, random_state=1, n_init=1)
    ref = SkGaussianMixture(3, **kwargs).fit(data)
    ours = GaussianMixture(3, **kwargs).fit(data)
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
    ref = SkGaussianMixture(3, **kwargs).fit(data)
    ours = GaussianMixture(3, **kwargs).fit(data)
    assert ours.lower_bound_ == pytest.approx(ref.lower_bound_, abs=1e-8)
    np.testing.assert_allclose(ours.score_samples(data), ref.score_samples(data), rtol=0, atol=1e-8)
    assert adjusted_rand_score(ours.predict(data), ref.predict(data)) == 1.0
    order = [int(np.argmin(np.abs(ref.means_ - mean).sum(1))) for mean in ours.means_]
    assert sorted(order) == [0, 1, 2]
    np.testing.assert_allclose(ours.means_, ref.means_[order], atol=1e-6)
    np.testing.assert_allclose(ours.weights_, ref.weights_[order], atol=1e-8)


def test_em_never_decreases_the_log_likelihood(data):
    model = GaussianMixture(4, covariance_type="full", tol=0, max_iter=60, random_state=0, init_params="random")
    with pytest.warns(Warning, match="did not converge"):
        model.fit(data)
    bounds = np.array(model.lower_bounds_)
    assert len(bounds) == 60 and (np.diff(bounds) >= -1e-12).all()


def test_constructor_is_sklearns_plus_ours_and_gmm_is_the_old_name():
    ours = inspect.signature(GaussianMixture.__init__).parameters
    ref = inspect.signature(SkGaussianMixture.__init__).parameters
    assert list(ours)[: len(ref)] == list(ref) and list(ours)[len(ref):] == ["posterior", "device", "dtype"]
    for name, parameter in ref.items():
        assert (ours[name].kind, ours[name].default) == (parameter.kind, parameter.default), name
    assert all(ours[name].kind is inspect.Parameter.KEYWORD_ONLY for name in ("posterior", "device", "dtype"))
    assert GMM is GaussianMixture and GaussianMixture.registry_name == "gmm"


def test_repr_get_params_set_params_and_clone_as_sklearn():
    kwargs = dict(covariance_type="diag", random_state=0)
    model = GaussianMixture(3, **kwargs)
    assert repr(model) == repr(SkGaussianMixture(3, **kwargs)) == (
        "GaussianMixture(covariance_type='diag', n_components=3, random_state=0)")
    assert repr(GaussianMixture(dtype="float32", posterior="normal")) == (
        "GaussianMixture(dtype='float32', posterior='normal')")
    params = model.get_params()
    assert {k: v for k, v in params.items() if k not in ("posterior", "device", "dtype")} == SkGaussianMixture(
        3, **kwargs).get_params()
    copy = clone(model)
    assert copy is not model and copy.get_params() == params
    assert model.set_params(n_components=2, posterior="normal") is model and model.n_components == 2
    assert model.guide_params.kind == "normal"  # a new posterior gets a guide of its kind
    with pytest.raises(ValueError, match="invalid parameter 'banana'"):
        model.set_params(banana=1)


@pytest.mark.filterwarnings("ignore:ValueError occurred during set_params")  # our device, dtype, posterior
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")  # sklearn's array-API check
def test_sklearns_estimator_checks_pass_but_two_a_torch_module_cannot():
    check_estimator(GaussianMixture(), expected_failed_checks={
        "check_no_attributes_set_in_init": "torch.nn.Module.__init__ sets `training`",
        "check_do_not_raise_errors_in_init_or_set_params": "device and dtype are checked where the buffers are made",
    })


def test_grid_search_picks_what_sklearns_picks(data):
    grid = {"n_components": [1, 3], "covariance_type": ["full", "spherical"]}
    ours = GridSearchCV(GaussianMixture(random_state=0), grid, cv=3).fit(data)
    ref = GridSearchCV(SkGaussianMixture(random_state=0), grid, cv=3).fit(data)
    assert ours.best_params_ == ref.best_params_ and ours.best_params_["n_components"] == 3
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"], rtol=1e-8)
    assert isinstance(ours.best_estimator_, GaussianMixture)


def test_fit_predict_equals_fit_then_predict(data):
    model = GaussianMixture(3, n_init=2, random_state=0)
    np.testing.assert_array_equal(model.fit_predict(data), model.predict(data))


def test_fitted_attributes_set_by_hand_are_what_scores(data):
    ref = SkGaussianMixture(3, covariance_type="tied", random_state=0).fit(data)
    model = GaussianMixture(3, covariance_type="tied")
    model.weights_, model.means_, model.precisions_cholesky_ = ref.weights_, ref.means_, ref.precisions_cholesky_
    model.covariances_ = ref.covariances_
    np.testing.assert_allclose(model.score_samples(data), ref.score_samples(data), rtol=1e-12)
    np.testing.assert_allclose(model.precisions_, ref.precisions_, rtol=1e-10)
    model.means_ = ref.means_ + 1.0
    assert model.score(data) < ref.score(data)


def _random_mixture(rng: np.random.RandomState, covariance_type: str, k: int, d: int) -> dict:
    """Fitted attributes of a random mixture, with sklearn's precisions_cholesky_ convention."""
    if covariance_type in ("full", "tied"):
        a = rng.randn(*((k,) if covariance_type == "full" else ()), d, d)
        covariances = a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(d)
        prec_chol = np.swapaxes(np.linalg.inv(np.linalg.cholesky(covariances)), -1, -2)
    else:
        covariances = rng.uniform(0.1, 3.0, size=(k, d) if covariance_type == "diag" else (k,))
        prec_chol = 1 / np.sqrt(covariances)
    return dict(weights_=rng.dirichlet(np.ones(k)), means_=3 * rng.randn(k, d), covariances_=covariances,
                precisions_cholesky_=prec_chol)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), covariance_type=st.sampled_from(TYPES), k=st.integers(1, 3),
       d=st.integers(1, 3))
def test_any_mixture_set_by_hand_scores_as_sklearns(seed, covariance_type, k, d):
    rng = np.random.RandomState(seed)
    attributes, x = _random_mixture(rng, covariance_type, k, d), 4 * rng.randn(20, d)
    ours, ref = (cls(k, covariance_type=covariance_type) for cls in (GaussianMixture, SkGaussianMixture))
    for name, value in attributes.items():
        setattr(ours, name, value)
        setattr(ref, name, value)
    np.testing.assert_allclose(ours.score_samples(x), ref.score_samples(x), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ours.predict_proba(x), ref.predict_proba(x), rtol=1e-8, atol=1e-12)


def test_float32_data_stays_float32_unless_a_dtype_is_given(data):
    x32 = data.astype(np.float32)
    model = GaussianMixture(2, random_state=0).fit(x32)
    assert model.means_.dtype == model.covariances_.dtype == model.score_samples(x32).dtype == np.float32
    assert model.fit(data).means_.dtype == np.float64
    assert GaussianMixture(2, random_state=0, dtype="float64").fit(x32).means_.dtype == np.float64


def test_data_frame_feature_names_as_sklearn(data):
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(data, columns=["a", "b", "c"])
    model = GaussianMixture(2, random_state=0).fit(frame)
    np.testing.assert_array_equal(model.feature_names_in_, SkGaussianMixture(2).fit(frame).feature_names_in_)
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        model.predict(data)
    with pytest.raises(ValueError, match="feature names should match"):
        model.predict(frame.rename(columns={"a": "z"}))
    assert not hasattr(model.fit(data), "feature_names_in_")


def test_verbose_output_has_sklearns_format(data, capsys):
    def lines(estimator):
        estimator.fit(data)
        text = re.sub(r"time lapse [0-9.]+s", "time lapse _s", capsys.readouterr().out)
        return [re.sub(r"-?[0-9]+\.[0-9]+", "_", line) for line in text.splitlines()], re.findall(r"-?\d+\.\d+", text)

    kwargs = dict(n_components=3, random_state=0, verbose=2, verbose_interval=1, n_init=2)
    (ours, our_numbers), (ref, ref_numbers) = lines(GaussianMixture(**kwargs)), lines(SkGaussianMixture(**kwargs))
    assert ours == ref and len(ours) > 4
    np.testing.assert_allclose(np.array(our_numbers, dtype=float), np.array(ref_numbers, dtype=float), atol=2e-5)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_warm_start_continues_like_sklearn(data):
    ours = GaussianMixture(3, warm_start=True, max_iter=2, random_state=0)
    ref = SkGaussianMixture(3, warm_start=True, max_iter=2, random_state=0)
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
        GaussianMixture(2, reg_covar=0.0, random_state=0).fit(collapsed)
    GaussianMixture(2, random_state=0).fit(collapsed)  # the default reg_covar copes, as in sklearn


@pytest.mark.parametrize("bad,match", [
    (np.array([[0.0, np.nan], [1.0, 2.0], [3.0, 4.0]]), "NaN or infinity"),
    (np.array([[0.0, np.inf], [1.0, 2.0], [3.0, 4.0]]), "NaN or infinity"),
    (np.zeros(5), "Expected 2D array"),
    (np.zeros((2, 2)), "n_samples >= n_components"),
    ([["a", "b"], ["c", "d"], ["e", "f"]], "must hold numbers"),
])
def test_bad_input(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        GaussianMixture(3).fit(bad)


@pytest.mark.parametrize("kwargs,match", [
    ({"covariance_type": "banana"}, "'covariance_type' parameter of GaussianMixture must be a str among"),
    ({"init_params": "x"}, "'init_params' parameter of GaussianMixture must be a str among"),
    ({"n_components": 0}, r"'n_components' parameter of GaussianMixture must be an int in the range \[1, inf\)"),
    ({"max_iter": -1}, r"'max_iter' parameter of GaussianMixture must be an int in the range \[0, inf\)"),
    ({"tol": -1.0}, r"'tol' parameter of GaussianMixture must be a float in the range \[0.0, inf\)"),
    ({"weights_init": [0.9, 0.9]}, "The parameter 'weights' should be normalized"),
    ({"means_init": np.zeros((3, 3))}, "The parameter 'means' should have the shape of"),
    ({"precisions_init": -np.ones(2), "covariance_type": "spherical"}, "'spherical precision' should be positive"),
])
def test_bad_parameters_fail_at_fit_with_sklearns_messages(data, kwargs, match):
    model = GaussianMixture(**{"n_components": 2, **kwargs})  # as sklearn: constructing validates nothing
    with pytest.raises(ValueError, match=match):
        model.fit(data)


def test_unfitted_use_and_wrong_width():
    data = np.random.RandomState(0).randn(20, 3)
    with pytest.raises(NotFittedError, match="This GaussianMixture instance is not fitted yet"):
        GaussianMixture(2).predict(data)
    fitted = GaussianMixture(2, random_state=0).fit(data)
    with pytest.raises(ValueError, match="X has 2 features, but GaussianMixture is expecting 3 features"):
        fitted.predict(data[:, :2])


def test_story_svi_reaches_the_em_solution_and_log_likelihood_is_exact(data):
    x = torch.as_tensor(data)
    em = GaussianMixture(3, covariance_type="full", random_state=0).fit(data)
    for posterior in ("map", "normal"):
        model = GaussianMixture(3, covariance_type="full", random_state=0, posterior=posterior)
        ppl_dgm.fit(model, x, engine="svi", epochs=100, batch_size=150, lr=0.05, progress=False, seed=0)
        assert model.score(data) == pytest.approx(em.score(data), abs=0.02)
        result = ppl_dgm.log_likelihood(model, x)
        assert result.kind == "exact"
        np.testing.assert_allclose(result.per_sample.numpy(), model.score_samples(data), atol=1e-10)


def test_log_prob_at_a_single_draw_equals_log_prob(data):
    model = GaussianMixture(3, covariance_type="tied", random_state=0).fit(data)
    sites = {name: value.detach().unsqueeze(0) for name, value in model.guide_params.points().items()}
    x = torch.as_tensor(data)
    np.testing.assert_allclose(model.log_prob_at(x, sites)[0].numpy(), model.score_samples(data), atol=1e-9)


def test_checkpoint_keeps_the_fitted_state(data, tmp_path):
    model = GaussianMixture(3, covariance_type="spherical", random_state=0).fit(data)
    ppl_dgm.save(model, tmp_path)
    loaded = ppl_dgm.load(tmp_path)
    np.testing.assert_array_equal(loaded.means_, model.means_)
    np.testing.assert_array_equal(loaded.score_samples(data), model.score_samples(data))


def test_device_and_float32(data, device):
    model = GaussianMixture(3, random_state=0, device=device, dtype=torch.float32).fit(data)
    assert model.means.device.type == device.type and model.means.dtype == torch.float32
    assert model.score(data) == pytest.approx(SkGaussianMixture(3, random_state=0).fit(data).score(data), abs=1e-3)


def test_drop_in_on_a_device_takes_tensors_there_and_matches_sklearn(data, device):
    ref = SkGaussianMixture(3, covariance_type="diag", random_state=0).fit(data)
    x = torch.as_tensor(data, device=device)
    model = GaussianMixture(3, covariance_type="diag", random_state=0, device=device).fit(x)
    assert model.means.device.type == device.type and model.means.dtype == torch.float64
    np.testing.assert_allclose(model.score_samples(x), ref.score_samples(data), atol=1e-8)
    np.testing.assert_array_equal(model.predict(x), ref.predict(data))
    copy = clone(model)
    assert copy.get_params()["device"] == device and copy.device.type == device.type
    copy.means_, copy.weights_ = torch.as_tensor(ref.means_, device=device), ref.weights_
    copy.precisions_cholesky_, copy.covariances_ = ref.precisions_cholesky_, ref.covariances_
    np.testing.assert_allclose(copy.score_samples(x), ref.score_samples(data), atol=1e-8)


def test_draw_samples_the_fitted_mixture_not_the_prior(data):
    model = GaussianMixture(3, covariance_type="full", random_state=0).fit(data)
    torch.manual_seed(0)
    draws = ppl_dgm.draw(model, 4000).numpy()
    np.testing.assert_allclose(draws.mean(0), data.mean(0), atol=0.15)
    np.testing.assert_allclose(np.cov(draws.T), np.cov(data.T), atol=0.4)
    assert not bool(model.uses_guide_point)  # drawing leaves the EM state in charge
