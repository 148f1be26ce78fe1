"""HMM against hmmlearn's GaussianHMM/CategoricalHMM (float64), textbook values, robustness, its Pyro story,
and bad input."""

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from hmmlearn import hmm
from sklearn.base import clone

import ppl_dgm
from ppl_dgm.models import HMM
from ppl_dgm.models.classical.hmm import inference as kernels
from ppl_dgm.models.classical.hmm import padding

TYPES = ["full", "tied", "diag", "spherical"]
NEUTRAL = dict(covars_prior=0.0, covars_weight=1.0, means_weight=0.0, startprob_prior=1.0, transmat_prior=1.0)
LENGTHS = [40, 1, 73, 25]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites")
        yield


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    """Three well-separated regimes, switching now and then, in two dimensions."""
    rng = np.random.RandomState(0)
    states = np.repeat(rng.randint(0, 3, size=30), 5)[: sum(LENGTHS)]
    centres = np.array([[0.0, 0.0], [4.0, 1.0], [-3.0, 3.0]])
    skew = np.array([[1.0, 0.5], [0.0, 0.7]])
    return centres[states] + rng.randn(len(states), 2) @ skew


@pytest.fixture(scope="module")
def symbols() -> np.ndarray:
    rng = np.random.RandomState(1)
    states = np.repeat(rng.randint(0, 2, size=40), 4)[: sum(LENGTHS)]
    emission = np.array([[0.6, 0.3, 0.05, 0.05], [0.05, 0.1, 0.45, 0.4]])
    return np.array([[rng.choice(4, p=emission[s])] for s in states])


def _start(reference, X):
    """hmmlearn's own initialization (its ``_init``), as attributes to copy."""
    reference._init(X, LENGTHS)
    names = ["startprob_", "transmat_"] + (["emissionprob_"] if isinstance(reference, hmm.CategoricalHMM)
                                           else ["means_", "_covars_"])
    return {name: getattr(reference, name).copy() for name in names}


def _pair(X, covariance_type=None, n_iter=1, **kwargs):
    """hmmlearn's model and ours, both starting from hmmlearn's initialization of ``X``."""
    if covariance_type is None:
        reference = hmm.CategoricalHMM(3, n_iter=n_iter, tol=0, random_state=3, init_params="", **kwargs)
        ours = HMM(3, emission="categorical", n_iter=n_iter, tol=0, random_state=3, init_params="", **kwargs)
        start = _start(hmm.CategoricalHMM(3, random_state=3), X)
    else:
        reference = hmm.GaussianHMM(3, covariance_type=covariance_type, n_iter=n_iter, tol=0, init_params="", **kwargs)
        ours = HMM(3, covariance_type=covariance_type, n_iter=n_iter, tol=0, init_params="", **kwargs)
        start = _start(hmm.GaussianHMM(3, covariance_type=covariance_type, random_state=3), X)
        covars = start.pop("_covars_")
        start["covars_"] = covars[:, 0] if covariance_type == "spherical" else covars
    for name, value in start.items():
        setattr(reference, name, value.copy())
        setattr(ours, name, value.copy())
    return reference, ours


def _reference_covars(reference):
    """hmmlearn's ``covars_`` getter tiles spherical variances wrongly (n_components * n_features matrices)."""
    if reference.covariance_type == "spherical":
        return reference._covars_[:, 0, None, None] * np.eye(reference.n_features)
    return reference.covars_


def _assert_same_parameters(ours, reference, rtol):
    names = ["startprob_", "transmat_"] + (["emissionprob_"] if ours.emission == "categorical" else ["means_"])
    for name in names:
        np.testing.assert_allclose(getattr(ours, name), getattr(reference, name), rtol=rtol, atol=1e-13, err_msg=name)
    if ours.emission == "gaussian":
        np.testing.assert_allclose(ours.covars_, _reference_covars(reference), rtol=rtol, atol=1e-13)


@pytest.mark.parametrize("covariance_type", TYPES + [None], ids=TYPES + ["categorical"])
def test_one_baum_welch_step_matches_hmmlearn(data, symbols, covariance_type):
    X = symbols if covariance_type is None else data
    reference, ours = _pair(X, covariance_type, **({} if covariance_type is None else NEUTRAL))
    reference.fit(X, LENGTHS)
    ours.fit(X, LENGTHS)
    _assert_same_parameters(ours, reference, rtol=1e-8)
    np.testing.assert_allclose(list(ours.monitor_.history), list(reference.monitor_.history), rtol=1e-12)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_priors_and_initialization_match_hmmlearn(data, covariance_type):
    priors = dict(startprob_prior=2.0, transmat_prior=1.5, means_prior=0.5, means_weight=0.3, covars_prior=0.2,
                  covars_weight=4.0, min_covar=0.01)
    reference = hmm.GaussianHMM(3, covariance_type=covariance_type, n_iter=4, tol=0, random_state=5, **priors)
    ours = HMM(3, covariance_type=covariance_type, n_iter=4, tol=0, random_state=5, **priors)
    reference.fit(data, LENGTHS)
    ours.fit(data, LENGTHS)
    _assert_same_parameters(ours, reference, rtol=1e-8)
    np.testing.assert_allclose(list(ours.monitor_.history), list(reference.monitor_.history), rtol=1e-12)


def _assert_same_or_tied_paths(reference, X, path, ref_path, algorithm):
    """The decoded state paths agree, or differ only where two choices score the same (a floating-point
    tie, which an implementation may break either way): the score of each path is then equal."""
    if np.array_equal(path, ref_path):
        return
    if algorithm == "viterbi":  # joint log-probability of the path, sequence by sequence
        frame = reference._compute_log_likelihood(np.asarray(X))
        starts = np.cumsum([0, *LENGTHS[:-1]])
        def score(states):
            total = 0.0
            for start, length in zip(starts, LENGTHS, strict=True):
                s = states[start : start + length]
                total += np.log(reference.startprob_[s[0]]) + np.log(reference.transmat_[s[:-1], s[1:]]).sum()
                total += frame[np.arange(start, start + length), s].sum()
            return total
    else:  # sum of the marginal posteriors of the chosen states
        posteriors = reference.predict_proba(X, LENGTHS)
        def score(states):
            return posteriors[np.arange(len(states)), states].sum()
    assert score(path) == pytest.approx(score(ref_path), rel=1e-10), "paths differ beyond a tie"


@pytest.mark.parametrize("covariance_type", ["full", "spherical", None], ids=["full", "spherical", "categorical"])
def test_scores_posteriors_and_decoding_match_hmmlearn(data, symbols, covariance_type):
    X = symbols if covariance_type is None else data
    reference, ours = _pair(X, covariance_type, n_iter=3)
    reference.fit(X, LENGTHS)
    ours.fit(X, LENGTHS)
    assert ours.score(X, LENGTHS) == pytest.approx(reference.score(X, LENGTHS), rel=1e-10)
    log_prob, posteriors = ours.score_samples(X, LENGTHS)
    ref_log_prob, ref_posteriors = reference.score_samples(X, LENGTHS)
    assert log_prob == pytest.approx(ref_log_prob, rel=1e-10)
    np.testing.assert_allclose(posteriors, ref_posteriors, atol=1e-10)
    np.testing.assert_allclose(ours.predict_proba(X, LENGTHS), ref_posteriors, atol=1e-10)
    for algorithm in ("viterbi", "map"):
        value, path = ours.decode(X, LENGTHS, algorithm=algorithm)
        ref_value, ref_path = reference.decode(X, LENGTHS, algorithm=algorithm)
        assert value == pytest.approx(ref_value, rel=1e-10)
        _assert_same_or_tied_paths(reference, X, path, ref_path, algorithm)
    _assert_same_or_tied_paths(reference, X, ours.predict(X, LENGTHS), reference.predict(X, LENGTHS), "map")
    assert ours.bic(X, LENGTHS) == pytest.approx(reference.bic(X, LENGTHS), rel=1e-10)
    assert ours.aic(X, LENGTHS) == pytest.approx(reference.aic(X, LENGTHS), rel=1e-10)
    if covariance_type != "spherical":  # hmmlearn samples spherical states from mis-tiled covariances
        for ours_draw, ref_draw in zip(ours.sample(30, random_state=7), reference.sample(30, random_state=7),
                                       strict=True):
            np.testing.assert_allclose(ours_draw, ref_draw, atol=1e-10)


def _textbook(startprob, transmat, emissionprob):
    model = HMM(2, emission="categorical", init_params="")
    model.startprob_, model.transmat_, model.emissionprob_ = startprob, transmat, emissionprob
    return model


def test_viterbi_gives_the_wikipedia_healthy_fever_path():
    # https://en.wikipedia.org/wiki/Viterbi_algorithm: states (Healthy, Fever), symbols (normal, cold, dizzy)
    model = _textbook([0.6, 0.4], [[0.7, 0.3], [0.4, 0.6]], [[0.5, 0.4, 0.1], [0.1, 0.3, 0.6]])
    log_prob, path = model.decode([[0], [1], [2]])
    np.testing.assert_array_equal(path, [0, 0, 1])  # Healthy, Healthy, Fever
    assert math.exp(log_prob) == pytest.approx(0.01512, rel=1e-12)


def test_forward_algorithm_equals_enumeration_over_all_state_paths():
    # Rainy/Sunny with (walk, shop, clean), https://en.wikipedia.org/wiki/Hidden_Markov_model
    start, trans, emit = np.array([0.6, 0.4]), np.array([[0.7, 0.3], [0.4, 0.6]]), np.array([[0.1, 0.4, 0.5],
                                                                                             [0.6, 0.3, 0.1]])
    model = _textbook(start, trans, emit)
    observations = [0, 1, 2, 2, 0]
    joint = {path: start[path[0]] * np.prod([trans[a, b] for a, b in itertools.pairwise(path)])
             * np.prod([emit[s, o] for s, o in zip(path, observations, strict=True)])
             for path in itertools.product(range(2), repeat=len(observations))}
    total = sum(joint.values())
    X = np.array(observations)[:, None]
    assert math.exp(model.score(X)) == pytest.approx(total, rel=1e-12)
    best = max(joint, key=joint.get)
    log_prob, path = model.decode(X)
    assert tuple(path) == best and math.exp(log_prob) == pytest.approx(joint[best], rel=1e-12)
    posteriors = model.predict_proba(X)
    marginal = [[sum(p for path, p in joint.items() if path[t] == k) / total for k in range(2)]
                for t in range(len(observations))]
    np.testing.assert_allclose(posteriors, marginal, atol=1e-14)


@pytest.mark.parametrize("covariance_type", ["full", "diag", None], ids=["full", "diag", "categorical"])
def test_em_never_decreases_the_log_likelihood(data, symbols, covariance_type):
    X = symbols if covariance_type is None else data
    kwargs = {"emission": "categorical"} if covariance_type is None else {"covariance_type": covariance_type}
    model = HMM(4, n_iter=25, tol=-np.inf, random_state=0, **kwargs).fit(X, LENGTHS)
    history = np.array(model.monitor_.history)
    assert len(history) == 25
    assert (np.diff(history) >= -1e-9 * np.abs(history[1:])).all()


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_an_outlier_does_not_break_fitting(data, covariance_type):
    X = data.copy()
    X[57, 1] = 1e4
    model = HMM(3, covariance_type=covariance_type, n_iter=8, random_state=0).fit(X, LENGTHS)
    assert math.isfinite(model.score(X, LENGTHS))
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        assert np.isfinite(getattr(model, name)).all(), name
    assert np.isfinite(model.predict_proba(X, LENGTHS)).all()
    assert all(math.isfinite(value) for value in model.monitor_.history)


@pytest.mark.parametrize("lengths", [LENGTHS, [3000, 2000]], ids=["short", "long-chunked"])
def test_structural_zeros_stay_zero(lengths):
    rng = np.random.RandomState(2)
    left_right = np.array([[0.9, 0.1, 0.0], [0.0, 0.95, 0.05], [0.0, 0.0, 1.0]])
    X = np.concatenate([np.repeat([0.0, 3.0, 6.0], [n // 3, n // 3, n - 2 * (n // 3)])[:, None] + rng.randn(n, 1)
                        for n in lengths])
    ours = HMM(3, n_iter=5, init_params="mc", random_state=0)
    ours.startprob_, ours.transmat_ = [1.0, 0.0, 0.0], left_right
    reference = hmm.GaussianHMM(3, n_iter=5, init_params="mc", random_state=0)
    reference.startprob_, reference.transmat_ = [1.0, 0.0, 0.0], left_right
    ours.fit(X, lengths)
    reference.fit(X, lengths)
    assert (ours.transmat_[left_right == 0] == 0).all() and (ours.startprob_[1:] == 0).all()
    _assert_same_parameters(ours, reference, rtol=1e-7)
    assert ours.score(X, lengths) == pytest.approx(reference.score(X, lengths), rel=1e-10)


def _gaussian_pair(startprob, transmat, means, n_iter=1):
    models = hmm.GaussianHMM(len(startprob), init_params="", n_iter=n_iter, tol=0), HMM(
        len(startprob), init_params="", n_iter=n_iter, tol=0)
    for model in models:
        model.startprob_, model.transmat_ = startprob, transmat
        model.means_, model.covars_ = means, np.ones_like(means)
    return models


@pytest.mark.parametrize("length", [10, 3000], ids=["short", "long-chunked"])
def test_sequences_scaling_cannot_represent_are_redone_in_log_space(length, monkeypatch):
    calls = []
    log_space = kernels._log_space
    monkeypatch.setattr(kernels, "_log_space", lambda *args: calls.append(1) or log_space(*args))
    rng = np.random.RandomState(0)
    # left-right chain: x_1 = 100 is explained only by state 2, which cannot be reached at t = 1
    left_right = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]])
    reference, ours = _gaussian_pair([1.0, 0.0, 0.0], left_right, [[0.0], [50.0], [100.0]])
    X = np.vstack([[[0.0], [100.0]], 100 + rng.randn(length - 2, 1), 3 * rng.randn(length, 1)])
    assert ours.score(X, [length, length]) == pytest.approx(reference.score(X, [length, length]), rel=1e-12)
    np.testing.assert_allclose(ours.predict_proba(X, [length, length]), reference.predict_proba(X, [length, length]),
                               atol=1e-12)
    reference.fit(X, [length, length])
    ours.fit(X, [length, length])
    _assert_same_parameters(ours, reference, rtol=1e-8)
    # two absorbing states, evidence for one then as much for the other: scaled backward variables overflow
    reference, ours = _gaussian_pair([0.5, 0.5], np.eye(2), [[0.0], [6.0]])
    X = np.repeat([[0.0], [6.0]], max(40, length // 2), axis=0)
    assert ours.score(X) == pytest.approx(reference.score(X), rel=1e-12)
    np.testing.assert_allclose(ours.predict_proba(X), 0.5, atol=1e-12)
    assert len(calls) >= 4


def test_batched_sequences_of_different_lengths_equal_hmmlearn_on_the_concatenation():
    rng = np.random.RandomState(4)
    lengths = [5, 300, 77, 1, 150]
    X = rng.randn(sum(lengths), 2) + np.repeat(rng.randint(0, 2, size=sum(lengths) // 10 + 1), 10)[: sum(lengths),
                                                                                                     None] * 3
    reference = hmm.GaussianHMM(2, covariance_type="full", n_iter=5, tol=0, random_state=0).fit(X, lengths)
    ours = HMM(2, covariance_type="full", n_iter=5, tol=0, random_state=0).fit(X, lengths)
    _assert_same_parameters(ours, reference, rtol=1e-8)
    np.testing.assert_allclose(list(ours.monitor_.history), list(reference.monitor_.history), rtol=1e-12)


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_chunked_forward_backward_equals_step_by_step(chunk):
    torch.manual_seed(0)
    k, lengths = 4, [50, 130, 1, 97]
    transmat = torch.rand(k, k, dtype=torch.float64) ** 3
    transmat[0, 2] = 0.0
    transmat = transmat / transmat.sum(1, keepdim=True)
    startprob = torch.tensor([0.5, 0.2, 0.3, 0.0], dtype=torch.float64)
    rows = torch.randn(sum(lengths), k, dtype=torch.float64) * 20  # emissions up to e^-100 apart
    results = []
    for size in (max(lengths), chunk):
        layout = padding.make_layout(lengths, torch.device("cpu"), chunk=size)
        result = kernels.forward_backward(startprob, transmat, padding.to_layout(rows, layout), layout)
        results.append((result.log_likelihood, padding.from_layout(result.gamma, layout), result.xi_sum))
    for sequential, chunked in zip(*results, strict=True):
        torch.testing.assert_close(chunked, sequential, rtol=1e-10, atol=1e-12)


def test_sklearn_protocol_and_fit_data(data):
    model = HMM(3, covariance_type="tied", random_state=0, n_iter=3)
    copy = clone(model)
    assert copy.get_params() == model.get_params() and copy is not model
    assert model.set_params(n_iter=4) is model and model.n_iter == 4
    sequences = torch.as_tensor(data[:130]).reshape(10, 13, 2)
    assert model.fit_data(sequences) is model
    reference = HMM(3, covariance_type="tied", random_state=0, n_iter=4).fit(data[:130], [13] * 10)
    np.testing.assert_allclose(model.means_, reference.means_)
    assert model.event_shape == (13, 2) and model.monitor_.iter == 4


def _padded(X, lengths):
    x = torch.zeros(len(lengths), max(lengths), X.shape[1], dtype=torch.float64)
    for i, (start, n) in enumerate(zip(np.cumsum([0] + lengths[:-1]), lengths, strict=True)):
        x[i, :n] = torch.as_tensor(X[start : start + n])
    return x, torch.tensor(lengths)


@pytest.mark.parametrize("emission", ["gaussian", "categorical"])
def test_log_prob_and_log_prob_at_are_the_exact_marginals(data, symbols, emission):
    X = symbols if emission == "categorical" else data
    model = HMM(3, emission=emission, covariance_type="full", n_iter=3, random_state=0).fit(X, LENGTHS)
    x, lengths = _padded(X, LENGTHS)
    per_sequence = [model.score(X[start : start + n]) for start, n in zip(np.cumsum([0] + LENGTHS[:-1]), LENGTHS,
                                                                       strict=True)]
    with torch.no_grad():
        np.testing.assert_allclose(model.log_prob(x, lengths=lengths).numpy(), per_sequence, rtol=1e-12)
    sites = {name: value.unsqueeze(0) for name, value in model.guide_params.points().items()}
    np.testing.assert_allclose(model.log_prob_at(x, sites, lengths=lengths)[0].detach().numpy(), per_sequence,
                               rtol=1e-9)
    twice = {name: value.expand(2, *value.shape[1:]) for name, value in sites.items()}
    assert model.log_prob_at(x, twice, lengths=lengths).shape == (2, len(LENGTHS))
    result = ppl_dgm.log_likelihood(model, {"x": x, "lengths": lengths})
    assert result.kind == "exact"
    np.testing.assert_allclose(result.per_sample.numpy(), per_sequence, rtol=1e-12)


def test_svi_improves_the_likelihood_and_ends_near_em():
    rng = np.random.RandomState(0)
    truth = hmm.GaussianHMM(2, init_params="")
    truth.startprob_, truth.transmat_ = [0.6, 0.4], [[0.9, 0.1], [0.2, 0.8]]
    truth.means_, truth.covars_ = [[-2.0, 0.0], [2.0, 1.0]], [[0.5, 1.0], [1.0, 0.3]]
    x = torch.as_tensor(np.stack([truth.sample(25, random_state=rng)[0] for _ in range(40)]))
    em = HMM(2, n_iter=50, random_state=0).fit_data(x)
    model = HMM(2, random_state=0)
    model.setup(x)
    before = ppl_dgm.log_likelihood(model, x).mean
    ppl_dgm.fit(model, x, engine="svi", epochs=150, batch_size=40, lr=0.05, progress=False, seed=0)
    after = ppl_dgm.log_likelihood(model, x).mean
    assert after > before + 10
    assert after == pytest.approx(float(em.log_prob(x).mean()), abs=0.05)
    order = np.argsort(model.means_[:, 0])
    np.testing.assert_allclose(model.means_[order], em.means_[np.argsort(em.means_[:, 0])], atol=0.05)
    np.testing.assert_allclose(model.transmat_[np.ix_(order, order)],
                               em.transmat_[np.ix_(*[np.argsort(em.means_[:, 0])] * 2)], atol=0.05)


def test_svi_with_lengths_as_context(data):
    x, lengths = _padded(data, LENGTHS)
    model = HMM(2, covariance_type="diag", random_state=0, posterior="normal")
    result = ppl_dgm.fit(model, {"x": x, "lengths": lengths}, engine="svi", epochs=5, batch_size=2, lr=0.05,
                         progress=False, seed=0)
    assert len(result.train_loss) == 5 and all(math.isfinite(v) for v in result.train_loss)
    assert np.isfinite(model.means_).all() and model.uses_guide_point
    assert ppl_dgm.draw(model, 3).shape == (3, max(LENGTHS), 2)


def test_setup_ignores_the_padding(data):
    x, lengths = _padded(data, LENGTHS)
    padded = x.clone()
    for row, length in enumerate(lengths.tolist()):
        padded[row, length:] = 1e6  # garbage past the end of each sequence
    model = HMM(2, covariance_type="diag", random_state=0)
    model.setup(padded, lengths=lengths)
    reference = HMM(2, covariance_type="diag", random_state=0)
    reference.setup(x, lengths=lengths)
    np.testing.assert_allclose(model.means_, reference.means_)
    assert np.abs(model.means_).max() < 100


def test_categorical_story_draws_symbols(symbols):
    x, lengths = _padded(symbols.astype(float), LENGTHS)
    model = HMM(2, emission="categorical", random_state=0)
    model.setup(x)
    assert model.capabilities.data == "discrete" and model.capabilities.sequential
    draws = ppl_dgm.draw(model, 4)
    assert draws.shape == (4, max(LENGTHS), 1)
    model.check_data(draws)
    assert ppl_dgm.log_likelihood(model, {"x": x, "lengths": lengths}).kind == "exact"


def _with(data, row, col, value):
    data = data.copy()
    data[row, col] = value
    return data


def _user_set(startprob, transmat):
    model = HMM(2, init_params="mc", n_iter=1)
    model.startprob_, model.transmat_ = startprob, transmat
    return model


BAD_INPUT = {  # case: (what raises given the data and symbols, message)
    "nan": (lambda X, S: HMM(2).fit(_with(X, 3, 0, np.nan)), "NaN or infinity"),
    "inf": (lambda X, S: HMM(2).fit(_with(X, 5, 1, -np.inf)), "NaN or infinity"),
    "1-D X": (lambda X, S: HMM(2).fit(X[:, 0]), "Expected 2D array"),
    "3-D X": (lambda X, S: HMM(2).fit(X[None]), "Expected 2D array"),
    "features differ from the fit": (lambda X, S: HMM(2, n_iter=1).fit(X).score(np.hstack([X, X])),
                                      "Unexpected number of dimensions"),
    "lengths do not sum to len(X)": (lambda X, S: HMM(2).fit(X, [10, 20]), "doesn't sum to"),
    "negative lengths": (lambda X, S: HMM(2).fit(X, [len(X) + 5, -5]), "positive integers"),
    "non-integer symbols": (lambda X, S: HMM(2, emission="categorical").fit(S + 0.5), "integer symbols"),
    "negative symbols": (lambda X, S: HMM(2, emission="categorical").fit(S - 1), "non-negative"),
    "symbols of two columns": (lambda X, S: HMM(2, emission="categorical").fit(np.hstack([S, S])),
                               r"shape \(n_samples, 1\)"),
    "more symbols than n_features": (lambda X, S: HMM(2, emission="categorical", n_features=3).fit(S),
                                     "only emits symbols up to 2"),
    "unseen symbols when scoring": (lambda X, S: HMM(2, emission="categorical", n_iter=1).fit(S).score(S + 10),
                                    "only emits symbols up to"),
    "startprob_ not summing to one": (lambda X, S: _user_set([0.5, 0.6], [[0.5, 0.5], [0.5, 0.5]]).fit(X),
                                      "startprob_ must sum to 1"),
    "transmat_ rows not summing to one": (lambda X, S: _user_set([0.5, 0.5], [[0.5, 0.4], [0.5, 0.5]]).fit(X),
                                          "transmat_ rows must sum to 1"),
    "more components than samples": (lambda X, S: HMM(5).fit(X[:3]), "n_samples >= n_components"),
    "covariance not positive-definite": (lambda X, S: setattr(HMM(2, covariance_type="full"), "covars_",
                                                              [[[1.0, 2.0], [2.0, 1.0]]] * 2),
                                         "symmetric, positive-definite"),
    "not fitted": (lambda X, S: HMM(2).score(X), "not fitted yet"),
    "unknown decoder": (lambda X, S: HMM(2, n_iter=1).fit(X).decode(X, algorithm="beam"), "Unknown decoder"),
    "unknown emission": (lambda X, S: HMM(2, emission="binomial"), "emission must be one of"),
    "unknown covariance type": (lambda X, S: HMM(2, covariance_type="banded"), "covariance_type"),
    "rows where sequences are needed": (lambda X, S: HMM(2, n_iter=1).fit(X).log_prob(torch.zeros(3, 4)),
                                        r"needs sequences \(N, T, 2\); pass them stacked"),
    "sequences of the wrong width": (lambda X, S: HMM(2, n_iter=1).fit(X).log_prob(torch.zeros(3, 4, 3)),
                                     r"shape \(N, T, 2\), got \(3, 4, 3\); stack the sequences"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_gives_a_clear_error(data, symbols, case):
    action, message = BAD_INPUT[case]
    with pytest.raises(ValueError, match=message):
        action(data, symbols)
