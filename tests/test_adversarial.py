"""GANs: the story, the adversarial engine, and each model's particular member (clipping, penalty, labels, styles)."""

import copy

import pytest
import torch
from pyro.infer import Predictive

import ppl_dgm
from ppl_dgm.core import X
from ppl_dgm.datasets import load_dataset
from ppl_dgm.infer.adversarial import AdversarialEngine
from ppl_dgm.infer.fitting import make_engine
from ppl_dgm.models import get_model_class
from ppl_dgm.models.adversarial import CGAN, WGANGP, StyleGAN, gradient_penalty
from ppl_dgm.models.adversarial.networks import MinibatchStd
from ppl_dgm.models.adversarial.style import EqualizedLinear

TINY = {
    "gan": {"latent_dim": 4, "hidden_dims": [16]},
    "dcgan": {"latent_dim": 4, "channels": 4},
    "wgan": {"latent_dim": 4, "channels": 4},
    "wgan-mlp": {"latent_dim": 4, "network": "mlp", "hidden_dims": [16]},
    "wgangp": {"latent_dim": 4, "channels": 4},
    "cgan": {"latent_dim": 4, "hidden_dims": [16]},
    "cgan-concat": {"latent_dim": 4, "hidden_dims": [16], "conditioning": "concat"},
    "stylegan": {"latent_dim": 4, "style_dim": 8, "mapping_layers": 2, "channels": 4},
    "stylegan-r1": {"latent_dim": 4, "style_dim": 8, "mapping_layers": 2, "channels": 4, "r1_weight": 1.0,
                    "discriminator_norm": "layer", "minibatch_std": False},
}


def _model(case: str, device="cpu"):
    return get_model_class(case.split("-")[0])(**TINY[case]).to(device)


def _batch(model, n: int = 20, device="cpu") -> dict[str, torch.Tensor]:
    data = load_dataset("digits", "val", device=device)
    batch = {X: data.x[:n]}
    if model.capabilities.conditional:
        batch["y"] = data.y[:n].to(device)
    return batch


def _context(model, n: int, device="cpu") -> dict[str, torch.Tensor]:
    return {"y": torch.arange(n, device=device) % 10} if model.capabilities.conditional else {}


@pytest.mark.parametrize("case", sorted(TINY))
def test_story_draws_images_in_the_data_range(case, device):
    model = _model(case, device).eval()
    samples = ppl_dgm.draw(model, 5, **_context(model, 5, device))
    assert samples.shape == (5, 64) and samples.dtype == model.dtype and samples.device.type == device.type
    assert float(samples.min()) >= 0.0 and float(samples.max()) <= 16.0
    model.check_data(samples)
    assert samples.std(0).sum() > 0  # different latents give different images
    draws = Predictive(model.model, num_samples=2)(None, n=3, **_context(model, 3, device))
    assert draws[X].shape == (2, 3, 64) and draws["z"].shape == (2, 3, model.latent_dim)


@pytest.mark.parametrize("case", ["gan", "cgan"])
def test_an_implicit_model_neither_observes_data_nor_has_a_likelihood(case):
    model = _model(case)
    batch = _batch(model, 4)
    with pytest.raises(ValueError, match="implicit model"):
        model.model(batch[X], **{k: v for k, v in batch.items() if k != X})
    assert model.capabilities.likelihood == "none"
    with pytest.raises(ValueError):
        ppl_dgm.log_likelihood(model, batch)


def test_check_data_rejects_values_outside_the_range():
    with pytest.raises(ValueError, match=r"\[0, 16\]"):
        _model("gan").check_data(torch.full((2, 64), 17.0))


def _steps(engine: AdversarialEngine, batch: dict[str, torch.Tensor], count: int) -> list[dict[str, float]]:
    return [engine.step(batch, 100) for _ in range(count)]


@pytest.mark.parametrize("case", sorted(TINY))
def test_engine_steps_change_both_networks_and_report_finite_losses(case, device):
    model = _model(case, device).train()
    engine = make_engine(model, lr=1e-3)
    batch = _batch(model, device=device)
    engine.prepare(batch)
    before = copy.deepcopy(model.state_dict())
    figures = _steps(engine, batch, engine.n_critic)  # one generator step after n_critic critic steps
    for names in (model.generator_parameters(), model.discriminator_parameters()):
        changed = [not torch.equal(before[n], p) for n, p in model.named_parameters() if any(p is q for q in names)]
        assert any(changed)
    assert all(set(f) == {"discriminator", "generator"} for f in figures)
    assert all(torch.isfinite(torch.tensor(list(f.values()))).all() for f in figures)


def test_the_generator_waits_for_n_critic_discriminator_steps():
    model = _model("wgan").train()
    engine = make_engine(model, lr=1e-3, n_critic=3)
    batch = _batch(model)
    engine.prepare(batch)
    generator = [p.detach().clone() for p in model.generator_parameters()]
    _steps(engine, batch, 2)
    assert all(torch.equal(a, b) for a, b in zip(generator, model.generator_parameters(), strict=True))
    _steps(engine, batch, 1)
    assert not all(torch.equal(a, b) for a, b in zip(generator, model.generator_parameters(), strict=True))


def test_resumed_engine_takes_identical_next_steps():
    model = _model("stylegan").train()
    batch = _batch(model)
    engine = make_engine(model, lr=1e-3)
    engine.prepare(batch)
    _steps(engine, batch, 2)
    resumed_model = _model("stylegan").train()
    resumed_model.load_state_dict(model.state_dict())
    resumed = make_engine(resumed_model, lr=1e-3)
    resumed.prepare(batch)
    resumed.load_state_dict(copy.deepcopy(engine.state_dict()))
    results = []
    for e in (engine, resumed):
        torch.manual_seed(5)
        results.append(_steps(e, batch, 2))
    assert results[0] == results[1]
    for (name, a), b in zip(model.state_dict().items(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_engine_refuses_a_model_without_adversarial_members():
    with pytest.raises(TypeError, match="generate"):
        make_engine(get_model_class("vae")(hidden_dims=[8], latent_dim=2), "adversarial")
    with pytest.raises(ValueError, match="n_critic"):
        make_engine(_model("gan"), n_critic=0)


def test_wgan_clips_every_critic_weight_after_each_step():
    model = _model("wgan").train()
    largest = max(float(p.detach().abs().max()) for p in model.discriminator_parameters())
    assert largest > model.clip_value  # N(0, 0.02) init
    engine = make_engine(model, lr=0.1)  # large steps would leave the box without the clipping
    batch = _batch(model)
    engine.prepare(batch)
    for _ in range(3):
        engine.step(batch, 100)
        assert max(float(p.detach().abs().max()) for p in model.discriminator_parameters()) <= model.clip_value
    assert isinstance(engine.discriminator_optimizer, torch.optim.RMSprop)


def test_gradient_penalty_equals_a_hand_computation():
    # critic f(u) = 0.5 ||u||^2 has gradient u: the penalty is the mean of (||u_hat|| - 1)^2
    real = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    fake = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    alpha = torch.tensor([[0.5], [0.25]])
    penalty = gradient_penalty(lambda u: 0.5 * u.pow(2).sum(-1), real, fake, alpha)
    # u_hat = (1.5, 2), norm 2.5; u_hat = (0.25, 1.5), norm sqrt(2.3125)
    expected = ((2.5 - 1.0) ** 2 + (2.3125 ** 0.5 - 1.0) ** 2) / 2
    assert penalty.item() == pytest.approx(expected, rel=1e-6)


def test_wgangp_loss_is_the_critic_gap_plus_the_weighted_penalty_of_the_critic_jacobian():
    model = WGANGP(latent_dim=4, channels=4, penalty_weight=3.0).double().eval()
    real = load_dataset("digits", "val", dtype=torch.float64).x[:3]
    fake = model.generate(3).detach()
    torch.manual_seed(1)
    loss = model.discriminator_loss(real, fake)
    torch.manual_seed(1)
    alpha = torch.rand(3, 1, dtype=torch.float64)
    u_hat = alpha * model.to_unit(real) + (1 - alpha) * model.to_unit(fake)
    norms = torch.stack([torch.autograd.functional.jacobian(lambda u: model.discriminator(u[None]).sum(), row).norm()
                         for row in u_hat])
    expected = model.critic(fake).mean() - model.critic(real).mean() + 3.0 * ((norms - 1) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-9)


def test_cgan_draws_the_labels_it_is_given(device):
    model = _model("cgan", device).eval()
    labels = torch.tensor([3, 3, 7, 7], device=device)
    trace_y = Predictive(model.model, num_samples=1)(None, y=labels)["y"][0]
    assert torch.equal(trace_y, labels)
    draws = {}
    for digit in (3, 7):
        torch.manual_seed(0)  # the same z for both labels
        draws[digit] = ppl_dgm.draw(model, 4, y=torch.full((4,), digit, device=device))
    # the label reaches the generator
    assert all(not torch.allclose(a, b) for a, b in zip(draws[3], draws[7], strict=True))
    unlabelled = Predictive(model.model, num_samples=1)(None, n=50)["y"][0]
    assert unlabelled.min() >= 0 and unlabelled.max() <= 9 and len(unlabelled.unique()) > 1


@pytest.mark.parametrize("conditioning", ["projection", "concat"])
def test_cgan_discriminator_reads_the_label(conditioning):
    model = CGAN(latent_dim=4, hidden_dims=[16], conditioning=conditioning).eval()
    x = load_dataset("digits", "val").x[:4]
    zeros, ones = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    assert not torch.allclose(model.critic(x, zeros), model.critic(x, ones))


def test_cgan_rejects_bad_labels():
    model = _model("cgan")
    with pytest.raises(ValueError, match=r"0\.\.9"):
        ppl_dgm.draw(model, 2, y=torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="integer"):
        ppl_dgm.draw(model, 2, y=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="n=3"):
        ppl_dgm.draw(model, 3, y=torch.tensor([0, 1]))


def test_style_mixing_mixes_two_styles():
    model = StyleGAN(**TINY["stylegan"]).eval()
    with torch.no_grad():
        for layer in model.layers:
            layer.noise_weight.fill_(1.0)
    first, second = model.styles(torch.randn(2, 3, model.latent_dim))
    noise = torch.randn(3, model.noise_dim)

    def render(crossover: int) -> torch.Tensor:
        return model.render(model.mix_styles(first, second, torch.full((3,), crossover)), noise)

    only_first, only_second, mixed = render(model.num_styles), render(0), render(2)
    assert torch.equal(only_first, model.render(first[:, None].expand(-1, model.num_styles, -1), noise))
    assert not torch.allclose(mixed, only_first) and not torch.allclose(mixed, only_second)
    assert not torch.allclose(model.render(model.mix_styles(first, second, torch.full((3,), 2)), -noise), mixed)


def test_equalized_linear_scales_the_learning_rate_of_its_weights():
    x = torch.randn(5, 8)
    moves = {}
    for multiplier in (1.0, 0.01):
        torch.manual_seed(0)
        layer = EqualizedLinear(8, 3, lr_multiplier=multiplier)
        used = layer.weight.detach() * layer.weight_gain
        assert abs(float(used.std()) * 8 ** 0.5 - 1.0) < 0.5  # He-scaled whatever the multiplier
        optimizer = torch.optim.Adam(layer.parameters(), lr=1e-2)
        layer(x).pow(2).sum().backward()
        optimizer.step()
        moves[multiplier] = (layer.weight.detach() * layer.weight_gain - used).abs().mean()
    assert float(moves[0.01] / moves[1.0]) == pytest.approx(0.01, rel=1e-3)


def test_stylegan_mixes_styles_while_training_only():
    model = StyleGAN(**TINY["stylegan"], mixing_probability=1.0)
    calls = []
    original = model.mix_styles
    model.mix_styles = lambda *args: calls.append(args[2]) or original(*args)
    model.train().generate(6)
    assert len(calls) == 1 and bool(((calls[0] >= 1) & (calls[0] < model.num_styles)).all())
    model.eval().generate(6)
    assert len(calls) == 1


def test_minibatch_std_appends_the_batch_spread():
    h = torch.tensor([[[[0.0, 2.0]]], [[[2.0, 4.0]]]])  # (N=2, C=1, 1, 2): spread 1 at both pixels
    out = MinibatchStd()(h)
    assert out.shape == (2, 2, 1, 2) and torch.equal(out[:, :1], h)
    assert torch.allclose(out[:, 1], torch.ones(2, 1, 2))
    assert torch.equal(MinibatchStd()(h[:1])[:, 1], torch.zeros(1, 1, 2))


@pytest.mark.parametrize("case", ["dcgan", "cgan", "stylegan"])
def test_fit_save_load_gives_identical_draws(case, tmp_path):
    model = _model(case)
    batch = _batch(model)
    result = ppl_dgm.fit(model, batch, epochs=2, batch_size=10, lr=1e-3, progress=False, seed=0)
    assert result.engine == "adversarial" and len(result.history["generator"]) == 2 and not result.val_loss
    ppl_dgm.save(model, tmp_path / "ckpt")
    loaded = ppl_dgm.load(tmp_path / "ckpt")
    draws = []
    for m in (model, loaded):
        torch.manual_seed(3)
        draws.append(ppl_dgm.draw(m, 5, **_context(m, 5)))
    assert torch.equal(draws[0], draws[1])


def _mmd(a: torch.Tensor, b: torch.Tensor) -> float:
    """Squared maximum mean discrepancy with a Gaussian kernel of bandwidth 16 (pixel units)."""
    k = lambda u, v: torch.exp(-torch.cdist(u, v).pow(2) / (2 * 16.0 ** 2)).mean()  # noqa: E731
    return float(k(a, a) + k(b, b) - 2 * k(a, b))


@pytest.mark.slow
def test_a_short_fit_on_digits_beats_the_untrained_generator():
    train, test = load_dataset("digits", "train").x, load_dataset("digits", "test").x
    torch.manual_seed(0)
    model = get_model_class("gan")()
    untrained = _mmd(ppl_dgm.draw(model.eval(), 447), test)
    ppl_dgm.fit(model, train, epochs=100, batch_size=64, lr=2e-4, progress=False, seed=0)
    trained = _mmd(ppl_dgm.draw(model, 447), test)
    assert trained < 0.2 * untrained
