"""IDF: integer bijection, exact discrete likelihood, mixture base, straight-through gradients, coding interface."""

import itertools
import math

import pytest
import torch

import ppl_dgm
from ppl_dgm.datasets import load_dataset
from ppl_dgm.models.flows.idf import IDF
from ppl_dgm.models.flows.idf_base import DiscretizedLogisticMixture
from ppl_dgm.models.flows.idf_flow import IntegerCoupling

TINY = {"hidden_dims": [16], "num_couplings": 3, "num_components": 3}


def _digits(n: int = 30, device="cpu", dtype=torch.float64) -> torch.Tensor:
    return load_dataset("digits", "val", device=device, dtype=dtype).x[:n]


def _scrambled(model: IDF, scale: float = 4.0) -> IDF:
    """``model`` with its translation networks' weights inflated, so that the translations are large."""
    with torch.no_grad():
        for name, param in model.flow.named_parameters():
            param.mul_(scale if name.endswith("weight") else 1.0)
    return model


@pytest.mark.parametrize("num_parts", [2, 3])
def test_flow_is_a_bijection_of_the_integers(num_parts, device):
    model = _scrambled(IDF(num_parts=num_parts, **TINY)).to(device).double().eval()  # eval: no dropout
    x = torch.randint(-40, 60, (200, 64), device=device).double()
    z = model.flow(x)
    assert (z != 0).any() and not torch.equal(z, x)  # a non-trivial map
    assert torch.equal(z, z.round())  # integers to integers
    assert torch.equal(model.flow.inverse(z), x)
    assert torch.equal(model.flow(model.flow.inverse(x)), x)  # onto: every integer vector has a preimage


def test_coupling_inverse_undoes_each_part_in_order():
    coupling = IntegerCoupling(dim=7, num_parts=3, hidden_dims=[8], centre=2.0)
    x = torch.randint(-5, 9, (50, 7)).double()
    coupling.double()
    with torch.no_grad():
        for net in coupling.nets:
            net[-1].weight.mul_(20.0)
    z = coupling(x)
    assert torch.equal(z[:, :2], x[:, :2])  # the first part passes unchanged
    assert not torch.equal(z[:, 2:], x[:, 2:])
    assert torch.equal(coupling.inverse(z), x)


def test_log_prob_sums_to_at_most_one_and_nearly_one_over_a_grid(device):
    model = IDF(input_dim=2, num_levels=3, num_parts=2, hidden_dims=[8], num_couplings=3, num_components=2)
    model = model.to(device).double().eval()
    grid = torch.tensor(list(itertools.product(range(-30, 31), repeat=2)), device=device, dtype=torch.float64)
    with torch.no_grad():
        total = model.log_prob(grid).exp().sum().item()
    assert total <= 1.0 + 1e-9
    assert total > 0.999  # the grid holds all but a sliver of the mass


def test_mixture_base_is_a_distribution_over_the_integers():
    generator = torch.Generator().manual_seed(1)
    logits, loc = torch.randn(4, 3, generator=generator).double(), 6 * torch.randn(4, 3, generator=generator).double()
    scale = torch.tensor([[0.05, 1.0, 3.0], [0.3, 0.3, 0.3], [2.0, 8.0, 0.5], [1.0, 1.0, 1.0]], dtype=torch.float64)
    base = DiscretizedLogisticMixture(logits, loc, scale)
    values = torch.arange(-400, 401, dtype=torch.float64).unsqueeze(-1)  # (801, 1) against batch (4,)
    log_p = base.log_prob(values)
    assert log_p.shape == (801, 4) and torch.isfinite(log_p).all()
    assert torch.allclose(log_p.exp().sum(0), torch.ones(4, dtype=torch.float64), atol=1e-12)
    # against the plain difference of sigmoids, mixed with the softmax weights
    v = values.unsqueeze(-1)
    plain = (torch.softmax(logits, -1) * (torch.sigmoid((v + 0.5 - loc) / scale)
                                          - torch.sigmoid((v - 0.5 - loc) / scale))).sum(-1)
    ok = plain > 1e-8
    assert torch.allclose(log_p[ok], plain[ok].log(), rtol=1e-9)
    table = base.log_prob_table(-5, 12)  # (4, 12), tails folded into -5 and 6
    assert torch.allclose(table.exp().sum(-1), torch.ones(4, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(table[:, 1:-1], log_p[400 - 4: 400 + 6].T, atol=1e-12)
    assert torch.allclose(table[:, 0].exp(), log_p[: 400 - 4].exp().sum(0), atol=1e-12)


def test_mixture_base_samples_follow_the_masses():
    base = DiscretizedLogisticMixture(torch.tensor([0.0, 1.0]), torch.tensor([-3.2, 4.4]), torch.tensor([0.4, 1.5]))
    draws = base.sample((100_000,))
    assert draws.shape == (100_000,) and torch.equal(draws, draws.round())
    values = torch.arange(-10, 15)
    freq = (draws.unsqueeze(-1) == values).double().mean(0)
    assert torch.allclose(freq, base.log_prob(values.float()).exp().double(), atol=4e-3)


def test_gradient_reaches_every_parameter_through_the_rounding():
    model = IDF(**TINY)
    (-model.log_prob(_digits(dtype=torch.float32)).mean()).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_coding_interface_matches_log_prob(device):
    model = _scrambled(IDF(**TINY), 2.0).to(device).double()
    x = _digits(device=device)
    assert model.training  # the coding methods switch dropout off themselves, and restore the mode
    symbols = model.to_symbols(x)
    assert symbols.dtype == torch.long and symbols.shape == x.shape
    assert int(symbols.min()) >= 0 and int(symbols.max()) < model.num_symbols
    decoded = model.from_symbols(symbols)
    assert decoded.dtype == torch.float64 and torch.equal(decoded, x)
    assert model.coding_steps() == 1
    dims, log_probs = model.coding_log_probs(symbols, 0)
    assert torch.equal(dims.cpu(), torch.arange(64)) and log_probs.shape == (30, 64, model.num_symbols)
    assert torch.allclose(log_probs.logsumexp(-1), torch.zeros((), dtype=torch.float64, device=device), atol=1e-12)
    _, from_zeros = model.coding_log_probs(torch.zeros_like(symbols), 0)
    assert torch.equal(from_zeros, log_probs)  # nothing decoded yet at step 0: the symbols must not matter
    code_length = log_probs.gather(-1, symbols.unsqueeze(-1)).squeeze(-1).sum(-1)
    assert model.training
    with torch.no_grad():
        assert (code_length - model.eval().log_prob(x)).abs().max() < 1e-6


def test_symbols_outside_the_alphabet_are_refused():
    model = IDF(num_symbols=8, **TINY)  # only the latent values 8 - 4 .. 8 + 3 can be coded; digits hold zeros
    with pytest.raises(ValueError, match=r"outside the alphabet 4\.\.11.*num_symbols"):
        model.to_symbols(_digits(dtype=torch.float32))


def test_samples_are_integers_the_model_can_score(device):
    model = _scrambled(IDF(**TINY)).to(device)
    samples = ppl_dgm.draw(model, 50)
    assert samples.shape == (50, 64) and samples.device.type == device.type
    assert torch.equal(samples, samples.round())
    model.check_data(samples)  # values outside 0..16 are allowed
    assert torch.isfinite(model.log_prob(samples)).all()


def test_check_data_rejects_non_integers():
    with pytest.raises(ValueError, match="integer"):
        ppl_dgm.log_likelihood(IDF(**TINY), torch.full((2, 64), 0.5))


@pytest.mark.parametrize("kwargs,match", [
    ({"num_parts": 1}, "num_parts"),
    ({"input_dim": 3, "num_parts": 4}, "num_parts"),
    ({"num_symbols": 1}, "num_symbols"),
    ({"num_components": 0}, "num_components"),
    ({"dropout": 1.0}, "dropout"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IDF(**kwargs)


def test_log_likelihood_is_exact_and_fitting_lowers_it():
    train, val = load_dataset("digits", "train").x[:300], _digits(100, dtype=torch.float32)
    model = IDF(**TINY)
    before = ppl_dgm.log_likelihood(model, val)
    assert before.kind == "exact"
    ppl_dgm.fit(model, train, epochs=5, batch_size=50, lr=3e-3, progress=False, seed=0)
    after = ppl_dgm.log_likelihood(model, val)
    assert after.nll < before.nll - 5.0
    assert math.isclose(after.bits_per_dim, after.nll / (64 * math.log(2)))


def test_save_load_gives_identical_outputs(tmp_path, device):
    model = IDF(**TINY, dropout=0.2).to(device)
    x = _digits(20, device=device, dtype=torch.float32)
    ppl_dgm.fit(model, x, epochs=2, batch_size=10, progress=False, seed=0)
    ppl_dgm.save(model, tmp_path / "ckpt")
    loaded = ppl_dgm.load(tmp_path / "ckpt", device=device)
    assert type(loaded) is IDF and loaded.config == model.config
    assert torch.equal(loaded.flow.permutations, model.flow.permutations)
    assert torch.equal(loaded.log_prob(x), model.log_prob(x))
    assert torch.equal(loaded.to_symbols(x), model.to_symbols(x))
    draws = []
    for m in (model, loaded):
        torch.manual_seed(5)
        draws.append(ppl_dgm.draw(m, 8))
    assert torch.equal(*draws)
