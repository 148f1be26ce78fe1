"""Model comparison table: NLLs, paired differences and their standard errors against hand-computed values."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from scipy import stats
from torch import nn

from ppl_dgm import Capabilities, GenerativeModel, X, data_plate
from ppl_dgm.diagnostics import compare

from helpers import DiagonalGaussian, Implicit, LinearGaussian


def gaussian(loc: list[float], scale: list[float]) -> DiagonalGaussian:
    model = DiagonalGaussian(2)
    with torch.no_grad():
        model.loc.copy_(torch.tensor(loc))
        model.raw_scale.copy_(torch.log(torch.expm1(torch.tensor(scale))))
    return model


def by_hand(x: np.ndarray, loc: list[float], scale: list[float]) -> np.ndarray:
    """``log N(x_n | loc, diag scale^2)`` per example, nats."""
    return stats.norm.logpdf(x, loc, scale).sum(-1)


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.as_tensor(np.random.default_rng(0).normal([0.5, -1.0], [1.0, 2.0], size=(300, 2)))


def test_differences_and_paired_standard_errors(x):
    params = {"right": ([0.5, -1.0], [1.0, 2.0]), "shifted": ([1.0, -1.0], [1.0, 2.0]),
              "wide": ([0.5, -1.0], [3.0, 3.0])}
    table = compare({name: gaussian(*p) for name, p in params.items()}, x)
    log_p = {name: by_hand(x.numpy(), *p) for name, p in params.items()}
    expected_order = sorted(log_p, key=lambda name: -log_p[name].mean())
    assert [row["name"] for row in table.rows] == expected_order == ["right", "shifted", "wide"]
    best = log_p["right"]
    for row in table.rows:
        ll = log_p[row["name"]]
        difference = best - ll
        assert row["kind"] == "exact" and row["num_examples"] == 300
        assert row["nll"] == pytest.approx(-ll.mean(), rel=1e-6)
        assert row["nll_stderr"] == pytest.approx(ll.std(ddof=1) / math.sqrt(300), rel=1e-5)
        assert row["delta_nll"] == pytest.approx(difference.mean(), abs=1e-5)
        assert row["delta_stderr"] == pytest.approx(difference.std(ddof=1) / math.sqrt(300), rel=1e-4, abs=1e-7)
    assert table.rows[0]["delta_nll"] == 0 and table.rows[0]["delta_stderr"] == 0
    # shifting the first mean by 0.5 (unit scale) costs 0.5^2 / 2 nats per example in expectation;
    # pairing removes the spread the two models share
    shifted = table.rows[1]
    assert abs(shifted["delta_nll"] - 0.125) < 3 * shifted["delta_stderr"]
    assert shifted["delta_stderr"] < 0.5 * shifted["nll_stderr"]


def test_markdown(x):
    table = compare({"a": gaussian([0.5, -1.0], [1.0, 2.0]), "b": gaussian([0.0, 0.0], [1.0, 1.0])}, x)
    lines = table.to_markdown().splitlines()
    assert lines[0].startswith("| model | NLL (nats/example)")
    assert lines[2].startswith("| a | ") and lines[3].startswith("| b | ")
    assert len(lines) == 4  # one kind: no note
    assert str(table) == table.to_markdown()


class Binomial16(GenerativeModel):
    """``x_d ~ Binomial(16, p_d)``: an exact discrete likelihood on integers 0..16."""

    capabilities = Capabilities(likelihood="exact", data="discrete")
    event_shape = (2,)

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(2))

    def model(self, x=None, n=None):
        with data_plate(x, n):
            return pyro.sample(X, dist.Binomial(16, logits=self.logits).to_event(1), obs=x)


def test_mixed_kinds_are_shown():
    counts = torch.as_tensor(np.random.default_rng(1).binomial(16, 0.5, size=(50, 2)), dtype=torch.float32)
    table = compare({"binomial": Binomial16(), "gaussian": gaussian([8.5, 8.5], [2.0, 2.0]),
                     "latent": LinearGaussian(dim=2, latent_dim=1)}, counts, num_samples=50)
    kinds = {row["name"]: row["kind"] for row in table.rows}
    # the densities are scored on x + u (a bound on the discrete NLL); the binomial exactly
    assert kinds == {"binomial": "exact", "gaussian": "bound", "latent": "bound"}
    binomial = next(row for row in table.rows if row["name"] == "binomial")
    assert binomial["nll"] == pytest.approx(-stats.binom.logpmf(counts.numpy(), 16, 0.5).sum(-1).mean(), rel=1e-5)
    markdown = table.to_markdown()
    assert "Kinds differ" in markdown and "bound: dequantized density" in markdown and "exact:" in markdown


def test_estimate_kind(x):
    table = compare({"latent": LinearGaussian(dim=2, latent_dim=1), "gaussian": gaussian([0.5, -1.0], [1.0, 2.0])},
                    x.float(), num_samples=50)
    assert {row["kind"] for row in table.rows} == {"estimate", "exact"}


def test_refusals(x):
    with pytest.raises(ValueError, match="model 'gan' \\(Implicit\\) defines no normalized likelihood"):
        compare({"ok": gaussian([0.0, 0.0], [1.0, 1.0]), "gan": Implicit()}, x)
    with pytest.raises(ValueError, match="non-empty mapping"):
        compare({}, x)
    with pytest.raises(TypeError, match="'f' is a function"):
        compare({"f": lambda x: x}, x)
    with pytest.raises(ValueError, match="model 'three': .*shape"):
        compare({"three": DiagonalGaussian(3)}, x)


class GlobalMean(GenerativeModel):
    """``mu ~ N(0, I_2)``, ``x_n ~ N(mu, I_2)``; guide ``N(loc, scale^2 I)`` over the global ``mu``."""

    event_shape = (2,)

    def __init__(self, loc: list[float], scale: float) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.tensor(loc))
        self.scale = scale

    def model(self, x=None, n=None):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with data_plate(x, n):
            return pyro.sample(X, dist.Normal(mu, 1.0).to_event(1), obs=x)

    def guide(self, x=None, n=None):
        pyro.sample("mu", dist.Normal(self.loc, self.scale).to_event(1))


def test_predictive_kind_beside_an_exact_score(x):
    x = x.float()
    table = compare({"bayes": GlobalMean([0.5, -1.0], 0.1), "plug-in": gaussian([0.5, -1.0], [1.0, 1.0])}, x,
                    num_samples=2000)
    rows = {row["name"]: row for row in table.rows}
    assert rows["bayes"]["kind"] == "predictive" and rows["plug-in"]["kind"] == "exact"
    # the posterior predictive of the guide is N(loc, (1 + 0.1^2) I)
    predictive = by_hand(x.numpy(), [0.5, -1.0], [math.sqrt(1.01)] * 2)
    assert rows["bayes"]["nll"] == pytest.approx(-predictive.mean(), abs=0.02)
    assert "predictive: log posterior predictive density" in table.to_markdown()
