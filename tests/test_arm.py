"""ARM: causality of the masked network, exact normalization, sampling, the entropy-coding interface."""

import itertools

import pytest
import torch

import ppl_dgm
from ppl_dgm.core import Capabilities
from ppl_dgm.datasets import load_dataset
from ppl_dgm.models.autoregressive.arm import ARM
from ppl_dgm.nn.masked import MaskedConv2d, PixelCNN

TINY = {"image_shape": [8, 8], "channels": 8, "num_blocks": 2}  # a list, as a checkpoint's JSON gives it back


def _tiny(device, dtype=torch.float32, **kwargs) -> ARM:
    """A small ARM with a random (non-zero) logit bias, so that every parameter matters."""
    model = ARM(**{**TINY, **kwargs}).to(device, dtype)
    with torch.no_grad():
        model.position_bias.normal_()
    return model.eval()


def _digits(n: int, device) -> torch.Tensor:
    return load_dataset("digits", "val", device=device).x[:n]


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_masked_conv_sees_only_earlier_pixels(mask_type):
    conv = MaskedConv2d(1, 1, 5, mask_type, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    image = torch.zeros(1, 1, 5, 5)
    image[0, 0, 2, 2] = 1.0  # the centre pixel, raster index 12
    seen = conv(image)[0, 0].flatten() != 0  # outputs that the centre pixel reaches
    later = torch.arange(25) > 12
    assert bool(seen[later].all()) and not bool(seen[:12].any())
    assert bool(seen[12]) == (mask_type == "B")


@pytest.mark.parametrize("encoding,first_kernel_size", [("one_hot", None), ("scalar", 3), ("both", 5)])
def test_logits_of_a_pixel_do_not_depend_on_it_or_later_pixels(encoding, first_kernel_size, device):
    model = _tiny(device, encoding=encoding, first_kernel_size=first_kernel_size)
    x = _digits(4, device)
    logits = model.logits(x)
    for i in (0, 1, 9, 35, 63):
        changed = x.clone()
        changed[:, i:] = torch.randint(0, 17, changed[:, i:].shape, device=device).to(x.dtype)
        torch.testing.assert_close(model.logits(changed)[:, i], logits[:, i], rtol=0, atol=1e-5)
    earlier = x.clone()
    earlier[:, 8] = (earlier[:, 8] + 5) % 17  # the pixel above pixel 16 is within every kernel's reach
    assert not torch.allclose(model.logits(earlier)[:, 16], logits[:, 16])


def test_pixelcnn_output_shape():
    net = PixelCNN(3, 5, channels=4, num_blocks=1, first_kernel_size=3)
    assert net(torch.zeros(2, 3, 6, 7)).shape == (2, 5, 6, 7)


def test_probabilities_sum_to_one_over_all_images():
    model = _tiny("cpu", torch.float64, image_shape=(2, 2), num_levels=3)
    images = torch.tensor(list(itertools.product(range(3), repeat=4)), dtype=torch.float64)
    log_p = model.log_prob(images)
    assert log_p.shape == (81,)
    torch.testing.assert_close(torch.logsumexp(log_p, 0), torch.zeros((), dtype=torch.float64), rtol=0, atol=1e-10)


def test_samples_follow_the_distribution():
    model = _tiny("cpu", torch.float64, image_shape=(2, 2), num_levels=3)
    images = torch.tensor(list(itertools.product(range(3), repeat=4)), dtype=torch.float64)
    with torch.no_grad():
        probs = model.log_prob(images).exp()
    torch.manual_seed(1)
    draws = ppl_dgm.draw(model, 8000)
    counts = torch.bincount((draws @ torch.tensor([27.0, 9.0, 3.0, 1.0], dtype=torch.float64)).long(), minlength=81)
    total_variation = 0.5 * float((counts / 8000 - probs).abs().sum())
    assert total_variation < 0.08  # at most about 0.04 expected from 8,000 draws


def test_sample_shape_and_support(device):
    model = _tiny(device)
    samples = ppl_dgm.draw(model, 7)
    assert samples.shape == (7, 64) and samples.dtype == torch.float32 and samples.device.type == device.type
    assert bool((samples == samples.round()).all()) and float(samples.min()) >= 0 and float(samples.max()) <= 16
    model.check_data(samples)


def test_log_prob_is_the_sum_of_the_coding_steps(device):
    model = _tiny(device, dtype=torch.float64)
    x = _digits(5, device).double()
    symbols = model.to_symbols(x)
    assert symbols.dtype == torch.long and torch.equal(model.from_symbols(symbols), x)
    assert model.num_symbols == 17 and model.coding_steps() == 64
    total = torch.zeros(5, dtype=torch.float64, device=device)
    decoded = torch.zeros_like(symbols)
    with torch.no_grad():
        for step in range(model.coding_steps()):
            dims, log_probs = model.coding_log_probs(decoded, step)
            assert dims.tolist() == [step] and log_probs.shape == (5, 1, 17)
            torch.testing.assert_close(log_probs.logsumexp(-1), torch.zeros_like(log_probs[..., 0]))
            garbage = decoded.clone()
            garbage[:, step:] = torch.randint(0, 17, garbage[:, step:].shape, device=device)
            assert torch.equal(model.coding_log_probs(garbage, step)[1], log_probs)  # bit-identical
            decoded[:, dims] = symbols[:, dims]
            total += log_probs[:, 0].gather(-1, symbols[:, dims]).squeeze(-1)
        torch.testing.assert_close(total, model.log_prob(x), rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="step"):
        model.coding_log_probs(symbols, 64)


def test_log_likelihood_is_exact_and_matches_log_prob():
    model = _tiny("cpu")
    x = _digits(6, "cpu")
    assert model.capabilities == Capabilities(likelihood="exact", data="discrete")
    result = ppl_dgm.log_likelihood(model, x)
    assert result.kind == "exact" and result.num_samples == 1
    torch.testing.assert_close(result.per_sample, model.log_prob(x).double().detach())


def test_bad_data_is_rejected_with_a_clear_message():
    model = _tiny("cpu")
    x = _digits(3, "cpu")
    with pytest.raises(ValueError, match="integers"):
        model.check_data(x + 0.5)
    with pytest.raises(ValueError, match=r"0\.\.16"):
        model.to_symbols(x + 17)
    with pytest.raises(ValueError, match="shape"):
        model.check_data(x.reshape(3, 8, 8))


@pytest.mark.parametrize("kwargs", [{"image_shape": (8,)}, {"num_levels": 1}, {"encoding": "binary"},
                                    {"first_kernel_size": 4}, {"dropout": 1.0}])
def test_bad_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError):
        ARM(**kwargs)


def test_save_load_gives_identical_log_prob_and_samples(device, tmp_path):
    model = ARM(**TINY, encoding="both").to(device)
    x = _digits(40, device)
    result = ppl_dgm.fit(model, x[:30], val=x[30:], epochs=2, batch_size=10, progress=False, seed=0)
    assert result.epochs_run == 2
    ppl_dgm.save(model, tmp_path / "arm")
    loaded = ppl_dgm.load(tmp_path / "arm", device=device)
    assert type(loaded) is ARM and loaded.config == model.config
    assert torch.equal(loaded.log_prob(x), model.log_prob(x))
    draws = []
    for m in (model, loaded):
        torch.manual_seed(3)
        draws.append(ppl_dgm.draw(m, 4))
    assert torch.equal(draws[0], draws[1])


def test_fit_lowers_the_validation_nll():
    torch.manual_seed(0)
    model = ARM(**TINY)
    train, val = load_dataset("digits", "train").x[:200], _digits(50, "cpu")
    before = ppl_dgm.log_likelihood(model, val).nll
    ppl_dgm.fit(model, train, val=val, epochs=4, batch_size=50, lr=1e-2, progress=False, seed=0)
    assert ppl_dgm.log_likelihood(model, val).nll < before - 40
