"""Flow-posterior VAE: log-determinants against autograd, invertibility constraints, log q(z | x) in the
importance weights of log_likelihood / IWAE / PSIS, training, save/load, bad input."""

import math

import numpy as np
import pyro
import pytest
import torch
import torch.nn.functional as F
from arviz import psislw
from pyro.distributions.transforms.planar import ConditionedPlanar
from torch.autograd.functional import jacobian

import ppl_dgm
from ppl_dgm.datasets import load_dataset
from ppl_dgm.diagnostics import psis_diagnostic
from ppl_dgm.evaluation import likelihood as likelihood_module
from ppl_dgm.infer import make_objective
from ppl_dgm.models import get_model_class
from ppl_dgm.models.vae.flow_posterior import FlowPosteriorVAE
from ppl_dgm.models.vae.flow_posterior_transforms import (
    FLOWS,
    ConditionedStablePlanar,
    ConditionedSylvester,
    conditional_flows,
)
from ppl_dgm.traces import log_importance_weights

TINY = {"hidden_dims": [16], "latent_dim": 3, "dropout": 0.0, "num_flows": 2, "context_dim": 4, "flow_hidden": 8}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train").x[:40]


def _spread(module: torch.nn.Module, std: float = 0.7, seed: int = 0) -> None:
    """Re-draw every weight with a large spread, so the flows bend ``z`` far from the identity map."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * std)


def _block_logdets(fn, x: torch.Tensor) -> torch.Tensor:
    """``log|det d fn(x)_n / d x_n|`` per row ``n`` of ``x`` ``(B, k)``, from autograd's full Jacobian."""
    jac = jacobian(lambda v: fn(v).sum(0), x)  # (k, B, k): row n of the output depends on row n of x only
    return torch.linalg.slogdet(jac.movedim(1, 0)).logabsdet


def _tiny(flow: str, **kwargs) -> FlowPosteriorVAE:
    torch.manual_seed(0)
    return FlowPosteriorVAE(**{**TINY, **kwargs}, flow=flow).eval()


def test_registered_with_defaults():
    assert get_model_class("flowvae") is FlowPosteriorVAE
    model = FlowPosteriorVAE()
    assert (model.flow, model.num_flows, model.likelihood) == ("iaf", 4, "discretized_logistic")
    assert model.event_shape == (64,)
    assert model.kl_per_dim(load_dataset("digits", "test").x[:3]) is None


@pytest.mark.parametrize("flow", FLOWS)
def test_log_det_matches_autograd(flow):
    torch.manual_seed(1)
    layer = conditional_flows(flow, 3, 4, 1, 8)[0].double()
    _spread(layer)
    context, z = torch.randn(6, 4, dtype=torch.float64), 1.5 * torch.randn(6, 3, dtype=torch.float64)
    transform = layer.condition(context)
    y = transform(z)
    ours = transform.log_abs_det_jacobian(z, y)
    reference = _block_logdets(lambda v: layer.condition(context)(v), z)
    assert ours.shape == (6,)
    torch.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-9)
    if flow != "householder":  # volume preserving: 0 both ways; the others must bend volume for the test to bite
        assert reference.abs().mean() > 0.05


@pytest.mark.parametrize("flow", FLOWS)
def test_posterior_log_prob_matches_change_of_variables(flow):
    model = _tiny(flow).double()
    _spread(model.flows)
    x = load_dataset("digits", "train").x[:5].double()
    q = model.posterior(x)
    z0 = q.base_dist.rsample()
    z = z0
    for transform in q.transforms:
        z = transform(z)

    def chain(v):
        for transform in model.posterior(x).transforms:
            v = transform(v)
        return v

    expected = q.base_dist.log_prob(z0) - _block_logdets(chain, z0)
    torch.testing.assert_close(q.log_prob(z), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_planar_u_hat_keeps_the_map_invertible(dtype):
    # w.u_hat = -1 + softplus(w.u) > -1: with w.u down to -60 Pyro's rounded log|1 + tanh' w.u_hat| reaches -inf
    # (or NaN) where tanh(w.z + b) = 0; ours, log(tanh^2 + (1 - tanh^2) softplus(w.u)), stays finite and exact
    torch.manual_seed(2)
    w, u = torch.randn(200, 5, dtype=dtype), torch.randn(200, 5, dtype=dtype)
    target = torch.linspace(-60, 5, 200, dtype=dtype)
    u = u + (target - (u * w).sum(-1)).unsqueeze(-1) * w / w.pow(2).sum(-1, keepdim=True)  # w.u = target
    z = torch.randn(200, 5, dtype=dtype)
    bias = -(w * z).sum(-1, keepdim=True)  # w.z + b = 0 exactly: tanh = 0, tanh' = 1
    params = (bias, u, w)
    pyro_map, ours = ConditionedPlanar(params), ConditionedStablePlanar(params)
    pyro_log_det = pyro_map.log_abs_det_jacobian(z, pyro_map(z))
    log_det = ours.log_abs_det_jacobian(z, ours(z))
    exact = F.softplus(target).log()  # log(1 + w.u_hat)
    assert not torch.isclose(pyro_log_det, exact, atol=1.0).all()  # -inf, NaN or far off for w.u << 0
    torch.testing.assert_close(log_det, exact)
    assert ((ours.u_hat(u, w) * w).sum(-1)[target > -5] > -1).all()


def test_sylvester_diagonal_constraint_keeps_log_det_finite():
    torch.manual_seed(3)
    k = 4
    params = (torch.randn(7, 2, k), 50 * torch.randn(7, k, k), 50 * torch.randn(7, k, k), torch.zeros(7, k))
    transform = ConditionedSylvester(lambda: params)
    r1, r2 = transform.triangular()
    assert torch.equal(r1.tril(-1), torch.zeros_like(r1)) and torch.equal(r2.tril(-1), torch.zeros_like(r2))
    products = r1.diagonal(dim1=-2, dim2=-1) * r2.diagonal(dim1=-2, dim2=-1)
    assert (products > -1).all() and (products < -0.99).any()  # so 1 + tanh'(a) r1_ii r2_ii > 0 for every a
    z = torch.zeros(7, k)  # a = b = 0: tanh'(a) = 1, where the map comes closest to singular
    assert torch.isfinite(transform.log_abs_det_jacobian(z, transform(z))).all()


def _reference_log_weights(model: FlowPosteriorVAE, x: torch.Tensor, particles: int) -> torch.Tensor:
    """``log p(x, z) - log q(z | x)`` ``(K, N)``, ``log q`` by the change of variables with autograd Jacobians,
    drawing the base noise as the guide does (same calls on the global RNG)."""
    xs = x.repeat(particles, 1)
    q = model.posterior(xs)
    z0 = q.base_dist.rsample()

    def chain(v):
        for transform in model.posterior(xs).transforms:
            v = transform(v)
        return v

    z = chain(z0).detach()
    log_q = q.base_dist.log_prob(z0) - _block_logdets(chain, z0)
    log_p = model.prior().log_prob(z) + model.observation(z).log_prob(xs)
    return (log_p - log_q).detach().reshape(particles, x.shape[0])


@pytest.mark.parametrize("flow", FLOWS)
def test_importance_weights_use_the_right_log_q(flow):
    model = _tiny(flow).double()
    _spread(model.flows, std=0.5)
    x = load_dataset("digits", "train").x[:3].double()
    k = 30
    torch.manual_seed(5)
    reference = _reference_log_weights(model, x, k)
    torch.manual_seed(5)
    weights = log_importance_weights(model, x, k).local
    torch.testing.assert_close(weights, reference, rtol=1e-9, atol=1e-7)
    # the IWAE objective: -sum_n log mean_k w_kn
    torch.manual_seed(5)
    loss = make_objective("iwae", num_particles=k).loss(model, {"x": x}, x.shape[0])
    torch.testing.assert_close(loss, -(torch.logsumexp(reference, 0) - math.log(k)).sum(), rtol=1e-9, atol=1e-7)
    # psis_diagnostic: the same weights (its own seed), and its k-hat from them
    result = psis_diagnostic(model, x, num_samples=k, seed=5)
    torch.manual_seed(5)
    reference = _reference_log_weights(model, x, k).T.numpy()
    np.testing.assert_allclose(result.log_likelihood, torch.logsumexp(torch.from_numpy(reference), -1) - math.log(k))
    np.testing.assert_allclose(result.khat, psislw(reference)[1], rtol=1e-6)


@pytest.mark.parametrize("flow", ["planar", "sylvester"])
def test_log_likelihood_scores_the_guide_draws_with_the_right_log_q(monkeypatch, flow):
    # planar and Sylvester have no inverse: log_likelihood must score the guide's own draws through the cache.
    # Every weight it computes is checked against the reference drawn from the same RNG state.
    model = _tiny(flow).double()
    _spread(model.flows, std=0.5)
    x = load_dataset("digits", "train").x[:3].double()
    checked = []

    def spy(model, x, num_particles=1, *args, **kwargs):
        before = torch.get_rng_state()
        weights = log_importance_weights(model, x, num_particles, *args, **kwargs)
        after = torch.get_rng_state()
        torch.set_rng_state(before)
        with torch.enable_grad():
            reference = _reference_log_weights(model, x, num_particles)
        torch.set_rng_state(after)
        checked.append(reference)
        torch.testing.assert_close(weights.local, reference, rtol=1e-9, atol=1e-7)
        return weights

    monkeypatch.setattr(likelihood_module, "log_importance_weights", spy)
    estimate = ppl_dgm.log_likelihood(model, x, num_samples=40, seed=1)
    assert checked[-1].shape == (40, 3)
    torch.testing.assert_close(estimate.per_sample.double(), torch.logsumexp(checked[-1], 0) - math.log(40))


@pytest.mark.parametrize("flow", FLOWS)
@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_trains_with_each_objective(digits, flow, objective):
    model = _tiny(flow).train()
    before = [p.detach().clone() for p in model.flows.parameters()]
    result = ppl_dgm.fit(model, digits, epochs=2, batch_size=20, objective=objective, progress=False, seed=0)
    assert all(math.isfinite(loss) for loss in result.train_loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.flows.parameters(), strict=True))


@pytest.mark.parametrize("flow", FLOWS)
def test_save_load_round_trip(tmp_path, digits, flow):
    model = _tiny(flow, likelihood="categorical")
    _spread(model.flows, std=0.3)
    ppl_dgm.save(model, tmp_path / "run")
    loaded = ppl_dgm.load(tmp_path / "run")
    assert isinstance(loaded, FlowPosteriorVAE) and (loaded.flow, loaded.num_flows) == (flow, 2)
    assert torch.equal(loaded.posterior_mean(digits[:4]), model.posterior_mean(digits[:4]))
    assert torch.equal(loaded.reconstruct(digits[:4]), model.reconstruct(digits[:4]))
    draws = []
    for m in (model, loaded):
        torch.manual_seed(1)
        q = m.posterior(digits[:4])
        z = q.sample()
        draws.append((z, q.log_prob(z)))
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])


def test_posterior_mean_is_a_monte_carlo_mean_and_leaves_the_rng_alone():
    model = _tiny("householder")  # q is Gaussian: its mean is the reflections applied to the base mean
    x = load_dataset("digits", "train").x[:6]
    state = torch.get_rng_state()
    mean = model.posterior_mean(x)
    assert torch.equal(torch.get_rng_state(), state) and torch.equal(model.posterior_mean(x), mean)
    q = model.posterior(x)
    exact = q.base_dist.base_dist.loc
    for transform in q.transforms:
        exact = transform(exact)
    spread = q.base_dist.base_dist.scale.max()
    torch.testing.assert_close(mean, exact.detach(), rtol=0, atol=float(5 * spread.detach() / math.sqrt(256)))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"flow": "radial"}, "flow must be one of planar, householder, sylvester, iaf"),
    ({"latent_dim": 1}, "latent_dim >= 2"),
    ({"num_flows": 0}, "num_flows must be a positive integer"),
    ({"flow": "iaf", "latent_dim": 8, "flow_hidden": 4}, "flow_hidden >= latent_dim"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FlowPosteriorVAE(**{**TINY, **kwargs})


def test_bad_data():
    with pytest.raises(ValueError):
        ppl_dgm.log_likelihood(_tiny("planar"), torch.full((2, 64), 17.0))


def test_samples_from_the_prior(digits):
    pyro.set_rng_seed(0)
    assert _tiny("iaf").sample(5).shape == (5, 64)


@pytest.mark.slow
def test_digits_nll_target():
    # the default flow (IAF x4, discretized logistic) trained with the IWAE bound (K=5) measured 87.44 +- 0.53
    # nats/image (IW 1000, seed 0; docs/models/vae-family/flow-posteriors.md); the target is 88
    splits = {name: load_dataset("digits", name).x for name in ("train", "val", "test")}
    torch.manual_seed(0)
    model = FlowPosteriorVAE()
    ppl_dgm.fit(model, splits["train"], val=splits["val"], objective="iwae", num_particles=5, epochs=1000, patience=50,
                seed=0, progress=False)
    assert ppl_dgm.log_likelihood(model, splits["test"], num_samples=1000).nll <= 88.5
