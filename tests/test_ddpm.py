"""DDPM: schedules, the forward chain, the bound (hook, traces and an independent closed form), sampling, the engine."""

from __future__ import annotations

import numpy as np
import pyro
import pytest
import torch
from scipy.special import expit, log_ndtr
from scipy.stats import norm
from torch import nn

import ppl_dgm
from ppl_dgm.infer.denoising import DenoisingEngine
from ppl_dgm.models.diffusion.ddpm import DDPM, latent_site
from ppl_dgm.models.diffusion.decoder import DiscretizedGaussian
from ppl_dgm.models.diffusion.sampling import respaced_steps, sample_images
from ppl_dgm.models.diffusion.schedules import Chain, noise_schedule
from ppl_dgm.traces import log_importance_weights

from helpers import DiagonalGaussian

TINY = dict(input_dim=4, num_levels=5, timesteps=3, width=16, num_blocks=1, schedule="linear", parameterization="eps",
            variance="fixed", loss="simple", dropout=0.0)


def tiny(**options) -> DDPM:
    return DDPM(**{**TINY, **options})


def data(n: int = 3, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n`` examples of the tiny model's shape: 4 pixels with levels 0..4."""
    return torch.randint(5, (n, 4), generator=torch.Generator().manual_seed(1)).to(dtype)


class LinearNoise(nn.Module):
    """A stand-in network ``eps_hat = c_t x_t`` (and a constant variance output ``v_t``): every term of
    the bound is then a 1-D Gaussian expectation that the test computes on its own."""

    def __init__(self, c: list[float], v: list[float] | None) -> None:
        super().__init__()
        self.c = nn.Parameter(torch.tensor(c, dtype=torch.float64))
        self.v = None if v is None else nn.Parameter(torch.tensor(v, dtype=torch.float64))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = [self.c[t][:, None] * x]
        if self.v is not None:
            out.append(self.v[t][:, None].expand_as(x))
        return torch.cat(out, dim=-1)


def log_mass(upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """``log(Phi(upper) - Phi(lower))`` computed on the side of zero where the CDFs are small."""
    flip = lower > 0
    hi, lo = np.where(flip, -lower, upper), np.where(flip, -upper, lower)
    return log_ndtr(hi) + np.log1p(-np.exp(log_ndtr(lo) - log_ndtr(hi)))


def closed_form_bound(x: np.ndarray, kind: str, levels: int, c: np.ndarray, v: np.ndarray | None) -> np.ndarray:
    """The diffusion bound of `LinearNoise` in float64 from the Gaussian formulas (Ho et al., 2020, eq. 5),
    each expectation over ``x_t ~ q(x_t | x_0)`` a per-pixel integral on a fine grid; shape ``(N,)``."""
    betas = noise_schedule(kind, len(c)).numpy()
    ab = np.cumprod(1 - betas)
    abp = np.concatenate([[1.0], ab[:-1]])
    post_var = betas * (1 - abp) / (1 - ab)
    post_log_var = np.log(np.concatenate([post_var[1:2], post_var[1:]]))
    x0 = x * 2 / (levels - 1) - 1
    z = np.linspace(-12, 12, 48001)
    w = norm.pdf(z) * (z[1] - z[0])
    m, s = np.sqrt(ab[-1]) * x0, np.sqrt(1 - ab[-1])
    total = (0.5 * (m**2 + s**2 - 1 - np.log(s**2))).sum(-1)
    for i in range(len(c)):
        xt = np.sqrt(ab[i]) * x0[..., None] + np.sqrt(1 - ab[i]) * z  # (N, D, grid)
        x0_hat = np.clip((xt - np.sqrt(1 - ab[i]) * c[i] * xt) / np.sqrt(ab[i]), -1, 1)
        coef0, coeft = np.sqrt(abp[i]) * betas[i] / (1 - ab[i]), np.sqrt(1 - betas[i]) * (1 - abp[i]) / (1 - ab[i])
        mu_p = coef0 * x0_hat + coeft * xt
        if v is None:
            log_var = np.log(betas[0]) if i == 0 else np.log(post_var[i])
        else:
            f = expit(v[i])
            log_var = f * np.log(betas[i]) + (1 - f) * post_log_var[i]
        if i == 0:
            half = (levels - 1) / 2
            loc, scale = (mu_p + 1) * half, np.exp(0.5 * log_var) * half
            k = x[..., None]
            term = -log_mass(np.where(k >= levels - 1, np.inf, (k + 0.5 - loc) / scale),
                             np.where(k <= 0, -np.inf, (k - 0.5 - loc) / scale))
        else:
            mu_q = coef0 * x0[..., None] + coeft * xt
            mismatch = (post_var[i] + (mu_q - mu_p) ** 2) / (2 * np.exp(log_var))
            term = 0.5 * (log_var - np.log(post_var[i])) + mismatch - 0.5
        total = total + (term * w).sum(-1).sum(-1)
    return -total


# --- schedules and the forward chain ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [4, 200, 1000])
def test_schedules_are_valid_variances_that_end_near_pure_noise(kind, steps):
    betas = noise_schedule(kind, steps)
    assert betas.shape == (steps,) and bool((betas > 0).all()) and bool((betas < 1).all())
    alpha_bar = torch.cumprod(1 - betas, 0)
    assert bool((alpha_bar[1:] < alpha_bar[:-1]).all())
    assert float(alpha_bar[-1]) < 1e-3
    assert float(alpha_bar[0]) > (0.99 if steps >= 200 else 0.8)
    if kind == "linear":
        assert bool((betas[1:] > betas[:-1]).all())


def test_noise_schedule_rejects_bad_options():
    with pytest.raises(ValueError, match="schedule must be"):
        noise_schedule("quadratic", 10)
    with pytest.raises(ValueError, match="timesteps"):
        noise_schedule("linear", 0)


def test_q_xt_given_x0_is_the_chained_steps():
    betas = noise_schedule("cosine", 50)
    chain = Chain.from_betas(betas).double()
    mean, var = torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
    for i, beta in enumerate(betas):  # x_t = sqrt(1 - beta) x_{t-1} + sqrt(beta) eps, from x_0 = 1
        mean, var = (1 - beta).sqrt() * mean, (1 - beta) * var + beta
        assert float(chain.alpha_bar[i].sqrt()) == pytest.approx(float(mean), rel=1e-6)
        assert float(1 - chain.alpha_bar[i]) == pytest.approx(float(var), rel=1e-6)


def test_guide_samples_match_q_xt_given_x0():
    model = tiny(timesteps=4)
    x = torch.tensor([[0.0, 1.0, 3.0, 4.0]]).repeat(20000, 1)
    trace = pyro.poutine.trace(model.guide).get_trace(x)
    for t in range(1, 5):
        xt = trace.nodes[latent_site(t)]["value"]
        a = model.chain.alpha_bar[t - 1].float()
        expected_mean = a.sqrt() * model.to_unit(x[0])
        stderr = (1 - a).sqrt() / 20000**0.5
        assert torch.allclose(xt.mean(0), expected_mean, atol=5 * float(stderr))
        assert torch.allclose(xt.var(0), (1 - a).expand(4), rtol=0.05)


def test_chain_posterior_is_bayes_rule_on_the_two_gaussians():
    betas = noise_schedule("linear", 20)
    chain = Chain.from_betas(betas).double()
    ab = torch.cumprod(1 - betas, 0)
    for i in range(1, 20):  # q(x_{t-1} | x_0) = N(sqrt(ab_prev) x0, 1 - ab_prev); q(x_t | x_{t-1}) = N(sqrt(1-b) ., b)
        prior_var, lik_precision = 1 - ab[i - 1], (1 - betas[i]) / betas[i]
        var = 1 / (1 / prior_var + lik_precision)
        assert float(chain.posterior_variance[i]) == pytest.approx(float(var), rel=1e-5)
        x0, xt = torch.tensor([0.3], dtype=torch.float64), torch.tensor([-0.7], dtype=torch.float64)
        mean = var * (ab[i - 1].sqrt() * x0 / prior_var + (1 - betas[i]).sqrt() * xt / betas[i])
        got = chain.posterior_mean(x0, xt, torch.tensor([i]))
        assert float(got) == pytest.approx(float(mean), rel=1e-5, abs=1e-7)


def test_respaced_chain_with_every_step_is_the_full_chain():
    assert respaced_steps(10, 10).tolist() == list(range(10))
    assert respaced_steps(100, 5).tolist() == [0, 25, 50, 74, 99]
    betas = noise_schedule("cosine", 30)
    full, respaced = Chain.from_betas(betas), Chain(torch.cumprod(1 - betas, 0)[respaced_steps(30, 30)])
    for name in ("beta", "posterior_variance", "coef_x0", "coef_xt"):
        assert torch.allclose(getattr(full, name), getattr(respaced, name))
    with pytest.raises(ValueError, match="steps"):
        respaced_steps(10, 11)


# --- the discrete decoder ----------------------------------------------------------------------------


def test_discretized_gaussian_sums_to_one_and_matches_the_normal_cdf():
    loc = torch.tensor([-30.0, -0.4, 0.0, 3.3, 8.0, 16.0, 16.4, 40.0], dtype=torch.float64)
    for scale in (1e-3, 0.05, 0.7, 5.0, 100.0):
        d = DiscretizedGaussian(loc, torch.full_like(loc, scale), 17)
        levels = torch.arange(17, dtype=torch.float64)[:, None]
        log_p = d.log_prob(levels)
        assert bool(torch.isfinite(log_p).all())
        assert torch.allclose(log_p.logsumexp(0), torch.zeros_like(loc), atol=1e-9)
        k = levels.numpy()
        cdf_up = np.where(k >= 16, 1.0, norm.cdf((k + 0.5 - loc.numpy()) / scale))
        cdf_low = np.where(k <= 0, 0.0, norm.cdf((k - 0.5 - loc.numpy()) / scale))
        mass = cdf_up - cdf_low
        big = mass > 1e-12
        assert np.allclose(log_p.numpy()[big], np.log(mass[big]), atol=1e-7)


def test_discretized_gaussian_samples_are_levels_with_the_right_frequencies():
    d = DiscretizedGaussian(torch.tensor(2.3), torch.tensor(0.8), 5)
    draws = d.sample((40000,))
    assert set(draws.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}
    freq = torch.stack([(draws == k).double().mean() for k in range(5)])
    probs = d.log_prob(torch.arange(5.0)).exp().double()
    assert torch.allclose(freq, probs, atol=0.015)


# --- the bound ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "variance"), [("linear", "fixed"), ("cosine", "learned")])
def test_bound_hook_traces_and_closed_form_agree(kind, variance):
    torch.manual_seed(3)
    learned = variance == "learned"
    model = tiny(schedule=kind, variance=variance, loss="hybrid" if learned else "simple").double()
    c, v = [0.4, -0.3, 0.8], ([0.5, -1.0, 2.0] if learned else None)
    model.net = LinearNoise(c, v)
    x = data()
    exact = closed_form_bound(x.numpy(), kind, 5, np.array(c), None if v is None else np.array(v))
    repeats = 20000
    hook = model.evidence_lower_bound(x.repeat(repeats, 1)).reshape(repeats, -1)
    weights = log_importance_weights(model, x, num_particles=repeats).local
    for estimate in (hook, weights):
        mean, stderr = estimate.mean(0).double(), estimate.std(0).double() / repeats**0.5
        assert bool((stderr < 0.3).all()), stderr
        assert bool(((mean - torch.from_numpy(exact)).abs() < 5 * stderr).all()), (mean, exact, stderr)


def test_bound_terms_at_given_xt_are_the_gaussian_formulas():
    """Where both are analytic (given the draws of ``x_t``) the hook's terms equal the formulas tightly."""
    model = tiny(schedule="linear", variance="learned", loss="hybrid").double()
    c, v = [0.4, -0.3, 0.8], [0.5, -1.0, 2.0]
    model.net = LinearNoise(c, v)
    x = data(6)
    t = torch.tensor([0, 1, 2, 2, 1, 0])
    xt = torch.randn(6, 4, dtype=torch.float64)
    mean, log_var, _ = model.reverse(xt, t, model.chain)
    got = model.step_terms(x, xt, t, mean, log_var).detach()
    betas = noise_schedule("linear", 3).numpy()
    ab = np.cumprod(1 - betas)
    abp = np.concatenate([[1.0], ab[:-1]])
    post_var = betas * (1 - abp) / (1 - ab)
    for row in range(6):
        i, xr, x0 = int(t[row]), xt[row].numpy(), x[row].numpy() / 2 - 1
        x0_hat = np.clip((xr - np.sqrt(1 - ab[i]) * c[i] * xr) / np.sqrt(ab[i]), -1, 1)
        coef0, coeft = np.sqrt(abp[i]) * betas[i] / (1 - ab[i]), np.sqrt(1 - betas[i]) * (1 - abp[i]) / (1 - ab[i])
        mu_p = coef0 * x0_hat + coeft * xr
        f = expit(v[i])
        lv = f * np.log(betas[i]) + (1 - f) * np.log(post_var[max(i, 1)])
        if i == 0:
            loc, scale, k = (mu_p + 1) * 2, np.exp(0.5 * lv) * 2, x[row].numpy()
            expected = -log_mass(np.where(k >= 4, np.inf, (k + 0.5 - loc) / scale),
                                 np.where(k <= 0, -np.inf, (k - 0.5 - loc) / scale)).sum()
        else:
            mu_q = coef0 * x0 + coeft * xr
            expected = (0.5 * (lv - np.log(post_var[i])) + (post_var[i] + (mu_q - mu_p) ** 2) / (2 * np.exp(lv))
                        - 0.5).sum()
        assert float(got[row]) == pytest.approx(expected, rel=1e-5)
    prior = model.prior_term(x).numpy()
    m, s2 = np.sqrt(ab[-1]) * (x.numpy() / 2 - 1), 1 - ab[-1]
    assert np.allclose(prior, (0.5 * (m**2 + s2 - 1 - np.log(s2))).sum(-1), rtol=1e-5)


@pytest.mark.parametrize("parameterization", ["eps", "levels"])
def test_bound_hook_and_traces_agree_with_the_network(parameterization):
    torch.manual_seed(4)
    model = tiny(parameterization=parameterization, variance="learned", loss="hybrid", timesteps=4).double()
    for p in model.net.out[-1].parameters():  # a network that does something (its last layer starts at zero)
        nn.init.normal_(p, std=0.3)
    x = data()
    repeats = 3000
    hook = model.evidence_lower_bound(x.repeat(repeats, 1)).reshape(repeats, -1)
    weights = log_importance_weights(model, x, num_particles=repeats).local
    gap = (hook.mean(0) - weights.mean(0)).abs()
    stderr = (hook.var(0) / repeats + weights.var(0) / repeats).sqrt()
    assert bool((gap < 5 * stderr).all()), (gap, stderr)
    assert ppl_dgm.log_likelihood(model, x, num_samples=2).kind == "bound"


# --- sampling and the model's surface --------------------------------------------------------------


@pytest.mark.parametrize("parameterization", ["eps", "levels"])
def test_draw_gives_levels_the_model_accepts(parameterization, device):
    model = tiny(parameterization=parameterization, timesteps=6).to(device)
    samples = ppl_dgm.draw(model, 7)
    assert samples.shape == (7, 4) and samples.dtype == model.dtype and samples.device.type == device.type
    assert bool((samples == samples.round()).all()) and float(samples.min()) >= 0 and float(samples.max()) <= 4
    model.check_data(samples)
    for method in ("ancestral", "ddim"):
        fewer = model.sample_images(5, steps=3, method=method)
        assert fewer.shape == (5, 4)
        model.check_data(fewer)
    predictive = pyro.infer.Predictive(model.model, num_samples=2)(n=3)
    assert predictive["x"].shape == (2, 3, 4)


def test_ddim_is_deterministic_given_its_start():
    model = tiny(timesteps=6)
    for p in model.net.out[-1].parameters():
        nn.init.normal_(p, std=0.3)
    torch.manual_seed(5)
    first = sample_images(model, 50, steps=4, method="ddim")
    torch.manual_seed(5)
    assert torch.equal(first, sample_images(model, 50, steps=4, method="ddim"))


def test_bad_data_and_options_are_clear_errors():
    model = tiny()
    with pytest.raises(ValueError, match="0..4"):
        model.check_data(torch.full((2, 4), 5.0))
    with pytest.raises(ValueError, match="integers"):
        model.check_data(torch.full((2, 4), 0.5))
    with pytest.raises(ValueError, match="shape"):
        model.check_data(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="loss='hybrid'"):
        tiny(variance="learned")
    with pytest.raises(ValueError, match="parameterization"):
        tiny(parameterization="x0")
    with pytest.raises(ValueError, match="method"):
        model.sample_images(2, method="euler")


def test_save_load_gives_identical_bounds(tmp_path):
    model = tiny(parameterization="levels", variance="learned", loss="hybrid")
    for p in model.net.out[-1].parameters():
        nn.init.normal_(p, std=0.3)
    ppl_dgm.save(model, tmp_path / "m")
    loaded = ppl_dgm.load(tmp_path / "m")
    x = data(dtype=torch.float32)
    torch.manual_seed(0)
    first = model.evidence_lower_bound(x)
    torch.manual_seed(0)
    assert torch.equal(first, loaded.evidence_lower_bound(x))


# --- the engine ----------------------------------------------------------------------------------


def test_engine_keeps_an_ema_and_its_state_round_trips():
    x = data(16, torch.float32)
    model = tiny()
    engine = DenoisingEngine(model, lr=1e-2, ema_decay=0.9)
    engine.prepare({"x": x})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    engine.step({"x": x}, 16)
    decay = min(0.9, 2 / 11)
    for name, value in model.state_dict().items():
        expected = decay * before[name] + (1 - decay) * value
        assert torch.allclose(engine.model_state()[name], expected, atol=1e-6)
    assert not torch.equal(engine.model_state()["net.out.2.weight"], model.state_dict()["net.out.2.weight"])
    for _ in range(3):
        engine.step({"x": x}, 16)
    state = engine.state_dict()
    twin_model = tiny()
    twin_model.load_state_dict(engine.model_state())  # as a resumed fit starts: the checkpoint holds the average
    twin = DenoisingEngine(twin_model, lr=1e-2, ema_decay=0.9)
    twin.prepare({"x": x})
    twin.load_state_dict(state)
    torch.manual_seed(9)
    a = engine.step({"x": x}, 16)
    torch.manual_seed(9)
    b = twin.step({"x": x}, 16)
    assert a == b
    for name, value in engine.model_state().items():
        assert torch.equal(value, twin.model_state()[name])


def test_validation_is_repeatable_and_leaves_the_weights_alone():
    x = data(8, torch.float32)
    model = tiny()
    engine = DenoisingEngine(model, lr=1e-2)
    engine.prepare({"x": x})
    engine.step({"x": x}, 8)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    first = engine.validation_loss({"x": x})
    assert first == engine.validation_loss({"x": x})
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())


def test_validation_figure_estimates_minus_the_bound():
    torch.manual_seed(6)
    model = tiny(timesteps=8, variance="learned", loss="hybrid")
    for p in model.net.out[-1].parameters():
        nn.init.normal_(p, std=0.3)
    x = data(400, torch.float32)
    engine = DenoisingEngine(model, validation_steps=3)
    engine.prepare({"x": x})
    estimate = engine.validation_loss({"x": x})
    bound = -model.evidence_lower_bound(x, num_samples=4)
    assert estimate == pytest.approx(float(bound.mean()), abs=4 * float(bound.std()) / 400**0.5 + 0.5)


def test_importance_sampling_starts_uniform_then_follows_the_history():
    x = data(8, torch.float32)
    model = tiny(variance="learned", loss="hybrid", timestep_sampling="importance")
    engine = DenoisingEngine(model, history=2)
    engine.prepare({"x": x})
    assert engine.step_probabilities() is None
    for _ in range(20):
        engine.step({"x": x}, 8)
    p = engine.step_probabilities()
    assert p is not None and p.shape == (3,) and float(p.sum()) == pytest.approx(1.0)
    rms = engine.losses.pow(2).mean(1).sqrt()
    assert int(p.argmax()) == int(rms.argmax())


def test_engine_refuses_a_model_without_the_diffusion_members():
    with pytest.raises(TypeError, match="training_loss"):
        DenoisingEngine(DiagonalGaussian())


@pytest.mark.slow
def test_a_short_fit_improves_the_bound():
    from ppl_dgm.datasets import load_dataset

    train, val = load_dataset("digits", "train").x, load_dataset("digits", "val").x
    model = DDPM(timesteps=50, width=128, num_blocks=2)
    torch.manual_seed(0)
    before = -float(model.evidence_lower_bound(val).mean())
    result = ppl_dgm.fit(model, train, val=val, epochs=30, batch_size=128, lr=2e-3, seed=0, progress=False)
    after = -ppl_dgm.log_likelihood(model, val, num_samples=1).mean
    assert result.engine == "denoising"
    assert after < 120 < before, (before, after)  # about 203 before, 106 after (T = 50, 30 epochs)
