"""Posterior predictive replicas: the batched path (a plate over the draws) and one run per draw."""

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppl_dgm import GenerativeModel, X, data_plate
from ppl_dgm.diagnostics import predictive
from ppl_dgm.diagnostics.predictive import posterior_predictive

Z_LIMIT = 4.5  # per-draw |z| bound: with at most 100 draws a correct path exceeds it with probability < 1e-3


class PoissonGamma(GenerativeModel):
    def model(self, x=None, n=None):
        rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))
        with data_plate(x, n):
            return pyro.sample(X, dist.Poisson(rate), obs=x)


class Regression(GenerativeModel):
    """``x_n ~ N(features_n . weights, sigma)``, the mean written to broadcast over leading dims."""

    def model(self, x=None, n=None, features=None):
        weights = pyro.sample("weights", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
        with data_plate(x, n):
            return pyro.sample(X, dist.Normal((features * weights).sum(-1), sigma), obs=x)


class MatmulRegression(Regression):
    """The same regression as users often write it: ``features @ weights`` (does not broadcast)."""

    def model(self, x=None, n=None, features=None):
        weights = pyro.sample("weights", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
        with data_plate(x, n):
            return pyro.sample(X, dist.Normal(features @ weights, sigma), obs=x)


class Gaussian2d(GenerativeModel):
    """``loc ~ N(0, 3^2 I_2)``, ``scale ~ HalfNormal(1)`` per coordinate, ``x_n ~ N(loc, diag(scale^2))``."""

    event_shape = (2,)

    def model(self, x=None, n=None):
        loc = pyro.sample("loc", dist.Normal(torch.zeros(2), 3.0).to_event(1))
        scale = pyro.sample("scale", dist.HalfNormal(torch.ones(2)).to_event(1))
        with data_plate(x, n):
            return pyro.sample(X, dist.Normal(loc, scale).to_event(1), obs=x)


class LoopMixture(GenerativeModel):
    """Two components; each example's mean picked with a Python loop over ints (no broadcasting)."""

    def model(self, x=None, n=None):
        locs = pyro.sample("locs", dist.Normal(torch.zeros(2), 10.0).to_event(1))
        with data_plate(x, n):
            assignment = pyro.sample("assignment", dist.Categorical(torch.ones(2) / 2))
            loc = torch.stack([locs[int(k)] for k in assignment])
            return pyro.sample(X, dist.Normal(loc, 0.5), obs=x)


class ItemRate(GenerativeModel):
    """A Poisson story that reads its rate with ``.item()``."""

    def model(self, x=None, n=None):
        rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))
        with data_plate(x, n):
            return pyro.sample(X, dist.Poisson(rate.item()), obs=x)


def rates(chains: int, draws: int) -> dict[str, torch.Tensor]:
    return {"rate": torch.empty(chains, draws).uniform_(0.5, 5.0)}


def regression_draws(chains: int, draws: int) -> dict[str, torch.Tensor]:
    return {"weights": 2 * torch.randn(chains, draws, 3), "sigma": torch.empty(chains, draws).uniform_(0.5, 1.5)}


def batched(model, batch, draws) -> torch.Tensor:
    """The batched path, failing the test if it fell back to one run per draw."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        return posterior_predictive(model, batch, draws, vectorize=True)


def assert_means_match(replicas: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor) -> None:
    """Each draw's replica mean over rows against the expected one: ``replicas (C, S, N, ...)``, ``mean`` and
    ``variance`` of each value, broadcastable to the replicas."""
    n = replicas.shape[2]
    mean, variance = mean.expand_as(replicas).double(), variance.expand_as(replicas).double()
    z = (replicas.double().mean(2) - mean.mean(2)) / (variance.mean(2) / n).sqrt()
    assert z.abs().max() < Z_LIMIT, f"max |z| = {z.abs().max():.1f}"


def test_batched_poisson_replicas_match_each_draw():
    n = 2000
    draws = rates(2, 25)
    replicas = batched(PoissonGamma(), {"x": torch.zeros(n)}, draws)
    assert replicas.shape == (2, 25, n)
    rate = draws["rate"][..., None]
    assert_means_match(replicas, rate, rate)


def test_batched_event_shaped_replicas_match_each_draw():
    n = 2000
    draws = {"loc": 3 * torch.randn(2, 20, 2), "scale": torch.empty(2, 20, 2).uniform_(0.5, 2.0)}
    replicas = batched(Gaussian2d(), {"x": torch.zeros(n, 2)}, draws)
    assert replicas.shape == (2, 20, n, 2)
    assert_means_match(replicas, draws["loc"][:, :, None], draws["scale"][:, :, None] ** 2)
    # each coordinate's spread is its own draw's scale
    ratio = replicas.std(2) / draws["scale"]
    assert ((ratio - 1).abs() < 0.1).all()


def test_batched_regression_honours_the_features():
    n = 1000
    features = torch.randn(n, 3) + torch.tensor([1.0, -2.0, 0.5])
    draws = regression_draws(2, 20)
    replicas = batched(Regression(), {"x": torch.zeros(n), "features": features}, draws)
    assert replicas.shape == (2, 20, n)
    # every row at its own mean features_n . weights_s, with spread sigma_s
    row_mean = draws["weights"] @ features.T
    variance = draws["sigma"][..., None] ** 2
    assert_means_match(replicas, row_mean, variance)
    residual_sd = (replicas - row_mean).std(2) / draws["sigma"]
    assert ((residual_sd - 1).abs() < 0.1).all()
    # other features, other replicas
    other = batched(Regression(), {"x": torch.zeros(n), "features": -features}, draws)
    assert_means_match(other, -row_mean, variance)


def test_chunks_of_draws_keep_their_order(monkeypatch):
    monkeypatch.setattr(predictive, "DRAWS_PER_PASS", 7)  # 2 x 20 draws: 5 full chunks and one of 5
    n = 2000
    draws = rates(2, 20)
    replicas = batched(PoissonGamma(), {"x": torch.zeros(n)}, draws)
    assert replicas.shape == (2, 20, n)
    assert_means_match(replicas, draws["rate"][..., None], draws["rate"][..., None])


@pytest.mark.parametrize("story", [LoopMixture, ItemRate, MatmulRegression])
def test_a_story_that_does_not_broadcast_falls_back_with_a_warning(story, monkeypatch):
    monkeypatch.setattr(predictive, "DRAWS_PER_PASS", 5)  # 2 x 6 draws: three chunks
    n = 300
    if story is LoopMixture:
        draws = {"locs": torch.tensor([-10.0, 10.0]) * torch.rand(2, 6, 2).add(0.5)}
        batch = {"x": torch.zeros(n)}
    elif story is ItemRate:
        draws = rates(2, 6)
        batch = {"x": torch.zeros(n)}
    else:
        draws = regression_draws(2, 6)
        batch = {"x": torch.zeros(n), "features": torch.randn(n, 3)}
    with pytest.warns(UserWarning, match=f"^{story.__name__} does not broadcast") as record:
        replicas = posterior_predictive(story(), batch, draws)
    assert sum(story.__name__ in str(w.message) for w in record) == 1  # once, not once per chunk
    assert replicas.shape == (2, 6, n)
    if story is LoopMixture:  # every replica sits at one of its own draw's two components, half at each
        gaps = (replicas[..., None] - draws["locs"][:, :, None, :]).abs()
        assert gaps.min(-1).values.max() < 3.0
        assert ((gaps[..., 0] < gaps[..., 1]).double().mean(2) - 0.5).abs().max() < 0.15
    elif story is ItemRate:
        assert_means_match(replicas, draws["rate"][..., None], draws["rate"][..., None])
    else:
        assert_means_match(replicas, draws["weights"] @ batch["features"].T, draws["sigma"][..., None] ** 2)


@pytest.mark.parametrize("story", [PoissonGamma, Regression])
def test_batched_and_looped_agree_in_distribution(story):
    n, chains, per_chain = 500, 2, 50
    if story is PoissonGamma:
        draws, batch = rates(chains, per_chain), {"x": torch.zeros(n)}
        variance = draws["rate"]
    else:
        draws = regression_draws(chains, per_chain)
        batch = {"x": torch.zeros(n), "features": torch.randn(n, 3)}
        variance = draws["sigma"] ** 2
    looped = posterior_predictive(story(), batch, draws, vectorize=False).double()
    vectorized = batched(story(), batch, draws).double()
    assert looped.shape == vectorized.shape == (chains, per_chain, n)
    # per draw, the two replicas' means differ as two independent means of n values do
    gap = (vectorized.mean(2) - looped.mean(2)) / (2 * variance / n).sqrt()
    assert gap.abs().max() < Z_LIMIT
    assert abs(gap.mean()) < 4 / gap.numel() ** 0.5  # no shift shared by the draws
    # the same spread of the rows about each draw's replica mean
    spread = ((vectorized - vectorized.mean(2, keepdim=True)) ** 2).sum() / (
        (looped - looped.mean(2, keepdim=True)) ** 2).sum()
    assert abs(spread - 1) < 0.05


def test_draws_far_from_each_other_are_not_mixed():
    """A wiring check that does not rely on statistics: draws with disjoint supports."""
    draws = {"loc": torch.arange(12.0).reshape(2, 3, 2) * 100, "scale": torch.full((2, 3, 2), 1e-3)}
    replicas = batched(Gaussian2d(), {"x": torch.zeros(50, 2)}, draws)
    torch.testing.assert_close(replicas, draws["loc"][:, :, None].expand(2, 3, 50, 2), atol=0.01, rtol=0)


# --- stories the batched path gets wrong without a warning (bugs in the batched path; see the report) ---


class CenteredEffects(GenerativeModel):
    """Sum-to-zero effects, centred with ``effects.mean()``: a reduction over all dims, draws included."""

    event_shape = (3,)

    def model(self, x=None, n=None):
        effects = pyro.sample("effects", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        centred = effects - effects.mean()
        with data_plate(x, n):
            return pyro.sample(X, dist.Normal(centred, 0.1).to_event(1), obs=x)


class SoftmaxDim0(GenerativeModel):
    """Category probabilities from ``torch.softmax(logits, 0)`` (dim 0 of a vector, written as for one draw)."""

    def model(self, x=None, n=None):
        logits = pyro.sample("logits", dist.Normal(torch.zeros(3), 2.0).to_event(1))
        with data_plate(x, n):
            return pyro.sample(X, dist.Categorical(torch.softmax(logits, 0)), obs=x)


def reduction_case(story) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Draws and each value's expected mean and variance for `CenteredEffects` / `SoftmaxDim0`."""
    if story is CenteredEffects:
        draws = {"effects": torch.randn(2, 10, 3)}
        mean = (draws["effects"] - draws["effects"].mean(-1, keepdim=True))[:, :, None]
        variance = torch.tensor(0.01)
    else:
        draws = {"logits": 2 * torch.randn(2, 10, 3)}
        draws["logits"][0, 0] = torch.tensor([8.0, 0.0, 0.0])  # a draw that outweighs the others at category 0
        probs = torch.softmax(draws["logits"], -1)
        mean = (probs * torch.arange(3.0)).sum(-1)[..., None]
        variance = (probs * torch.arange(3.0) ** 2).sum(-1)[..., None] - mean**2
    return draws, mean, variance


@pytest.mark.parametrize("story", [CenteredEffects, SoftmaxDim0])
def test_reduction_stories_are_right_one_draw_at_a_time(story):
    draws, mean, variance = reduction_case(story)
    looped = posterior_predictive(story(), {"x": torch.zeros(1000, *story.event_shape)}, draws, vectorize=False)
    assert_means_match(looped, mean, variance)


@pytest.mark.parametrize("story", [CenteredEffects, SoftmaxDim0])
def test_reductions_over_a_global_site_are_per_draw(story):
    draws, mean, variance = reduction_case(story)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # falling back to one run per draw would be a correct fix
        replicas = posterior_predictive(story(), {"x": torch.zeros(1000, *story.event_shape)}, draws)
    assert_means_match(replicas, mean, variance)
