"""Property-based tests (hypothesis): input checks, flow bijections, the classical estimators on random shapes.

Every example set is derandomized (the same examples on every run, so CI is reproducible) and small.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.distributions.transforms import ComposeTransform

from ppl_dgm.distributions import DiscretizedLogistic
from ppl_dgm.models import GMM, HMM, MAF, NICE, NSF, VAE, RealNVP
from ppl_dgm.validation import check_integer_levels, check_tensor, prepare_data

FAST = settings(max_examples=15, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.int32, torch.uint8]
shapes = st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple)
special = st.sampled_from([0.0, 1.0, -1.0, 16.0, 17.0, 0.5, math.nan, math.inf, -math.inf, 1e30])


def _tensor(shape: tuple[int, ...], dtype: torch.dtype, fill: float, seed: int) -> torch.Tensor:
    values = torch.randint(-2, 20, shape, generator=torch.Generator().manual_seed(seed)).double()
    if values.numel():
        values.view(-1)[0] = fill
    if not dtype.is_floating_point:
        values = torch.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0).clamp(0 if dtype == torch.uint8 else -5, 200)
    return values.to(dtype)


@FAST
@given(shape=shapes, dtype=st.sampled_from(DTYPES), fill=special, seed=st.integers(0, 2**16),
       event=st.none() | shapes, levels=st.integers(1, 20))
def test_checks_accept_or_raise_value_or_type_error(shape, dtype, fill, seed, event, levels):
    x = _tensor(shape, dtype, fill, seed)
    try:
        checked = check_tensor(x, event_shape=event)
    except (ValueError, TypeError):
        return
    assert checked is x and x.dim() >= 1 and x.shape[0] > 0
    if event is not None:
        assert tuple(x.shape[1:]) == event
    if x.is_floating_point():
        assert bool(torch.isfinite(x).all())
    try:
        check_integer_levels(x, levels)
    except (ValueError, TypeError):
        return
    assert float(x.min()) >= 0 and float(x.max()) <= levels - 1


@pytest.mark.parametrize("dtype", [torch.complex64, torch.bool])
def test_complex_and_bool_tensors_get_a_clear_error(dtype):  # they once reached torch.round's NotImplementedError
    with pytest.raises(TypeError, match="must hold real numbers"):
        check_integer_levels(check_tensor(torch.ones(3, 2, dtype=dtype)), 5)


@FAST
@given(shape=shapes, dtype=st.sampled_from(DTYPES), fill=special, seed=st.integers(0, 2**16),
       mapping=st.booleans())
def test_prepare_data_accepts_or_raises_value_or_type_error(shape, dtype, fill, seed, mapping):
    model = VAE(input_dim=4, hidden_dims=(4,), latent_dim=2)
    x = _tensor(shape, dtype, fill, seed)
    try:
        batch = prepare_data({"x": x} if mapping else x, model, "train", torch.device("cpu"), torch.float32)
    except (ValueError, TypeError):
        return
    assert batch["x"].shape == x.shape and batch["x"].shape[1:] == (4,) and batch["x"].dtype == torch.float32


def _random_flow(cls: type, dim: int, layers: int, seed: int) -> ComposeTransform:
    torch.manual_seed(seed)
    model = cls(input_dim=dim, num_layers=layers, hidden_dims=(8,), dropout=0.0).double().eval()
    with torch.no_grad():  # away from the identity the networks start near
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return ComposeTransform(model.transforms())


@FAST
@given(cls=st.sampled_from([NICE, RealNVP, MAF, NSF]), dim=st.integers(2, 5), layers=st.integers(1, 2),
       rows=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_flows_invert_and_their_log_det_is_the_jacobians(cls, dim, layers, rows, seed):
    flow = _random_flow(cls, dim, layers, seed)
    z = torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with torch.no_grad():
        x = flow(z)
        assert torch.allclose(flow.inv(x), z, atol=1e-6, rtol=1e-6)
        log_det = flow.log_abs_det_jacobian(z, x)
    assert log_det.shape == (rows,)
    for row in range(rows):
        jacobian = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0], z[row])
        assert log_det[row].item() == pytest.approx(torch.linalg.slogdet(jacobian)[1].item(), abs=1e-6, rel=1e-6)


@FAST
@given(levels=st.integers(2, 20), loc=st.floats(-5, 25), log_scale=st.floats(-3, 3))
def test_discretized_masses_sum_to_one(levels, loc, log_scale):
    d = DiscretizedLogistic(torch.tensor(loc, dtype=torch.float64), torch.tensor(math.exp(log_scale),
                                                                              dtype=torch.float64), levels)
    masses = d.log_prob(torch.arange(levels, dtype=torch.float64)).exp()
    assert bool(torch.isfinite(masses).all()) and float(masses.sum()) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # max_iter=5 on purpose
@FAST
@given(rows=st.integers(4, 40), dim=st.integers(1, 4), k=st.integers(1, 3),
       cov=st.sampled_from(["full", "diag", "spherical", "tied"]), seed=st.integers(0, 2**16))
def test_the_gmm_on_random_shapes(rows, dim, k, cov, seed):
    X = np.random.default_rng(seed).normal(size=(rows, dim)) * 3
    gmm = GMM(n_components=min(k, rows), covariance_type=cov, max_iter=5, random_state=seed).fit(X)
    scores, labels = gmm.score_samples(X), gmm.predict(X)
    assert scores.shape == (rows,) and np.isfinite(scores).all()
    assert labels.shape == (rows,) and set(labels) <= set(range(gmm.n_components))


@FAST
@given(lengths=st.lists(st.integers(2, 15), min_size=1, max_size=3), dim=st.integers(1, 3), k=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_the_hmm_on_random_shapes(lengths, dim, k, seed):
    X = np.random.default_rng(seed).normal(size=(sum(lengths), dim))
    hmm = HMM(n_components=k, n_iter=3, random_state=seed).fit(X, lengths)
    logprob, posteriors = hmm.score_samples(X, lengths)
    states = hmm.predict(X, lengths)
    assert np.isfinite(logprob) and posteriors.shape == (len(X), k) and np.allclose(posteriors.sum(1), 1)
    assert states.shape == (len(X),) and set(states) <= set(range(k))


def test_an_hmm_on_one_sequence_of_100000_steps_stays_finite():  # ~3 s on one core
    X = np.random.default_rng(0).normal(size=(100_000, 1))
    X[50_000:] += 3
    hmm = HMM(n_components=2, n_iter=2, random_state=0).fit(X)
    logprob, states = hmm.decode(X)
    assert np.isfinite(hmm.score(X)) and np.isfinite(logprob)
    assert states.shape == (100_000,)
    first = np.bincount(states[:50_000], minlength=2).argmax()  # the two halves decode to two states
    assert (states[:50_000] == first).mean() > 0.95 and (states[50_000:] != first).mean() > 0.95


@pytest.mark.parametrize("estimator", ["gmm", "hmm"])
def test_an_outlier_of_ten_thousand_keeps_everything_finite(estimator):
    X = np.random.default_rng(1).normal(size=(200, 2))
    X[7, 0] = 1e4
    model = (GMM(n_components=2, random_state=0) if estimator == "gmm"
             else HMM(n_components=2, n_iter=5, random_state=0)).fit(X)
    assert np.isfinite(model.score(X))
    assert np.isfinite(model.score_samples(X)[0 if estimator == "hmm" else slice(None)]).all()
    assert model.predict(X).shape == (200,)
