"""Simulation-based calibration: an exact posterior passes, an overconfident one fails; engines; bad input."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ppl_dgm import Capabilities, GenerativeModel, X, data_plate
from ppl_dgm.diagnostics import nuts_engine, sbc, svi_engine
from ppl_dgm.diagnostics.sbc import _rank

from helpers import LinearGaussian

PRIOR_SCALE, NOISE = 1.0, 1.0


class NormalMean(GenerativeModel):
    """``mu ~ N(0, PRIOR_SCALE^2 I_2)``, ``x_n ~ N(mu, NOISE^2 I_2)``; guide: a mean-field Normal over ``mu``."""

    capabilities = Capabilities(likelihood="bound")
    event_shape = (2,)

    def __init__(self) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(2))
        self.raw_scale = nn.Parameter(torch.full((2,), -1.0))

    def model(self, x=None, n=None):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(2), PRIOR_SCALE).to_event(1))
        with data_plate(x, n):
            return pyro.sample(X, dist.Normal(mu, NOISE).to_event(1), obs=x)

    def guide(self, x=None, n=None):
        pyro.sample("mu", dist.Normal(self.loc, F.softplus(self.raw_scale)).to_event(1))


def conjugate_engine(shrink: float = 1.0):
    """Draws from the closed-form posterior ``N(sum x / (1 + N), 1 / (1 + N))``, its scale divided by ``shrink``."""

    def infer(model, data, num_draws):
        x = data[X]
        precision = 1 / PRIOR_SCALE**2 + x.shape[0] / NOISE**2
        mean = x.sum(0) / NOISE**2 / precision
        return {"mu": mean + torch.randn(num_draws, 2) / math.sqrt(precision) / shrink}

    return infer


def run(engine, **kwargs):
    options = {"num_simulations": 100, "num_examples": 5, "num_posterior_draws": 19, "progress": False, **kwargs}
    return sbc(NormalMean, engine, **options)


def test_exact_posterior_is_calibrated(tmp_path):
    result = run(conjugate_engine(), plot=tmp_path / "ranks.png")
    assert result.ranks["mu"].shape == (100, 2)
    assert result.ranks["mu"].min() >= 0 and result.ranks["mu"].max() <= 19
    assert result.num_bins == 10  # L / 10
    assert set(result.p_values()) == {"mu[0]", "mu[1]"}
    assert result.calibrated and result.min_p_value > 0.01
    summary = json.loads(json.dumps(result.summary()))
    assert summary["calibrated"] and summary["bonferroni_level"] == pytest.approx(0.005)
    assert (tmp_path / "ranks.png").stat().st_size > 0


def test_overconfident_posterior_fails_with_a_u_shape():
    result = run(conjugate_engine(shrink=5.0))
    assert not result.calibrated and result.min_p_value < 1e-10
    for counts in result.histograms().values():
        assert counts[0] + counts[-1] > 0.5 * result.num_simulations  # 20% expected under uniformity


def test_seeded_and_bins_of_unequal_width():
    first, second = (run(conjugate_engine(), num_posterior_draws=10, num_bins=4) for _ in range(2))
    np.testing.assert_array_equal(first.ranks["mu"], second.ranks["mu"])
    # ranks 0..10 in 4 bins of floor(4 r / 11): {0,1,2}, {3,4,5}, {6,7,8}, {9,10}
    np.testing.assert_allclose(first.bin_probabilities(), np.array([3, 3, 3, 2]) / 11)
    assert sum(first.histograms()["mu[0]"]) == 100


def test_ties_are_broken_uniformly():
    rng = np.random.default_rng(0)
    ranks = np.array([_rank(torch.zeros(9, 3), torch.zeros(3), rng) for _ in range(2000)])
    assert ranks.min() == 0 and ranks.max() == 9
    assert abs(ranks.mean() - 4.5) < 0.2  # uniform on 0..9, not always 0 or 9
    assert _rank(torch.tensor([[0.0], [1.0], [2.0]]), torch.tensor([1.5]), rng).tolist() == [2]


def test_svi_engine_fits_the_guide():
    model = NormalMean()
    x = torch.randn(20, 2) + torch.tensor([1.0, -1.0])
    draws = svi_engine(epochs=400, lr=0.02, batch_size=20)(model, {X: x}, 200)  # the final iterate settles
    assert set(draws) == {"mu"} and draws["mu"].shape == (200, 2)
    # the mean-field family holds this posterior: N(sum x / 21, 1 / 21)
    torch.testing.assert_close(draws["mu"].mean(0), x.sum(0) / 21, atol=0.15, rtol=0)
    assert float(draws["mu"].std(0).min()) > 0.1 and float(draws["mu"].std(0).max()) < 0.4


def test_nuts_engine_pools_and_thins():
    engine = nuts_engine(num_samples=15, warmup_steps=15, num_chains=2)
    draws = engine(NormalMean(), {X: torch.randn(5, 2)}, 20)
    assert draws["mu"].shape == (20, 2) and torch.isfinite(draws["mu"]).all()
    with pytest.raises(ValueError, match="fewer than num_posterior_draws=31"):
        engine(NormalMean(), {X: torch.randn(5, 2)}, 31)


def test_engines_in_sbc():
    result = run(svi_engine(epochs=20, lr=0.05, batch_size=5), num_simulations=3, num_posterior_draws=9)
    assert result.ranks["mu"].shape == (3, 2)


@pytest.mark.parametrize(("engine", "match"), [
    (lambda model, data, s: {"mu": torch.zeros(s, 2), "sigma": torch.zeros(s)}, "sites the model lacks.*sigma"),
    (lambda model, data, s: {}, "left out global latents.*mu"),
    (lambda model, data, s: {"mu": torch.zeros(s, 3)}, r"shape \(9, 3\), expected \(9, 2\)"),
    (lambda model, data, s: {"mu": torch.full((s, 2), math.nan)}, "non-finite"),
])
def test_bad_engines(engine, match):
    with pytest.raises(ValueError, match=match):
        run(engine, num_simulations=2, num_posterior_draws=9)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_posterior_draws must be a positive integer"):
        run(conjugate_engine(), num_posterior_draws=0)
    with pytest.raises(ValueError, match=r"num_bins must lie in 2..num_posterior_draws \+ 1 = 20, got 21"):
        run(conjugate_engine(), num_bins=21)
    with pytest.raises(ValueError, match="alpha"):
        run(conjugate_engine(), alpha=1.5)
    with pytest.raises(ValueError, match=r"context\['c'\] must be a tensor with num_examples=5 rows"):
        run(conjugate_engine(), context={"c": torch.zeros(4, 2)})
    with pytest.raises(ValueError, match="no global latent sites"):
        sbc(LinearGaussian, conjugate_engine(), num_simulations=2, num_examples=3, num_posterior_draws=5,
            progress=False)
    with pytest.raises(TypeError, match="must return a GenerativeModel"):
        sbc(lambda: None, conjugate_engine(), num_simulations=2, num_examples=3, num_posterior_draws=5,
            progress=False)


@pytest.mark.slow
def test_mean_field_is_overconfident_and_nuts_is_not(tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
    from sbc_mean_field import main

    results = main(["--out", str(tmp_path), "--no-progress"])
    assert not results["svi"].calibrated and results["svi"].min_p_value < 1e-6
    assert results["nuts"].calibrated
    for counts in results["svi"].histograms().values():  # U shape: the ends hold far more than 2/10
        assert counts[0] + counts[-1] > 0.4 * results["svi"].num_simulations
    assert {p.name for p in tmp_path.iterdir()} == {"svi.png", "svi.json", "nuts.png", "nuts.json"}
