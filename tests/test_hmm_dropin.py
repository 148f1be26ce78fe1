"""hmmlearn's named classes (GaussianHMM, CategoricalHMM, GMMHMM, PoissonHMM) as drop-ins: hmmlearn's
constructor, parameters set one by one before fit, sklearn's clone / get_params / GridSearchCV, agreement
with hmmlearn, the Pyro story, devices."""

import inspect

import numpy as np
import pytest
import torch
from hmmlearn import hmm as reference
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, KFold

import ppl_dgm
from ppl_dgm.models.classical.hmm import GMMHMM, HMM, CategoricalHMM, GaussianHMM, PoissonHMM

STARTPROB, TRANSMAT = np.array([0.6, 0.3, 0.1]), np.array([[0.7, 0.2, 0.1], [0.3, 0.5, 0.2], [0.4, 0.3, 0.3]])
MEANS, COVARS = np.array([[0.0, 0.0], [0.0, 11.0], [9.0, 10.0]]), np.array([[0.5, 1.0], [1.0, 0.7], [0.9, 1.3]])
EMISSIONPROB = np.array([[0.1, 0.4, 0.5], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
LAMBDAS = np.array([[1.0, 6.0], [4.0, 0.5], [9.0, 3.0]])
WEIGHTS = np.array([[0.3, 0.7], [0.5, 0.5], [0.8, 0.2]])
MIX_MEANS = np.stack([MEANS - 1.0, MEANS + 1.0], axis=1)  # (K, M, D)
MIX_COVARS = {"spherical": np.full((3, 2), 0.6), "diag": np.stack([COVARS, COVARS[::-1]], axis=1),
              "full": np.tile(np.diag([0.7, 0.9]), (3, 2, 1, 1)), "tied": np.tile(np.diag([0.7, 0.9]), (3, 1, 1))}


def _set(h, **values):
    for name, value in values.items():
        setattr(h, name + "_", value)
    return h


def _poisson_truth() -> reference.PoissonHMM:
    return _set(reference.PoissonHMM(3, init_params=""), startprob=STARTPROB, transmat=TRANSMAT, lambdas=LAMBDAS)


def _gmm_truth(covariance_type: str = "diag") -> reference.GMMHMM:
    return _set(reference.GMMHMM(3, 2, covariance_type=covariance_type, init_params=""), startprob=STARTPROB,
                transmat=TRANSMAT, weights=WEIGHTS, means=MIX_MEANS, covars=MIX_COVARS[covariance_type])


def _gaussian_truth() -> reference.GaussianHMM:
    truth = reference.GaussianHMM(3, init_params="")
    truth.startprob_, truth.transmat_, truth.means_, truth.covars_ = STARTPROB, TRANSMAT, MEANS, COVARS
    return truth


@pytest.mark.parametrize("cls", [GaussianHMM, CategoricalHMM, GMMHMM, PoissonHMM])
def test_constructor_is_hmmlearns_then_ours(cls):
    ours = list(inspect.signature(cls.__init__).parameters.values())[1:]
    theirs = list(inspect.signature(getattr(reference, cls.__name__).__init__).parameters.values())[1:]
    assert [(p.name, p.default, p.kind) for p in ours[: len(theirs)]] == [(p.name, p.default, p.kind) for p in theirs]
    assert [(p.name, p.kind) for p in ours[len(theirs):]] == [(name, inspect.Parameter.KEYWORD_ONLY)
                                                             for name in ("posterior", "device", "dtype")]
    with pytest.raises(NotFittedError, match=cls.__name__):
        cls(2).score(np.zeros((3, 1)))


def test_parameters_set_one_by_one_before_fit():
    h = GaussianHMM(3, covariance_type="diag", init_params="st")
    h.means_ = MEANS
    h.means_ = 20 * h.means_  # read back before the other parameters exist, as hmmlearn's tutorials do
    np.testing.assert_array_equal(h.means_, 20 * MEANS)
    with pytest.raises(AttributeError, match="covars_"):
        _ = h.covars_
    h.covars_ = COVARS
    assert h.covars_.shape == (3, 2, 2)  # hmmlearn's getter: full matrices
    np.testing.assert_allclose(np.diagonal(h.covars_, axis1=1, axis2=2), COVARS)
    h.startprob_, h.transmat_ = STARTPROB, TRANSMAT
    X, states = h.sample(200, random_state=0)
    assert X.shape == (200, 2) and states.shape == (200,)
    h.fit(X)  # init_params="st": the hand-set means and covariances are EM's starting point
    assert h.monitor_.converged or h.monitor_.iter == h.n_iter


def test_clone_get_params_and_set_params():
    h = GaussianHMM(2, "full", n_iter=7, random_state=3, posterior="normal")
    params = h.get_params()
    assert params["covariance_type"] == "full" and params["n_iter"] == 7 and params["posterior"] == "normal"
    assert "emission" not in params and "n_features" not in params
    copy = clone(h)
    assert type(copy) is GaussianHMM and copy.get_params() == params
    assert " ".join(repr(h).split()) == ("GaussianHMM(covariance_type='full', n_components=2, n_iter=7, "
                                         "posterior='normal', random_state=3)")
    assert copy.set_params(n_components=4).n_components == 4
    with pytest.raises(ValueError, match="invalid parameter 'emission' for GaussianHMM"):
        h.set_params(emission="categorical")


@pytest.mark.parametrize(("cls", "changed"), [(GMMHMM, {"n_mix": 3, "covariance_type": "tied"}),
                                              (PoissonHMM, {"lambdas_prior": 2.0, "lambdas_weight": 0.5})])
def test_mixture_and_poisson_clone_and_get_params(cls, changed):
    h = cls(2, random_state=1, **changed)
    params = h.get_params()
    assert {name: params[name] for name in changed} == changed and params["random_state"] == 1
    assert set(params) == set(inspect.signature(cls.__init__).parameters) - {"self"}
    copy = clone(h)
    assert type(copy) is cls and copy.get_params() == params


def test_grid_search_over_n_components():
    X = _gaussian_truth().sample(300, random_state=np.random.RandomState(0))[0]
    search = GridSearchCV(GaussianHMM(random_state=0, n_iter=20), {"n_components": [1, 3]}, cv=KFold(3))
    search.fit(X)
    assert search.best_params_ == {"n_components": 3}
    assert type(search.best_estimator_) is GaussianHMM


@pytest.mark.parametrize("covariance_type", ["spherical", "diag", "full", "tied"])
def test_gaussian_fit_matches_hmmlearn(covariance_type):
    X, _ = _gaussian_truth().sample(120, random_state=np.random.RandomState(1))
    lengths = [50, 40, 30]
    fitted = []
    for cls in (GaussianHMM, reference.GaussianHMM):
        h = cls(3, covariance_type, n_iter=5, tol=-np.inf, init_params="", implementation="log")
        h.startprob_, h.transmat_, h.means_ = STARTPROB, TRANSMAT, MEANS + 0.5
        h.covars_ = {"spherical": COVARS[:, 0], "diag": COVARS, "full": np.stack([np.diag(c) for c in COVARS]),
                     "tied": np.diag(COVARS[0])}[covariance_type]
        fitted.append(h.fit(X, lengths))
    ours, theirs = fitted
    np.testing.assert_allclose(ours.monitor_.history, theirs.monitor_.history, rtol=1e-9)
    # hmmlearn's covars_ getter returns (2 K, D, D) for fitted spherical covariances (a quirk of its own); the scores
    # below check those covariances
    for name in ("startprob_", "transmat_", "means_") + (("covars_",) if covariance_type != "spherical" else ()):
        np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=1e-7, atol=1e-10)
    assert ours.score(X, lengths) == pytest.approx(theirs.score(X, lengths), rel=1e-10)
    np.testing.assert_array_equal(ours.predict(X, lengths), theirs.predict(X, lengths))
    assert ours.bic(X, lengths) == pytest.approx(theirs.bic(X, lengths), rel=1e-9)


def test_categorical_fit_matches_hmmlearn():
    truth = reference.CategoricalHMM(3, init_params="")
    truth.startprob_, truth.transmat_, truth.emissionprob_ = STARTPROB, TRANSMAT, EMISSIONPROB
    X, _ = truth.sample(150, random_state=np.random.RandomState(2))
    fitted = [cls(3, n_iter=5, tol=-np.inf, random_state=0).fit(X, [100, 50])
              for cls in (CategoricalHMM, reference.CategoricalHMM)]
    np.testing.assert_allclose(fitted[0].monitor_.history, fitted[1].monitor_.history, rtol=1e-9)
    np.testing.assert_allclose(fitted[0].emissionprob_, fitted[1].emissionprob_, rtol=1e-7)
    assert fitted[0].n_features == fitted[1].n_features == 3


def test_poisson_fit_matches_hmmlearn():
    X, _ = _poisson_truth().sample(150, random_state=np.random.RandomState(3))
    fitted = [_set(cls(3, n_iter=5, tol=-np.inf, init_params="", lambdas_prior=0.5, lambdas_weight=0.1),
                   startprob=STARTPROB, transmat=TRANSMAT, lambdas=LAMBDAS + 1.0).fit(X, [90, 60])
              for cls in (PoissonHMM, reference.PoissonHMM)]
    ours, theirs = fitted
    np.testing.assert_allclose(ours.monitor_.history, theirs.monitor_.history, rtol=1e-9)
    for name in ("startprob_", "transmat_", "lambdas_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=1e-7, atol=1e-12)
    assert ours.score(X, [90, 60]) == pytest.approx(theirs.score(X, [90, 60]), rel=1e-10)


@pytest.mark.parametrize("covariance_type", ["spherical", "diag", "full", "tied"])
def test_gmm_fit_matches_hmmlearn(covariance_type):
    X, _ = _gmm_truth(covariance_type).sample(120, random_state=np.random.RandomState(5))
    fitted = []
    for cls in (GMMHMM, reference.GMMHMM):
        h = cls(3, 2, covariance_type=covariance_type, n_iter=4, tol=-np.inf, init_params="")
        fitted.append(_set(h, startprob=STARTPROB, transmat=TRANSMAT, weights=WEIGHTS, means=MIX_MEANS + 0.3,
                           covars=MIX_COVARS[covariance_type]).fit(X, [70, 50]))
    ours, theirs = fitted
    np.testing.assert_allclose(ours.monitor_.history, theirs.monitor_.history, rtol=1e-8)
    for name in ("startprob_", "transmat_", "weights_", "means_", "covars_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=1e-6, atol=1e-10)
    assert ours.means_.shape == (3, 2, 2) and ours.covars_.shape == theirs.covars_.shape
    assert ours.score(X, [70, 50]) == pytest.approx(theirs.score(X, [70, 50]), rel=1e-9)


def test_scaling_underflow_raises_as_hmmlearn():
    h = GaussianHMM(2, init_params="", implementation="scaling")
    h.startprob_, h.transmat_, h.means_, h.covars_ = [0.5, 0.5], [[0.5, 0.5], [0.5, 0.5]], [[0.0], [5.0]], [[1], [1]]
    X = np.array([[0.0], [1e4], [5.0]])
    with pytest.raises(ValueError, match="underflow; consider using implementation='log'"):
        h.score(X)
    h.implementation = "log"
    assert np.isfinite(h.score(X))


def test_pyro_story_scores_as_em():
    x = torch.as_tensor(np.stack([_gaussian_truth().sample(8, random_state=np.random.RandomState(s))[0]
                                  for s in range(6)]))
    model = GaussianHMM(3, random_state=0, n_iter=5).fit_data(x)
    result = ppl_dgm.log_likelihood(model, x)
    assert result.kind == "exact"
    np.testing.assert_allclose(result.per_sample.sum().item(), model.score(x.reshape(-1, 2), [8] * 6), rtol=1e-10)
    fit = ppl_dgm.fit(model, x, engine="svi", epochs=3, batch_size=6, lr=0.01, progress=False, seed=0)
    assert len(fit.train_loss) == 3 and np.isfinite(model.means_).all()


@pytest.mark.parametrize("make", [pytest.param(lambda: (GMMHMM(3, 2, random_state=0, n_iter=3), _gmm_truth()),
                                               id="gmm"),
                                  pytest.param(lambda: (PoissonHMM(3, random_state=0, n_iter=3), _poisson_truth()),
                                               id="poisson")])
def test_mixture_and_poisson_pyro_story_scores_as_em(make):
    model, truth = make()
    x = torch.as_tensor(np.stack([truth.sample(8, random_state=np.random.RandomState(s))[0] for s in range(5)]))
    model.fit_data(x)
    result = ppl_dgm.log_likelihood(model, x)
    assert result.kind == "exact"
    em_score = model.score(x.reshape(-1, x.shape[-1]).numpy(), [8] * 5)
    np.testing.assert_allclose(result.per_sample.sum().item(), em_score, rtol=1e-10)
    story = model.log_prob(x)  # with gradients on: the differentiable path, through the story's emission
    np.testing.assert_allclose(story.sum().item(), em_score, rtol=1e-10)


@pytest.mark.parametrize("make", [
    pytest.param(lambda: GMMHMM(2, 2, covariance_type="full", random_state=0, n_iter=3), id="gmm"),
    # its weights file's 8-byte header length, 640, begins with the bytes of a pickle's magic (80 02): once refused
    pytest.param(lambda: PoissonHMM(2, random_state=0, n_iter=3), id="poisson")])
def test_mixture_and_poisson_save_and_load(make, tmp_path):
    X = np.random.RandomState(0).poisson(3.0, (40, 2))
    model = make().fit(X)
    ppl_dgm.save(model, tmp_path)
    loaded = ppl_dgm.load(tmp_path)
    assert type(loaded) is type(model) and loaded.get_params() == model.get_params()
    assert loaded.score(X) == model.score(X)


def test_two_dimensional_data_error_says_what_to_do():
    with pytest.raises(ValueError, match="digits_sequence"):
        HMM(2).check_data(torch.zeros(10, 64))


def test_device(device):
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    X, _ = _gaussian_truth().sample(100, random_state=np.random.RandomState(4))
    scores = [GaussianHMM(3, n_iter=3, random_state=0, device=d).fit(X).score(X) for d in ("cpu", device)]
    assert scores[1] == pytest.approx(scores[0], rel=1e-9)


def test_save_and_load_keep_the_class(tmp_path):
    X = np.random.RandomState(0).randint(0, 3, (40, 1))
    model = CategoricalHMM(2, random_state=0, n_iter=3).fit(X)
    ppl_dgm.save(model, tmp_path)
    loaded = ppl_dgm.load(tmp_path)
    assert type(loaded) is CategoricalHMM and loaded.get_params() == model.get_params()
    assert loaded.score(X) == model.score(X)
