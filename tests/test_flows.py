"""Density flows: every transform of every preset (inverse, log-determinant against autograd), and the presets."""

import math

import pytest
import torch
from torch.autograd.functional import jacobian

import ppl_dgm
from ppl_dgm.datasets import load_dataset
from ppl_dgm.models import get_model_class
from ppl_dgm.models.flows.dequantizer import Dequantizer
from ppl_dgm.models.flows.transforms import ActNorm, squeeze_permutation

TINY = {
    "nice": {"num_layers": 2, "hidden_dims": [8]},
    "realnvp": {"num_layers": 2, "hidden_dims": [8]},
    "maf": {"num_layers": 2, "hidden_dims": [8]},
    "iaf": {"num_layers": 2, "hidden_dims": [8]},
    "nsf": {"num_layers": 2, "hidden_dims": [8], "bins": 4},
    "glow": {"num_steps": 2, "hidden_channels": 4},
}
VECTOR_PRESETS = [name for name in TINY if name != "glow"]


def _tiny(name: str, input_dim: int, bounds=(0, 17), dtype=torch.float64, **extra):
    """A small preset with parameters moved away from their near-identity start, in eval mode."""
    torch.manual_seed(0)
    model = get_model_class(name)(input_dim=input_dim, bounds=bounds, **TINY[name], **extra).to(dtype)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.3 * torch.randn_like(param))
    return model.eval()


def _jacobian_log_det(fn, x: torch.Tensor) -> torch.Tensor:
    """``log |det d fn(x) / dx|`` of one example ``x`` (any shape), by autograd."""
    flat = jacobian(lambda v: fn(v.reshape(x.shape)).reshape(-1), x.reshape(-1))
    return torch.linalg.slogdet(flat).logabsdet


# (preset, input_dim): 64 = 8x8 for Glow, 16 = 4x4 (the smallest Glow), 5 = odd split of the couplings
TRANSFORM_CASES = [("glow", 16), *((name, 5) for name in VECTOR_PRESETS)]


def _check_transforms(transforms, value: torch.Tensor, what: str) -> None:
    """Each transform, on a fresh input of its shape: inverse round trip and log|det J| against autograd."""
    for index, transform in enumerate(transforms):
        out = transform(value)
        back = transform.inv(out.clone())  # a clone: no transform may answer from its cache
        torch.testing.assert_close(back, value, rtol=1e-9, atol=1e-9, msg=f"{what} transform {index}: inverse")
        event_dim = transform.domain.event_dim
        log_det = transform.log_abs_det_jacobian(value, out)
        for i in range(value.shape[0]):
            expected = _jacobian_log_det(transform, value[i])
            got = log_det[i].sum() if event_dim == 0 else log_det[i]
            torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-8, msg=f"{what} transform {index}: log det")
        value = 1.5 * torch.randn_like(out)  # a fresh input of the next transform's shape, of moderate size


@pytest.mark.parametrize("name,input_dim", TRANSFORM_CASES)
def test_every_transform_inverts_and_its_log_det_matches_autograd(name, input_dim):
    model = _tiny(name, input_dim)
    with torch.no_grad():
        model.setup(torch.rand(50, input_dim, dtype=torch.float64) * 17)
    transforms = model.transforms()
    assert len(transforms) >= 4
    _check_transforms(transforms, torch.randn(2, input_dim, dtype=torch.float64), name)


@pytest.mark.parametrize("name,input_dim", TRANSFORM_CASES)
@pytest.mark.parametrize("bounds", [[0, 17], None], ids=["logit", "real"])
def test_log_prob_is_the_change_of_variables_of_the_whole_flow(name, input_dim, bounds):
    model = _tiny(name, input_dim, bounds)
    x = model.distribution().sample((2,))
    inverse = torch.distributions.ComposeTransform(model.transforms()).inv
    base = torch.distributions.Normal(0.0, 1.0)
    for i in range(2):
        expected = base.log_prob(inverse(x[i])).sum() + _jacobian_log_det(inverse, x[i])
        torch.testing.assert_close(model.log_prob(x[i : i + 1])[0], expected, rtol=1e-8, atol=1e-8)


def test_actnorm_initializes_per_channel_from_data_once():
    norm = ActNorm((3, 1, 1)).double()
    y = torch.randn(40, 3, 4, 4, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5]).view(3, 1, 1) + 5
    norm.initialize(y)
    z = norm.inv(y)
    torch.testing.assert_close(z.mean((0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(z.std((0, 2, 3)), torch.ones(3, dtype=torch.float64), atol=1e-9, rtol=0)
    before = norm.log_scale.detach().clone()
    norm.initialize(2 * y)
    assert torch.equal(norm.log_scale.detach(), before)


def test_squeeze_permutation_moves_each_2x2_block_to_the_channels():
    image = torch.arange(16).reshape(1, 4, 4)
    squeezed = image.reshape(-1)[squeeze_permutation(1, 4)].reshape(4, 2, 2)
    assert squeezed[:, 0, 0].tolist() == [0, 1, 4, 5]  # the top-left block
    assert squeezed[:, 1, 1].tolist() == [10, 11, 14, 15]  # the bottom-right block


def _digits(n: int) -> torch.Tensor:
    return load_dataset("digits", "train").x[:n]


@pytest.mark.parametrize("name", list(TINY))
def test_preset_fits_scores_samples_and_round_trips(name, tmp_path):
    x, val = _digits(40), load_dataset("digits", "val").x[:20]
    torch.manual_seed(0)
    model = get_model_class(name)(bounds=[0, 17], **TINY[name])
    assert model.capabilities.likelihood == "exact" and model.capabilities.data == "continuous"
    result = ppl_dgm.fit(model, x, val=val, epochs=2, batch_size=20, progress=False, seed=0)
    assert all(math.isfinite(v) for v in result.train_loss + result.val_loss)
    score = ppl_dgm.log_likelihood(model, val)
    assert score.kind == "bound" and torch.isfinite(score.per_sample).all()
    samples = model.sample(6)
    assert samples.shape == (6, 64) and torch.isfinite(samples).all()
    model.check_data(samples)
    ppl_dgm.save(model, tmp_path / "ckpt")
    loaded = ppl_dgm.load(tmp_path / "ckpt")
    assert type(loaded) is type(model) and loaded.config == model.config
    dequantized = val + torch.rand_like(val)
    model.eval(), loaded.eval()
    assert torch.equal(loaded.log_prob(dequantized), model.log_prob(dequantized))


@pytest.mark.parametrize("name", VECTOR_PRESETS)
def test_preset_works_on_real_valued_2d_data(name):
    x = load_dataset("moons", "train").x[:64]
    torch.manual_seed(0)
    model = get_model_class(name)(input_dim=2, **TINY[name])
    ppl_dgm.fit(model, x, epochs=2, batch_size=32, progress=False, seed=0)
    score = ppl_dgm.log_likelihood(model, x)
    assert score.kind == "exact" and torch.isfinite(score.per_sample).all()
    assert model.sample(5).shape == (5, 2)


def test_glow_needs_a_square_image_of_even_side():
    for input_dim in (2, 63, 9):
        with pytest.raises(ValueError, match="square images of even side"):
            get_model_class("glow")(input_dim=input_dim)


def test_fitting_improves_the_density():
    x, val = _digits(200), load_dataset("digits", "val").x[:100]
    torch.manual_seed(0)
    model = get_model_class("realnvp")(bounds=[0, 17], num_layers=2, hidden_dims=[32])
    before = ppl_dgm.log_likelihood(model, val).nll
    ppl_dgm.fit(model, x, epochs=15, batch_size=50, lr=3e-3, patience=None, progress=False, seed=0)
    after = ppl_dgm.log_likelihood(model, val).nll
    assert after < before - 10


@pytest.mark.parametrize("kwargs,match", [
    ({"bounds": (3, 1)}, "bounds"),
    ({"alpha": 0.5}, "alpha"),
    ({"input_dim": 1}, "input_dim"),
    ({"num_layers": 0}, "num_layers"),
    ({"dropout": 1.0}, "dropout"),
    ({"max_log_scale": 0}, "max_log_scale"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_model_class("realnvp")(**kwargs)


def test_data_outside_the_bounds_is_rejected_with_advice():
    model = get_model_class("nsf")(bounds=[0, 17], **TINY["nsf"])
    with pytest.raises(ValueError, match="bounds=None for real-valued data"):
        ppl_dgm.log_likelihood(model, torch.full((2, 64), -3.0))


def test_iaf_is_maf_turned_around():
    """With the same weights, IAF's base -> data map is MAF's data -> base map (MAF's one-pass density direction)."""
    maf, iaf = _tiny("maf", 5, None), _tiny("iaf", 5, None)
    iaf.load_state_dict(maf.state_dict())
    v = torch.randn(4, 5, dtype=torch.float64)
    iaf_forward = torch.distributions.ComposeTransform(iaf.flow_transforms())
    maf_inverse = torch.distributions.ComposeTransform(maf.flow_transforms()).inv
    torch.testing.assert_close(iaf_forward(v), maf_inverse(v))
    assert not torch.allclose(iaf_forward(v), v, atol=1e-3)


@pytest.mark.parametrize("name", ["realnvp", "glow"])
def test_presets_honour_device(name, device):
    model = get_model_class(name)(bounds=[0, 17], **TINY[name]).to(device)
    x = _digits(20).to(device)
    model.setup(x + torch.rand_like(x))
    assert model.log_prob(x + 0.5).device.type == device.type
    assert model.sample(3).device.type == device.type


# Variational dequantization: y ~ flow, x = floor(y); guide q(y | x) on the bin of x.

def _variational(input_dim: int = 5):
    model = _tiny("nsf", input_dim, dequantization="variational")
    model.setup(torch.randint(0, 17, (30, input_dim)).double())
    return model


def test_dequantizer_transforms_invert_and_log_dets_match_autograd():
    model = _variational()
    x = torch.randint(0, 17, (1, 5)).double()  # one image: the transforms are conditioned on it
    transforms = model.dequantizer(x).transforms
    _check_transforms(transforms, torch.randn(1, 5, dtype=torch.float64), "dequantizer")


def test_dequantizer_is_a_density_on_the_bin_of_x():
    torch.manual_seed(0)
    dequantizer = Dequantizer(2, 0, 17, hidden_dims=[8]).double()
    with torch.no_grad():
        for param in dequantizer.parameters():  # away from the start, still smooth enough for the quadrature
            param.add_(0.1 * torch.randn_like(param))
        x = torch.tensor([[3.0, 16.0]], dtype=torch.float64)
        q = dequantizer(x)
        y = q.sample((500,))
        assert torch.equal(y.floor(), x.expand_as(y))  # every draw stays in the bin
        assert y.std(0).min() > 0.05  # and q is not a point mass
        grid = (torch.arange(400, dtype=torch.float64) + 0.5) / 400  # midpoint rule on [0, 1)^2
        mass = q.log_prob(x + torch.cartesian_prod(grid, grid)).exp().mean()
    assert abs(float(mass) - 1.0) < 1e-3


def test_variational_dequantization_fits_scores_and_draws_integer_images(tmp_path):
    x, val = _digits(40), load_dataset("digits", "val").x[:10]
    torch.manual_seed(0)
    model = get_model_class("nsf")(bounds=[0, 17], dequantization="variational", **TINY["nsf"])
    assert model.capabilities.likelihood == "bound" and model.capabilities.data == "discrete"
    ppl_dgm.fit(model, x, val=val, epochs=2, batch_size=20, progress=False, seed=0)
    score = ppl_dgm.log_likelihood(model, val, num_samples=8)
    assert score.kind == "estimate" and torch.isfinite(score.per_sample).all()
    draws = model.sample(6)
    model.check_data(draws)  # integers 0..16
    ppl_dgm.save(model, tmp_path / "ckpt")
    loaded = ppl_dgm.load(tmp_path / "ckpt")
    again = ppl_dgm.log_likelihood(loaded, val, num_samples=8)
    assert torch.equal(again.per_sample, score.per_sample)
    with pytest.raises(ValueError, match="no exact log_prob"):
        model.log_prob(val)


@pytest.mark.parametrize("kwargs,match", [
    ({}, "integer bounds"),
    ({"bounds": [0, 16.5]}, "integer bounds"),
])
def test_variational_dequantization_needs_integer_bounds(kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_model_class("maf")(dequantization="variational", **kwargs)


def test_variational_dequantization_rejects_non_integer_data():
    model = get_model_class("maf")(bounds=[0, 17], dequantization="variational", **TINY["maf"])
    with pytest.raises(ValueError, match="integers"):
        ppl_dgm.log_likelihood(model, torch.full((2, 64), 0.5), num_samples=2)
