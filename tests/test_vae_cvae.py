"""CVAE: p(x | y, z) with q(z | x, y); labels as context, scored as p(x | y), clear errors without them."""

import math

import pyro
import pytest
import torch
from pyro import poutine

import ppl_dgm
from ppl_dgm.datasets import load_dataset
from ppl_dgm.models import get_model_class
from ppl_dgm.models.vae.cvae import CVAE
from ppl_dgm.traces import log_importance_weights
from ppl_dgm.views import class_conditional_grid

TINY = {"hidden_dims": [16], "latent_dim": 3, "dropout": 0.0}


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits", "train")
    return data.x[:40], data.y[:40]


def _model(device="cpu", **kwargs) -> CVAE:
    torch.manual_seed(0)
    return CVAE(**{**TINY, **kwargs}).to(device).eval()


def test_registered_with_defaults():
    assert get_model_class("cvae") is CVAE
    model = CVAE()
    assert model.num_classes == 10 and model.latent_dim == 16 and model.event_shape == (64,)
    assert model.capabilities.conditional and model.capabilities.likelihood == "bound"


def test_log_weights_are_the_conditional_story(digits, device):
    """log w = log p(x | y, z) + log N(z; 0, I) - log q(z | x, y), each term from the networks by hand."""
    model = _model(device)
    x, y = (t.to(device) for t in digits)
    pyro.set_rng_seed(1)
    weights = log_importance_weights(model, x, 1, {"y": y}).local[0]
    pyro.set_rng_seed(1)
    z = poutine.trace(model.guide).get_trace(x, y=y).nodes["z"]["value"]
    onehot = torch.nn.functional.one_hot(y, 10).float()
    loc, raw = model.encoder(torch.cat([x / 16, onehot], -1)).chunk(2, -1)
    q = torch.distributions.Normal(loc, torch.nn.functional.softplus(raw) + 1e-4)
    logits = model.decoder(torch.cat([z, onehot], -1)).unflatten(-1, (64, 17))
    log_px = torch.distributions.Categorical(logits=logits).log_prob(x.long()).sum(-1)
    expected = log_px + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1)
    torch.testing.assert_close(weights, expected)


def test_the_label_changes_the_score_and_the_draws(digits):
    model = _model()
    x, y = digits
    right = ppl_dgm.log_likelihood(model, {"x": x, "y": y}, num_samples=20, seed=0)
    wrong = ppl_dgm.log_likelihood(model, {"x": x, "y": (y + 1) % 10}, num_samples=20, seed=0)
    assert right.per_sample.shape == (40,) and torch.isfinite(right.per_sample).all()
    assert right.kind == "estimate" and right.elbo is not None
    assert not torch.allclose(right.per_sample, wrong.per_sample)
    zeros, nines = torch.zeros(6, dtype=torch.long), torch.full((6,), 9)
    z = torch.randn(6, 3)
    assert not torch.allclose(model.decode_mean(z, y=zeros), model.decode_mean(z, y=nines))
    torch.manual_seed(2)
    a = model.sample(6, y=zeros)
    torch.manual_seed(2)
    b = ppl_dgm.draw(model, 6, y=nines)
    assert a.shape == b.shape == (6, 64) and not torch.equal(a, b)
    model.check_data(a)


def test_views_interface_takes_labels(digits, tmp_path):
    model = _model()
    x, y = digits
    assert model.posterior_mean(x, y=y).shape == (40, 3)
    assert model.reconstruct(x, y=y).shape == (40, 64)
    assert model.kl_per_dim(x, y=y).shape == (40, 3)
    grid = class_conditional_grid(model, tmp_path / "grid.png", per_class=3)
    assert grid.shape == (10, 3, 64) and (tmp_path / "grid.png").is_file()


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_trains_with_each_objective(digits, objective):
    model = _model().train()
    x, y = digits
    before = [p.detach().clone() for p in model.parameters()]
    result = ppl_dgm.fit(model, {"x": x, "y": y}, val={"x": x[:10], "y": y[:10]}, epochs=2, batch_size=20,
                         objective=objective, progress=False, seed=0)
    assert all(math.isfinite(loss) for loss in result.train_loss + result.val_loss)
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_save_load_round_trip(tmp_path, digits):
    model = _model(num_classes=12)
    x, y = digits
    ppl_dgm.save(model, tmp_path / "run")
    loaded = ppl_dgm.load(tmp_path / "run")
    assert isinstance(loaded, CVAE) and loaded.num_classes == 12
    assert torch.equal(loaded.reconstruct(x[:4], y=y[:4]), model.reconstruct(x[:4], y=y[:4]))
    assert torch.equal(ppl_dgm.log_likelihood(loaded, {"x": x, "y": y}, num_samples=5).per_sample,
                       ppl_dgm.log_likelihood(model, {"x": x, "y": y}, num_samples=5).per_sample)


@pytest.mark.parametrize("call", ["fit", "log_likelihood", "sample", "draw", "posterior_mean", "decode_mean"])
def test_without_labels_says_to_pass_y(digits, call):
    model = _model()
    x, _ = digits
    calls = {"fit": lambda: ppl_dgm.fit(model, x, epochs=1, progress=False),
             "log_likelihood": lambda: ppl_dgm.log_likelihood(model, x, num_samples=2),
             "sample": lambda: model.sample(3), "draw": lambda: ppl_dgm.draw(model, 3),
             "posterior_mean": lambda: model.posterior_mean(x), "decode_mean": lambda: model.decode_mean(x[:, :3])}
    with pytest.raises(ValueError, match=r"conditional on labels: pass them as y.*model.sample\(n, y=y\)"):
        calls[call]()


@pytest.mark.parametrize("labels,message", [
    (torch.tensor([0, 10]), r"must lie in 0..9 .*found values in \[0, 10\]"),
    (torch.tensor([-1, 3]), r"must lie in 0..9 .*found values in \[-1, 3\]"),
    (torch.tensor([0.0, 1.0]), "1-D integer tensor of labels.*float32"),
    (torch.tensor([True, False]), "1-D integer tensor of labels.*bool"),
    (torch.tensor([[0, 1]]), r"1-D integer tensor of labels.*shape \(1, 2\)"),
    (torch.tensor([0, 1, 2]), "y holds 3 labels for 2 examples"),
])
def test_bad_labels(labels, message):
    model = _model()
    with pytest.raises(ValueError, match=message):
        model.sample(2, y=labels)


def test_bad_training_labels_fail_before_fitting(digits):
    model = _model()
    x, y = digits
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="must lie in 0..9"):
        ppl_dgm.fit(model, {"x": x, "y": y + 5}, epochs=1, progress=False)
    with pytest.raises(ValueError, match="y holds 39 labels for 40 examples"):
        model.setup(x, y=y[:39])
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_bad_num_classes():
    with pytest.raises(ValueError, match="num_classes must be at least 2"):
        CVAE(num_classes=1)


@pytest.mark.slow
def test_digits_draws_are_the_digits_asked_for_and_score_well():
    """The default fit: -log p(x | y) below the plain VAE's -log p(x) (92.9 nats), and the digits classifier reads
    the asked-for label off most class-conditional draws."""
    from ppl_dgm.evaluation.digits_classifier import digits_classifier

    splits = {name: load_dataset("digits", name) for name in ("train", "val", "test")}
    torch.manual_seed(0)
    model = CVAE()
    ppl_dgm.fit(model, {"x": splits["train"].x, "y": splits["train"].y},
                val={"x": splits["val"].x, "y": splits["val"].y}, epochs=1000, patience=50, progress=False, seed=0)
    test = ppl_dgm.log_likelihood(model, {"x": splits["test"].x, "y": splits["test"].y}, num_samples=1000)
    assert test.nll < 92.9
    labels = torch.arange(10).repeat_interleave(50)
    torch.manual_seed(0)
    asked = digits_classifier()(model.sample(500, y=labels)).argmax(-1)
    assert float((asked == labels).double().mean()) > 0.7  # 82.3% of 1000 draws when measured
