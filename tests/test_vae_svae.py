"""S-VAE: the von Mises-Fisher distribution (density, sampler, gradients) and the hyperspherical VAE."""

import math

import numpy as np
import pyro
import pytest
import torch
import torch.nn.functional as F
from scipy import integrate, stats
from scipy.special import ive

import ppl_dgm
from ppl_dgm.datasets import load_dataset
from ppl_dgm.infer import make_objective
from ppl_dgm.models import get_model_class
from ppl_dgm.models.vae.svae import SVAE
from ppl_dgm.models.vae.von_mises_fisher import (
    HypersphericalUniform,
    VonMisesFisher,
    log_bessel_iv,
    log_sphere_area,
    mean_resultant_length,
    vmf_log_normalizer,
)

TINY = {"hidden_dims": [16], "latent_dim": 3, "dropout": 0.0}
DTYPE = torch.float64


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train").x[:40]


def _unit(m: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(m, generator=torch.Generator().manual_seed(seed), dtype=DTYPE), dim=-1)


# --- the log normalizer ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [0.0, 0.5, 1.5, 4.0, 31.0])
def test_log_bessel_matches_scipy_and_the_series_where_scipy_underflows(order):
    mpmath = pytest.importorskip("mpmath")
    x = torch.tensor([1e-4, 0.05, 1.0, 7.5, 80.0, 3e3, 1e5], dtype=DTYPE)
    ours = log_bessel_iv(order, x).numpy()
    for value, xi in zip(ours, x.tolist(), strict=True):
        scaled = ive(order, xi)
        reference = math.log(scaled) + xi if scaled > 0 else float(mpmath.log(mpmath.besseli(order, xi)))
        assert value == pytest.approx(reference, rel=1e-10, abs=1e-10)
    assert np.isfinite(ours).all()


def test_log_bessel_gradient_against_finite_differences():
    x = torch.tensor([1e-3, 0.3, 2.0, 40.0, 900.0], dtype=DTYPE, requires_grad=True)
    step = 1e-4 * x.detach()
    for order in (0.0, 0.5, 6.5):
        (grad,) = torch.autograd.grad(log_bessel_iv(order, x).sum(), x)
        central = (log_bessel_iv(order, x.detach() + step) - log_bessel_iv(order, x.detach() - step)) / (2 * step)
        torch.testing.assert_close(grad, central, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("m", [2, 3, 5, 20])
@pytest.mark.parametrize("kappa", [0.01, 1.0, 30.0, 2000.0])
def test_log_prob_and_entropy_match_scipy(m, kappa):
    loc = _unit(m, m)
    reference = stats.vonmises_fisher(loc.numpy(), kappa)
    points = F.normalize(torch.randn(6, m, dtype=DTYPE), dim=-1)
    points[0] = loc
    q = VonMisesFisher(loc, torch.tensor(kappa, dtype=DTYPE))
    np.testing.assert_allclose(q.log_prob(points).numpy(), reference.logpdf(points.numpy()), rtol=1e-9, atol=1e-8)
    assert float(q.entropy()) == pytest.approx(float(reference.entropy()), rel=1e-8, abs=1e-8)


def test_log_normalizer_stays_finite_for_large_dimension_and_tiny_kappa():
    kappa = torch.tensor([1e-6, 1e-2, 5.0, 1e4], dtype=DTYPE)
    value = vmf_log_normalizer(256, kappa)
    assert torch.isfinite(value).all()
    # kappa -> 0: the uniform density on S^255
    assert float(value[0]) == pytest.approx(-log_sphere_area(256), abs=1e-6)


@pytest.mark.parametrize("kappa", [0.2, 4.0, 150.0])
def test_log_prob_integrates_to_one_on_the_circle_and_the_2_sphere(kappa):
    theta = torch.linspace(0, 2 * math.pi, 20001, dtype=DTYPE)[:-1]
    circle = torch.stack([theta.cos(), theta.sin()], -1)
    q2 = VonMisesFisher(_unit(2, 1), torch.tensor(kappa, dtype=DTYPE))
    assert float(q2.log_prob(circle).exp().mean() * 2 * math.pi) == pytest.approx(1.0, abs=1e-8)

    polar = (torch.arange(800, dtype=DTYPE) + 0.5) * math.pi / 800  # midpoint rule in both angles
    azimuth = torch.arange(800, dtype=DTYPE) * 2 * math.pi / 800
    p, a = torch.meshgrid(polar, azimuth, indexing="ij")
    sphere = torch.stack([p.sin() * a.cos(), p.sin() * a.sin(), p.cos()], -1)
    q3 = VonMisesFisher(_unit(3, 2), torch.tensor(kappa, dtype=DTYPE))
    mass = (q3.log_prob(sphere).exp() * p.sin()).sum() * (math.pi / 800) * (2 * math.pi / 800)
    assert float(mass) == pytest.approx(1.0, abs=1e-5)


def test_uniform_on_the_sphere():
    u = HypersphericalUniform(3, dtype=DTYPE)
    z = u.expand((5, 2)).rsample((4,))
    assert z.shape == (4, 5, 2, 3)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(4, 5, 2, dtype=DTYPE))
    torch.testing.assert_close(u.log_prob(z), torch.full((4, 5, 2), -math.log(4 * math.pi), dtype=DTYPE))
    assert float(u.entropy()) == pytest.approx(math.log(4 * math.pi))
    with pytest.raises(ValueError, match="dim must be an integer >= 2"):
        HypersphericalUniform(1)


# --- the sampler ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_samples_lie_on_the_sphere_and_have_finite_gradients(dtype):
    loc = F.normalize(torch.randn(4, 7, dtype=dtype), dim=-1).requires_grad_()
    kappa = torch.tensor([1e-3, 1.0, 1e3, 1e6], dtype=dtype, requires_grad=True)
    q = VonMisesFisher(loc, kappa)
    z = q.rsample((50,))
    assert z.shape == (50, 4, 7)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(50, 4, dtype=dtype))
    (z.sum() + q.score_parts(z).score_function.sum()).backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(kappa.grad).all()
    # the sample concentrates at mu as kappa grows: 1 - mu.z ~ (m-1) / (2 kappa)
    gap = 1 - (z * loc.detach()).sum(-1).mean(0)
    gap = gap.detach()
    assert float(gap[3]) == pytest.approx(6 / 2e6, rel=0.3) and float(gap[2]) == pytest.approx(6 / 2e3, rel=0.3)


def _w_cdf(m: int, kappa: float):
    """CDF of the polar angle theta = arccos(mu.z): density |S^{m-2}| C_m(kappa) e^{kappa cos t} sin^{m-2} t."""
    log_c = float(vmf_log_normalizer(m, torch.tensor(kappa, dtype=DTYPE))) + log_sphere_area(m - 1)
    top = min(math.pi, 40 * math.sqrt(m / kappa))
    grid = np.linspace(0, top, 20001)
    density = np.exp(log_c + kappa * np.cos(grid)) * np.sin(grid) ** (m - 2)
    cdf = integrate.cumulative_simpson(density, x=grid, initial=0.0)
    assert cdf[-1] == pytest.approx(1.0, abs=1e-6)  # the density of w integrates to one
    return lambda t: np.interp(t, grid, cdf, right=1.0)


def _angles(z: torch.Tensor, loc: torch.Tensor) -> np.ndarray:
    return (2 * torch.asin(((z - loc).norm(dim=-1) / 2).clamp(max=1))).numpy()


@pytest.mark.parametrize("m", [2, 3, 5, 12])
@pytest.mark.parametrize("kappa", [0.5, 8.0, 500.0])
def test_wood_sampler_fits_the_density_of_mu_dot_z(m, kappa):
    torch.manual_seed(1)
    loc = _unit(m, 7)
    z = VonMisesFisher(loc, torch.tensor(kappa, dtype=DTYPE)).rsample((3000,))
    cdf = _w_cdf(m, kappa)
    assert stats.kstest(_angles(z, loc), cdf).pvalue > 1e-3
    # the same test rejects the sampler of a wrong kappa (1.25 kappa + 1): it has the power to fail
    wrong = VonMisesFisher(loc, torch.tensor(1.25 * kappa + 1, dtype=DTYPE)).rsample((3000,))
    assert stats.kstest(_angles(wrong, loc), cdf).pvalue < 1e-3


@pytest.mark.parametrize("m", [3, 4, 9])
def test_directions_orthogonal_to_mu_are_uniform(m):
    torch.manual_seed(2)
    loc = _unit(m, 3)
    z = VonMisesFisher(loc, torch.tensor(5.0, dtype=DTYPE)).rsample((3000,))
    basis = torch.linalg.qr(torch.cat([loc[:, None], torch.eye(m, dtype=DTYPE)[:, : m - 1]], 1))[0][:, 1:]
    direction = F.normalize(z @ basis, dim=-1)  # on S^{m-2}, uniform if the sampler is right
    if m == 3:
        angle = torch.atan2(direction[:, 1], direction[:, 0]).numpy()
        assert stats.kstest(angle, stats.uniform(-math.pi, 2 * math.pi).cdf).pvalue > 1e-3
    else:  # a coordinate of a uniform point on S^{m-2}: (1 + u) / 2 ~ Beta((m-2)/2, (m-2)/2)
        half = (1 + direction[:, 0].numpy()) / 2
        assert stats.kstest(half, stats.beta((m - 2) / 2, (m - 2) / 2).cdf).pvalue > 1e-3


# --- gradients: reparameterization + the rejection correction -------------------------------------------------


def _gradient_estimates(m: int, kappa: float, n: int, correction: bool):
    """Per-sample estimates of d E_q[exp(c.z)] / d (raw mu, kappa), and the exact value by the closed form
    E_q[exp(c.z)] = C_m(kappa) / C_m(|kappa mu + c|)."""
    c = torch.linspace(-0.8, 1.1, m, dtype=DTYPE)
    raw = _unit(m, 11) * 1.3
    raw_n = raw.expand(n, m).clone().requires_grad_()
    kappa_n = torch.full((n,), kappa, dtype=DTYPE, requires_grad=True)
    q = VonMisesFisher(F.normalize(raw_n, dim=-1), kappa_n)
    z = q.rsample()
    f = (z @ c).exp()
    surrogate = f + (f.detach() * q.score_parts(z).score_function if correction else 0)
    surrogate.sum().backward()
    raw0 = raw.clone().requires_grad_()
    kappa0 = torch.tensor(kappa, dtype=DTYPE, requires_grad=True)
    mu = F.normalize(raw0, dim=-1)
    exact = (vmf_log_normalizer(m, kappa0) - vmf_log_normalizer(m, (kappa0 * mu + c).norm())).exp()
    exact.backward()
    return (raw_n.grad, kappa_n.grad), (raw0.grad, kappa0.grad)


@pytest.mark.parametrize(("m", "kappa"), [(3, 1.0), (3, 12.0), (6, 3.0)])
def test_gradient_with_correction_matches_the_closed_form(m, kappa):
    torch.manual_seed(3)
    (grad_mu, grad_kappa), (exact_mu, exact_kappa) = _gradient_estimates(m, kappa, 40000, correction=True)
    for samples, exact in ((grad_mu, exact_mu), (grad_kappa, exact_kappa)):
        mean, stderr = samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])
        assert ((mean - exact).abs() <= 4.5 * stderr + 1e-9).all(), (mean, exact, stderr)


def test_gradient_without_correction_is_biased_in_kappa():
    torch.manual_seed(4)
    (_, grad_kappa), (_, exact_kappa) = _gradient_estimates(3, 1.0, 40000, correction=False)
    stderr = grad_kappa.std() / math.sqrt(grad_kappa.shape[0])
    assert abs(float(grad_kappa.mean() - exact_kappa)) > 8 * float(stderr)


def test_pyro_trace_elbo_uses_the_correction_term():
    """Pyro's Trace_ELBO reads `score_parts`: its gradient equals the hand-written surrogate on the same draws."""
    c = torch.tensor([0.5, -1.0, 2.0], dtype=DTYPE)
    raw = torch.tensor([0.3, 0.2, -0.9], dtype=DTYPE, requires_grad=True)
    kappa = torch.tensor(2.0, dtype=DTYPE, requires_grad=True)

    def model():
        with pyro.plate("n", 64):
            z = pyro.sample("z", HypersphericalUniform(3, dtype=DTYPE))
            pyro.factor("f", z @ c)

    def guide():
        with pyro.plate("n", 64):
            pyro.sample("z", VonMisesFisher(F.normalize(raw, dim=-1), kappa))

    pyro.set_rng_seed(5)
    grads = torch.autograd.grad(pyro.infer.Trace_ELBO().differentiable_loss(model, guide), (raw, kappa))
    pyro.set_rng_seed(5)
    q = VonMisesFisher(F.normalize(raw, dim=-1), kappa).expand((64,))
    z = q.rsample()
    elbo = z @ c - math.log(4 * math.pi) - q.log_prob(z)
    surrogate = elbo + elbo.detach() * q.score_parts(z).score_function
    expected = torch.autograd.grad(-surrogate.sum(), (raw, kappa))
    for ours, reference in zip(grads, expected, strict=True):
        torch.testing.assert_close(ours, reference)


def test_ppl_dgm_elbo_gradient_carries_the_correction(digits):
    """Same draws, same model: the 'elbo' objective's gradient equals Pyro's Trace_ELBO's, which uses `score_parts`."""
    torch.manual_seed(0)
    model = SVAE(**TINY)

    def gradients(objective):
        pyro.set_rng_seed(1)
        loss = make_objective(objective).loss(model, {"x": digits}, digits.shape[0])
        return torch.autograd.grad(loss, list(model.parameters()))

    for ours, reference in zip(gradients("elbo"), gradients(pyro.infer.Trace_ELBO()), strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)


# --- the model ---------------------------------------------------------------------------------------------------


def test_registered_with_defaults():
    assert get_model_class("svae") is SVAE
    model = SVAE()
    assert model.latent_dim == 10 and model.event_shape == (64,) and model.capabilities.likelihood == "bound"


def test_kl_against_the_uniform_prior_is_analytic(digits):
    torch.manual_seed(0)
    model = SVAE(**TINY).eval()
    x = digits[:4]
    q = model.posterior(x)
    z = q.rsample((20000,))
    samples = (q.log_prob(z) - model.prior().log_prob(z)).detach()
    kl = model.kl(x)
    assert (kl >= 0).all()
    assert ((samples.mean(0) - kl).abs() <= 4.5 * samples.std(0) / math.sqrt(20000) + 1e-6).all()
    # m = 3: H(vMF) = log(4 pi sinh(kappa) / kappa) - kappa coth(kappa) + 1
    kappa = model.encode(x)[1].double()
    entropy = (4 * math.pi * kappa.sinh() / kappa).log() - kappa / kappa.tanh() + 1
    torch.testing.assert_close(kl.double(), math.log(4 * math.pi) - entropy, rtol=1e-4, atol=1e-5)
    assert model.kl_per_dim(x) is None


def test_views_and_shapes(digits):
    torch.manual_seed(0)
    model = SVAE(**TINY).eval()
    x = digits[:5]
    mu, kappa = model.encode(x)
    assert mu.shape == (5, 3) and kappa.shape == (5,) and (kappa >= 1).all()
    torch.testing.assert_close(mu.norm(dim=-1), torch.ones(5))
    mean = model.posterior_mean(x)
    torch.testing.assert_close(mean, mean_resultant_length(3, kappa).unsqueeze(-1) * mu)
    assert model.reconstruct(x).shape == (5, 64) and model.sample(7).shape == (7, 64)


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_trains_with_each_objective(digits, objective):
    torch.manual_seed(0)
    model = SVAE(**TINY)
    before = [p.detach().clone() for p in model.parameters()]
    result = ppl_dgm.fit(model, digits, epochs=2, batch_size=20, objective=objective, progress=False, seed=0)
    assert all(math.isfinite(loss) for loss in result.train_loss)
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    score = ppl_dgm.log_likelihood(model, digits[:8], num_samples=16, seed=0)
    assert math.isfinite(score.nll) and score.nll <= -score.elbo_mean + 1e-3


def test_save_load_round_trip(tmp_path, digits):
    torch.manual_seed(0)
    model = SVAE(**TINY, likelihood="discretized_logistic").eval()
    ppl_dgm.save(model, tmp_path / "run")
    loaded = ppl_dgm.load(tmp_path / "run")
    assert isinstance(loaded, SVAE) and loaded.likelihood == "discretized_logistic"
    torch.testing.assert_close(loaded.reconstruct(digits[:6]), model.reconstruct(digits[:6]))
    first = ppl_dgm.log_likelihood(model, digits[:6], num_samples=8, seed=1)
    second = ppl_dgm.log_likelihood(loaded, digits[:6], num_samples=8, seed=1)
    torch.testing.assert_close(first.per_sample, second.per_sample)


def test_bad_input():
    with pytest.raises(ValueError, match="latent_dim must be >= 2"):
        SVAE(latent_dim=1)
    with pytest.raises(ValueError, match="latent_dim"):
        SVAE(latent_dim=0)
    with pytest.raises(ValueError, match="m >= 2"):
        VonMisesFisher(torch.ones(1), torch.tensor(1.0))
    with pytest.raises(ValueError):
        SVAE(**TINY).check_data(torch.full((2, 64), 17.0))


@pytest.mark.slow
def test_fits_the_digits():
    """The recommended setting (latent 10, the ELBO, early stopping) on the digits protocol: examples/vae_svae.py
    measured 93.63 ± 0.53 nats/image (IW 1000); the target leaves room for another machine's arithmetic."""
    splits = {name: load_dataset("digits", name).x for name in ("train", "val", "test")}
    torch.manual_seed(0)
    model = SVAE(latent_dim=10)
    ppl_dgm.fit(model, splits["train"], val=splits["val"], epochs=1000, patience=50, seed=0, progress=False)
    score = ppl_dgm.log_likelihood(model, splits["test"], num_samples=1000, seed=0)
    assert score.nll < 95.0
