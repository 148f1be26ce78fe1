"""Poisson and Gaussian-mixture HMM emissions against hmmlearn 0.3.3's PoissonHMM and GMMHMM (float64): densities,
one M-step from the same posteriors (priors included), initialization and scalar counts; the story's sites and
sampling shapes."""

import numpy as np
import pyro
import pytest
import torch
from hmmlearn import hmm
from pyro.poutine.util import site_is_subsample

from ppl_dgm.models.classical.hmm.emission_mixture import GaussianMixtureEmission
from ppl_dgm.models.classical.hmm.emission_poisson import PoissonEmission

TYPES = ["full", "tied", "diag", "spherical"]
K, M, D, ROWS = 3, 2, 2, 60


def _spd(rng: np.random.RandomState, *shape: int) -> np.ndarray:
    a = rng.randn(*shape, D, D)
    return a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(D)


def _mixture_state(rng: np.random.RandomState, covariance_type: str) -> dict[str, np.ndarray]:
    covars = {"full": lambda: _spd(rng, K, M), "tied": lambda: _spd(rng, K),
              "diag": lambda: rng.uniform(0.3, 2.0, (K, M, D)), "spherical": lambda: rng.uniform(0.3, 2.0, (K, M))}
    return {"weights": rng.dirichlet(np.ones(M), size=K), "means": 2 * rng.randn(K, M, D),
            "covars": covars[covariance_type]()}


def _mixture_priors(rng: np.random.RandomState, covariance_type: str) -> dict:
    """Informative priors of every parameter, in the shapes hmmlearn documents."""
    covars = {"full": (_spd(rng, K, M), rng.uniform(1.0, 3.0, (K, M))), "tied": (_spd(rng, K), rng.uniform(1, 3, K)),
              "diag": (rng.uniform(0.5, 2, (K, M, D)), rng.uniform(0.5, 2, (K, M, D))),
              "spherical": (rng.uniform(0.5, 2, (K, M)), rng.uniform(0.5, 2, (K, M)))}[covariance_type]
    return {"weights_prior": rng.uniform(1.0, 3.0, (K, M)), "means_prior": rng.randn(K, M, D),
            "means_weight": rng.uniform(0.5, 2.0, (K, M)), "covars_prior": covars[0], "covars_weight": covars[1]}


def _reference_step(ref, X: np.ndarray) -> tuple[np.ndarray, dict]:
    """hmmlearn's posteriors of the rows of ``X`` (one sequence) and the parameters after its M-step."""
    lattice, _, posteriors, fwd, bwd = ref._fit_log(X)
    stats = ref._initialize_sufficient_statistics()
    ref._accumulate_sufficient_statistics(stats, X, lattice, posteriors, fwd, bwd)
    ref._do_mstep(stats)
    return posteriors, stats


def _tensors(state: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: torch.as_tensor(value, dtype=torch.float64, device=device) for name, value in state.items()}


def _gmmhmm(covariance_type: str, state: dict[str, np.ndarray], **priors) -> hmm.GMMHMM:
    ref = hmm.GMMHMM(K, n_mix=M, covariance_type=covariance_type, init_params="", params="stmcw", **priors)
    ref.startprob_, ref.transmat_ = np.full(K, 1 / K), np.full((K, K), 0.1) + 0.7 * np.eye(K)
    ref.weights_, ref.means_, ref.covars_ = (state[name].copy() for name in ("weights", "means", "covars"))
    ref.n_features = D
    ref._check()
    return ref


@pytest.mark.parametrize("covariance_type", TYPES)
@pytest.mark.parametrize("priors", ["default", "informative"])
def test_mixture_matches_gmmhmm(covariance_type, priors, device):
    rng = np.random.RandomState(TYPES.index(covariance_type) + 10 * (priors == "default"))
    X = 2 * rng.randn(ROWS, D) + rng.randint(-3, 4, (ROWS, 1))
    state = _mixture_state(rng, covariance_type)
    prior = _mixture_priors(rng, covariance_type) if priors == "informative" else {}
    emission = GaussianMixtureEmission(M, covariance_type, **prior)
    features = emission.features(torch.as_tensor(X, device=device))
    ref = _gmmhmm(covariance_type, state, **prior)
    density = emission.log_density(features, _tensors(state, device))
    np.testing.assert_allclose(density.cpu().numpy(), ref._compute_log_likelihood(X), rtol=1e-10, atol=1e-10)
    posteriors, _ = _reference_step(ref, X)
    new = emission.m_step(torch.as_tensor(posteriors, device=device), features, _tensors(state, device), "mcw")
    for name in ("weights", "means", "covars"):
        np.testing.assert_allclose(new[name].cpu().numpy(), getattr(ref, name + "_"), rtol=1e-8, atol=1e-10,
                                   err_msg=name)


@pytest.mark.parametrize("updates", ["w", "m", "c", "mc"])
def test_mixture_m_step_updates_only_the_letters_asked(updates):
    rng = np.random.RandomState(3)
    X, state = rng.randn(ROWS, D), _mixture_state(rng, "full")
    ref = _gmmhmm("full", state)
    ref.params = "st" + updates
    posteriors, _ = _reference_step(ref, X)
    emission = GaussianMixtureEmission(M, "full")
    new = emission.m_step(torch.as_tensor(posteriors), emission.features(torch.as_tensor(X)),
                          _tensors(state, torch.device("cpu")), updates)
    assert set(new) == {{"w": "weights", "m": "means", "c": "covars"}[letter] for letter in updates}
    for name, value in new.items():
        np.testing.assert_allclose(value.numpy(), getattr(ref, name + "_"), rtol=1e-8, atol=1e-10)


def test_mixture_density_batched_over_parameter_draws():
    rng = np.random.RandomState(4)
    emission = GaussianMixtureEmission(M, "tied")
    states = [_tensors(_mixture_state(rng, "tied"), torch.device("cpu")) for _ in range(2)]
    x = torch.as_tensor(rng.randn(5, 7, D))
    batched = emission.log_density(emission.features(x), {name: torch.stack([s[name] for s in states])
                                                           for name in states[0]})
    assert batched.shape == (2, 5, 7, K)
    for index, state in enumerate(states):
        torch.testing.assert_close(batched[index], emission.log_density(emission.features(x), state))


@pytest.mark.parametrize("covariance_type", TYPES)
def test_mixture_init_and_scalars_match_gmmhmm(covariance_type):
    rng = np.random.RandomState(5)
    X = np.concatenate([rng.randn(20, D) + shift for shift in (-6, 0, 6)])
    ref = hmm.GMMHMM(K, n_mix=M, covariance_type=covariance_type, random_state=7)
    ref._init(X)
    emission = GaussianMixtureEmission(M, covariance_type)
    init = emission.initial_state(torch.as_tensor(X), K, 7, {"weights", "means", "covars"})
    for name in ("weights", "means", "covars"):
        np.testing.assert_allclose(init[name], getattr(ref, name + "_"), rtol=1e-12, err_msg=name)
    assert emission.n_scalars(K, D) == {code: ref._get_n_fit_scalars_per_param()[code] for code in "mcw"}


def test_poisson_matches_poissonhmm(device):
    rng = np.random.RandomState(6)
    X = rng.poisson(rng.uniform(0.5, 8.0, (1, 4)), size=(ROWS, 4)).astype(float)
    lambdas = rng.uniform(0.3, 9.0, (K, 4))
    ref = hmm.PoissonHMM(K, init_params="", lambdas_prior=rng.uniform(0.5, 2, (K, 4)), lambdas_weight=1.5)
    ref.startprob_, ref.transmat_, ref.lambdas_ = np.full(K, 1 / K), np.full((K, K), 1 / K), lambdas.copy()
    ref._check()
    emission = PoissonEmission(ref.lambdas_prior, ref.lambdas_weight)
    features, state = emission.features(torch.as_tensor(X, device=device)), {"lambdas": torch.as_tensor(lambdas,
                                                                                                      device=device)}
    np.testing.assert_allclose(emission.log_density(features, state).cpu().numpy(), ref._compute_log_likelihood(X),
                               rtol=1e-12)
    posteriors, _ = _reference_step(ref, X)
    new = emission.m_step(torch.as_tensor(posteriors, device=device), features, state, "l")
    np.testing.assert_allclose(new["lambdas"].cpu().numpy(), ref.lambdas_, rtol=1e-10)
    assert emission.m_step(torch.as_tensor(posteriors, device=device), features, state, "st") == {}


def test_poisson_zero_rate_and_init_match_poissonhmm():
    X = np.array([[0.0, 3.0], [0.0, 0.0], [2.0, 1.0]])
    ref = hmm.PoissonHMM(2, random_state=11)
    ref.lambdas_ = np.array([[0.0, 1.5], [2.0, 0.0]])
    emission = PoissonEmission()
    density = emission.log_density(emission.features(torch.as_tensor(X)), {"lambdas": torch.as_tensor(ref.lambdas_)})
    expected = ref._compute_log_likelihood(X)
    finite = np.isfinite(expected)
    np.testing.assert_allclose(density.numpy()[finite], expected[finite], rtol=1e-12)
    assert (density.numpy()[~finite] < -1e300).all()
    rows = np.random.RandomState(1).poisson(3.0, size=(50, 2)).astype(float)
    ref._init(rows)
    init = emission.initial_state(torch.as_tensor(rows), 2, 11, {"lambdas"})
    np.testing.assert_array_equal(init["lambdas"], ref.lambdas_)
    assert emission.n_scalars(2, 2) == {"l": ref._get_n_fit_scalars_per_param()["l"]}


def _trace_sites(emission, k: int, d: int) -> dict[str, torch.Tensor]:
    trace = pyro.poutine.trace(lambda: emission.sample_state(None, k, d)).get_trace()
    return {name: site["value"] for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site)}


@pytest.mark.parametrize("covariance_type", TYPES)
def test_mixture_story_sites_round_trip_and_sample_shapes(covariance_type):
    spread = torch.tensor([1.0, 2.0], dtype=torch.float64)
    emission = GaussianMixtureEmission(M, covariance_type, prior_mean=torch.zeros(D, dtype=torch.float64),
                                       prior_spread=spread)
    sites = _trace_sites(emission, K, D)
    state = emission.state_from_sites(sites)
    assert state["weights"].shape == (K, M) and state["means"].shape == (K, M, D)
    assert state["covars"].shape == {"full": (K, M, D, D), "tied": (K, D, D), "diag": (K, M, D),
                                     "spherical": (K, M)}[covariance_type]
    back = emission.sites_from_state(state)
    assert set(back) == set(sites)
    for name, value in back.items():
        torch.testing.assert_close(value, sites[name], msg=name)
    assert emission.sample(state, torch.Size([4, 3])).shape == (4, 3, K, D)


def test_mixture_sample_draws_from_each_states_mixture():
    state = {"weights": torch.tensor([[0.2, 0.8], [1.0, 0.0]], dtype=torch.float64),
             "means": torch.tensor([[[-5.0], [5.0]], [[1.0], [9.0]]], dtype=torch.float64),
             "covars": torch.full((2, 2), 0.01, dtype=torch.float64)}
    draws = GaussianMixtureEmission(2, "spherical").sample(state, torch.Size([4000]))[..., 0]
    assert abs((draws[:, 0] > 0).double().mean().item() - 0.8) < 0.03
    torch.testing.assert_close(draws[:, 1].mean(), torch.tensor(1.0, dtype=torch.float64), atol=0.01, rtol=0)


def test_poisson_story_sites_round_trip_and_sample():
    emission = PoissonEmission(prior_mean=torch.tensor([0.0, 4.0], dtype=torch.float64))
    sites = _trace_sites(emission, K, 2)
    assert sites["lambdas"].shape == (K, 2) and bool((sites["lambdas"] > 0).all())
    torch.testing.assert_close(emission.sites_from_state(emission.state_from_sites(sites))["lambdas"],
                               sites["lambdas"])
    lambdas = torch.tensor([[0.5, 3.0], [6.0, 0.0]], dtype=torch.float64)
    draws = emission.sample({"lambdas": lambdas}, torch.Size([4000]))
    assert draws.shape == (4000, 2, 2)
    torch.testing.assert_close(draws.mean(0), lambdas, atol=0.15, rtol=0)
    assert bool((emission.sites_from_state({"lambdas": lambdas})["lambdas"] > 0).all())


def test_story_priors_missing_raise():
    with pytest.raises(ValueError, match="fit the model"):
        PoissonEmission().sample_state(None, K, 2)
    with pytest.raises(ValueError, match="fit the model"):
        GaussianMixtureEmission(M, "diag").sample_state(None, K, 2)
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianMixtureEmission(M, "banana")


@pytest.mark.parametrize("covariance_type", TYPES)
def test_mixture_draw_and_checks_follow_gmmhmm(covariance_type):
    rng = np.random.RandomState(8)
    state = _mixture_state(rng, covariance_type)
    ref = _gmmhmm(covariance_type, state)
    emission = GaussianMixtureEmission(M, covariance_type)
    for k in range(K):
        np.testing.assert_array_equal(emission.draw(state, k, np.random.RandomState(k)),
                                      ref._generate_sample_from_state(k, np.random.RandomState(k)))
    tensors = _tensors(state, torch.device("cpu"))
    assert emission.check_state(tensors, K, None) == D
    with pytest.raises(ValueError, match="weights_ rows must sum to 1"):
        emission.check_state({**tensors, "weights": 2 * tensors["weights"]}, K, None)
    with pytest.raises(ValueError, match="means_ must have shape"):
        emission.check_state(tensors, K, D + 1)
    with pytest.raises(ValueError, match="mixture covars must"):
        emission.check_state({**tensors, "covars": -tensors["covars"]}, K, None)


def test_poisson_draw_and_checks_follow_poissonhmm():
    lambdas = np.array([[0.5, 3.0], [6.0, 1.0]])
    ref = hmm.PoissonHMM(2)
    ref.lambdas_ = lambdas
    emission = PoissonEmission()
    for k in range(2):
        np.testing.assert_array_equal(emission.draw({"lambdas": lambdas}, k, np.random.RandomState(k)),
                                      ref._generate_sample_from_state(k, np.random.RandomState(k)))
    assert emission.check_state({"lambdas": torch.as_tensor(lambdas)}, 2, None) == 2
    with pytest.raises(ValueError, match="lambdas_ must have shape"):
        emission.check_state({"lambdas": torch.as_tensor(lambdas)}, 3, None)
    with pytest.raises(ValueError, match="non-negative"):
        emission.check_state({"lambdas": -torch.as_tensor(lambdas)}, 2, None)
    with pytest.raises(ValueError, match="integers"):
        emission.check_values(torch.tensor([[0.5, 1.0]]), 2)
