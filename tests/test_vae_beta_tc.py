"""beta-TCVAE: the minibatch estimators of q(z) against brute force, the KL decomposition, and the penalty
acting in training objectives only."""

import itertools
import math

import pyro
import pytest
import torch
from torch.distributions import Normal

import ppl_dgm
from ppl_dgm.datasets import load_dataset
from ppl_dgm.infer import make_objective
from ppl_dgm.models import get_model_class
from ppl_dgm.models.vae.beta_tc import PENALTY, BetaTCVAE
from ppl_dgm.models.vae.beta_tc_estimators import (
    kl_decomposition,
    kl_parts,
    log_aggregate_posterior,
    mixture_log_weights,
)
from ppl_dgm.models.vae.vae import VAE

TINY = {"hidden_dims": [16], "latent_dim": 3, "dropout": 0.0}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train").x[:40]


def _posteriors(n=5, k=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    loc = torch.randn(n, k, generator=gen, dtype=torch.float64)
    scale = 0.3 + torch.rand(n, k, generator=gen, dtype=torch.float64)
    z = loc + scale * torch.randn(n, k, generator=gen, dtype=torch.float64)
    return z, loc, scale


def _exact(z, loc, scale):
    """log q(z_i) and log q(z_ij) as the mixture over all examples, by loops."""
    n, k = loc.shape
    joint = torch.empty(n, dtype=torch.float64)
    dims = torch.empty(n, k, dtype=torch.float64)
    for i in range(n):
        joint[i] = math.log(sum(math.exp(float(Normal(loc[m], scale[m]).log_prob(z[i]).sum())) for m in range(n)) / n)
        for j in range(k):
            dims[i, j] = math.log(sum(math.exp(float(Normal(loc[m, j], scale[m, j]).log_prob(z[i, j])))
                                      for m in range(n)) / n)
    return joint, dims


def test_stratified_is_the_exact_mixture_and_mws_is_offset_when_the_batch_is_the_data_set():
    z, loc, scale = _posteriors()
    joint, dims = _exact(z, loc, scale)
    rows = torch.arange(5)
    strat = log_aggregate_posterior(z, loc, scale, mixture_log_weights(rows, 5, 5, "stratified"))
    mws = log_aggregate_posterior(z, loc, scale, mixture_log_weights(rows, 5, 5, "mws"))
    assert torch.allclose(strat[0], joint, atol=1e-10) and torch.allclose(strat[1], dims, atol=1e-10)
    assert torch.allclose(mws[0], joint - math.log(5), atol=1e-10)
    assert torch.allclose(mws[1], dims - math.log(5), atol=1e-10)


def test_stratified_mixture_is_unbiased_over_minibatches():
    n, batch = 5, 3
    z, loc, scale = _posteriors(n)
    joint, dims = _exact(z, loc, scale)
    for i in range(n):  # example i with every equally likely choice of the other batch members
        estimates = []
        for others in itertools.combinations([m for m in range(n) if m != i], batch - 1):
            members = torch.tensor([i, *others])
            log_w = mixture_log_weights(torch.tensor([0]), batch, n, "stratified")
            log_qz, log_qz_dims = log_aggregate_posterior(z[i:i + 1], loc[members], scale[members], log_w)
            estimates.append(torch.cat([log_qz, log_qz_dims[0]]).exp())
        mean = torch.stack(estimates).mean(0)
        assert torch.allclose(mean, torch.cat([joint[i:i + 1], dims[i]]).exp(), rtol=1e-9)


def test_mws_over_stacked_particles_equals_mws_over_the_examples():
    z, loc, scale = _posteriors(4)
    particles = 3
    stacked_z = torch.cat([z + 0.1 * p for p in range(particles)])  # any latents, one row per particle and example
    tiled = (loc.repeat(particles, 1), scale.repeat(particles, 1))
    rows = torch.arange(stacked_z.shape[0])
    over_rows = log_aggregate_posterior(stacked_z, *tiled, mixture_log_weights(rows, 12, 50, "mws"))
    over_examples = log_aggregate_posterior(stacked_z, loc, scale, mixture_log_weights(rows, 4, 50, "mws"))
    for a, b in zip(over_rows, over_examples, strict=True):
        assert torch.allclose(a, b, atol=1e-10)


def _tiny(seed=0, **weights):
    torch.manual_seed(seed)
    return BetaTCVAE(**TINY, **weights).eval()


def test_decomposition_against_brute_force_and_the_kl_term(digits):
    model = _tiny()
    x = digits[:6]
    torch.manual_seed(1)
    parts = model.kl_decomposition(x)
    torch.manual_seed(1)
    with torch.no_grad():
        q = model.posterior(x)
    z = q.sample()
    loc, scale = (t.double() for t in (q.base_dist.loc, q.base_dist.scale))
    joint, dims = _exact(z.double(), loc, scale)
    log_qz_x = Normal(loc, scale).log_prob(z.double()).sum(-1)
    log_pz = Normal(0.0, 1.0).log_prob(z.double()).sum(-1)
    assert parts.mutual_information == pytest.approx(float((log_qz_x - joint).mean()), abs=1e-4)
    assert parts.total_correlation == pytest.approx(float((joint - dims.sum(-1)).mean()), abs=1e-4)
    assert parts.dimensionwise_kl == pytest.approx(float((dims.sum(-1) - log_pz).mean()), abs=1e-4)
    assert parts.kl == pytest.approx(float((log_qz_x - log_pz).mean()), abs=1e-4)
    total = parts.mutual_information + parts.total_correlation + parts.dimensionwise_kl
    assert total == pytest.approx(parts.kl, abs=1e-4)
    assert parts.mutual_information <= math.log(6) + 1e-5  # I <= log N for the exact mixture


def test_kl_term_agrees_with_the_analytic_kl(digits):
    model = _tiny(seed=2)
    x = load_dataset("digits", "val").x[:300]
    torch.manual_seed(0)
    parts = model.kl_decomposition(x)
    analytic = model.kl_per_dim(x).sum(-1)
    with torch.no_grad():
        q = model.posterior(x)
    spread = (q.log_prob(q.sample((20,))) - model.prior().log_prob(q.sample((20,)))).std()
    assert abs(parts.kl - float(analytic.mean())) < 5 * float(spread) / math.sqrt(300)
    assert set(parts.as_dict()) == {"mutual_information", "total_correlation", "dimensionwise_kl", "kl"}


def test_decomposition_of_any_gaussian_posterior_vae(digits):
    model, plain = _twin(alpha=1.0, beta=1.0, gamma=1.0)
    plain.eval()
    torch.manual_seed(4)
    ours = model.kl_decomposition(digits)
    torch.manual_seed(4)
    assert kl_decomposition(plain, digits) == ours


def test_decomposition_needs_a_gaussian_posterior(digits):
    class Laplacian(VAE):
        def posterior(self, x, **ctx):
            return pyro.distributions.Laplace(*self.encode(x)).to_event(1)

    with pytest.raises(ValueError, match="diagonal Gaussian posterior; Laplacian's is Independent"):
        kl_decomposition(Laplacian(**TINY), digits)


def _twin(**weights):
    model = _tiny(**weights)
    plain = VAE(**TINY)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k != "dataset_size"})
    return model, plain


def _loss(model, x):
    pyro.set_rng_seed(0)
    return make_objective("elbo", model=model).loss(model, {"x": x}, 100).detach()


def test_penalty_acts_in_training_only(digits):
    model, plain = _twin(alpha=2.0, beta=6.0, gamma=0.5)
    model.setup(torch.zeros(100, 64))
    assert int(model.dataset_size) == 100
    x = digits[:20]
    model.train(), plain.train()
    pyro.set_rng_seed(0)
    trace = pyro.poutine.trace(model.guide).get_trace(x)
    q = model.posterior(x)
    z = trace.nodes["z"]["value"]
    penalty = model.penalty(z, q.base_dist.loc, q.base_dist.scale)
    assert torch.equal(trace.nodes[PENALTY]["fn"].log_factor, penalty)
    # the objective subtracts the penalty from each log-weight: loss = plain loss + N/M sum_i penalty_i
    assert _loss(model, x) == pytest.approx(float(_loss(plain, x) + 100 / 20 * penalty.detach().sum()), rel=1e-5)
    model.eval(), plain.eval()
    assert torch.equal(_loss(model, x), _loss(plain, x))
    assert PENALTY not in pyro.poutine.trace(model.guide).get_trace(x).nodes
    model.train()  # log_likelihood scores the plain model in any mode
    ours = ppl_dgm.log_likelihood(model, x[:8], num_samples=20, seed=3)
    assert torch.equal(ours.per_sample, ppl_dgm.log_likelihood(plain, x[:8], num_samples=20, seed=3).per_sample)


def test_penalty_is_the_weighted_decomposition(digits):
    model = _tiny(alpha=3.0, beta=1.0, gamma=1.0)
    model.setup(digits)
    x = digits[:10]
    q = model.posterior(x)
    z = q.rsample()
    log_w = mixture_log_weights(torch.arange(10), 10, 40, "mws")
    mi, _, _ = kl_parts(q.log_prob(z), *log_aggregate_posterior(z, q.base_dist.loc, q.base_dist.scale, log_w.float()),
                        model.prior().log_prob(z))
    assert torch.allclose(model.penalty(z, q.base_dist.loc, q.base_dist.scale), 2.0 * mi)


def test_unit_weights_are_the_plain_vae(digits):
    model, plain = _twin(alpha=1.0, beta=1.0, gamma=1.0)
    model.train(), plain.train()
    assert torch.equal(_loss(model, digits), _loss(plain, digits))


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_trains_with_each_objective(digits, objective):
    model = _tiny()
    before = [p.detach().clone() for p in model.parameters()]
    result = ppl_dgm.fit(model, digits, epochs=2, batch_size=20, objective=objective, progress=False, seed=0)
    assert all(math.isfinite(loss) for loss in result.train_loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert int(model.dataset_size) == 40


def test_save_load_keeps_the_data_set_size(tmp_path, digits):
    model = _tiny(beta=3.0)
    model.setup(digits)
    ppl_dgm.save(model, tmp_path / "run")
    loaded = ppl_dgm.load(tmp_path / "run")
    assert get_model_class("betatcvae") is BetaTCVAE and isinstance(loaded, BetaTCVAE)
    assert loaded.beta == 3.0 and int(loaded.dataset_size) == 40
    assert torch.equal(loaded.reconstruct(digits[:4]), model.reconstruct(digits[:4]))


def test_training_without_setup_says_what_to_do(digits):
    model = _tiny().train()
    with pytest.raises(ValueError, match="setup"):
        _loss(model, digits)


@pytest.mark.parametrize("name", ["alpha", "beta", "gamma"])
@pytest.mark.parametrize("value", [-0.5, math.nan, math.inf, None])
def test_bad_weights(name, value):
    with pytest.raises(ValueError, match=f"{name} must be a finite number >= 0"):
        BetaTCVAE(**{name: value})


def test_bad_estimator_and_sizes(digits):
    model = _tiny()
    with pytest.raises(ValueError, match="estimator must be one of"):
        model.kl_decomposition(digits, estimator="mss")
    with pytest.raises(ValueError, match="data set of 10"):
        model.kl_decomposition(digits, dataset_size=10)
    with pytest.raises(ValueError):
        model.kl_decomposition(torch.full((3, 64), -1.0))


@pytest.mark.slow
def test_digits_fit_keeps_the_likelihood_and_lowers_the_total_correlation():
    """Default fit (as `ppl-dgm fit betatcvae --data digits`): 94.44 nats and TC 0.24 nats measured; the plain
    VAE's TC is 2.09 nats."""
    splits = {name: load_dataset("digits", name).x for name in ("train", "val", "test")}
    torch.manual_seed(0)
    model = BetaTCVAE()
    ppl_dgm.fit(model, splits["train"], val=splits["val"], patience=50, seed=0, progress=False)
    assert ppl_dgm.log_likelihood(model, splits["test"], num_samples=1000).nll < 96.0
    torch.manual_seed(0)
    parts = model.kl_decomposition(splits["train"])
    assert parts.total_correlation < 1.0 and parts.mutual_information > 1.0
