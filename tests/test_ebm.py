"""The energy-based model: its story, Langevin dynamics, and the contrastive-divergence engine."""

import math

import pyro
import pytest
import torch
from pyro import poutine

import ppl_dgm
from ppl_dgm import io
from ppl_dgm.datasets import load_dataset
from ppl_dgm.infer.contrastive import ContrastiveEngine
from ppl_dgm.models.energy import EBM, langevin
from ppl_dgm.models.energy.ebm import ENERGY

TINY = {"hidden_dims": [4, 8], "sample_steps": 5}


def _digits(n: int, device, split: str = "val") -> torch.Tensor:
    return load_dataset("digits", split, device=device).x[:n]


@pytest.mark.parametrize("network", ["conv", "mlp"])
def test_story_adds_the_factor_minus_energy(network, device):
    model = EBM(network=network, hidden_dims=[4, 8]).to(device)
    x = _digits(6, device)
    trace = poutine.trace(model.model).get_trace(x)
    expected = -model.energy(model.to_unit(x))
    trace.compute_log_prob()
    torch.testing.assert_close(trace.nodes[ENERGY]["log_prob"], expected)
    torch.testing.assert_close(trace.log_prob_sum(), expected.sum())
    assert trace.nodes["x"]["is_observed"] and torch.equal(trace.nodes["x"]["value"], x)
    assert model.capabilities.likelihood == "none" and model.default_engine == "contrastive"


def test_unit_scaling_round_trips_and_spans_minus_one_to_one():
    model = EBM(**TINY)
    x = torch.arange(17.0).repeat(4)[:64].unsqueeze(0)
    u = model.to_unit(x)
    assert float(u.min()) == -1.0 and float(u.max()) == 1.0
    torch.testing.assert_close(model.from_unit(u), x)


def test_langevin_descends_and_samples_a_known_quadratic_energy():
    torch.manual_seed(0)
    mean = torch.tensor([1.0, -2.0])

    def energy(x):  # the energy of N(mean, I)
        return 0.5 * (x - mean).pow(2).sum(-1)

    start = torch.full((4000, 2), 5.0)
    descended = langevin(energy, start, steps=50, step_size=0.1, noise=0.0)
    assert float(energy(descended).max()) < 0.01 * float(energy(start).min())
    step = 0.01  # unadjusted Langevin: noise sqrt(2 step) targets exp(-E) up to an O(step) bias
    draws = langevin(energy, start, steps=1500, step_size=step, noise=math.sqrt(2 * step))
    torch.testing.assert_close(draws.mean(0), mean, atol=0.1, rtol=0)
    torch.testing.assert_close(draws.var(0), torch.ones(2), atol=0.1, rtol=0)
    clamped = langevin(energy, start, steps=50, step_size=0.1, noise=0.0, bounds=(2.0, 3.0))
    assert float(clamped.min()) == 2.0 and float(clamped.max()) == 2.0


def test_model_langevin_leaves_no_gradient_in_the_parameters_and_lowers_the_energy():
    model = EBM(**TINY)
    start = model.noise(50)
    with torch.no_grad():  # as ppl_dgm.draw calls it
        end = model.langevin(start, steps=30, step_size=0.05, noise=0.0)
    assert all(p.grad is None for p in model.parameters())
    assert float(end.abs().max()) <= 1.0
    with torch.no_grad():
        assert float(model.energy(end).mean()) < float(model.energy(start).mean())


def test_draw_and_predictive_give_data_in_range(device):
    model = EBM(**TINY).to(device)
    samples = ppl_dgm.draw(model, 7)
    assert samples.shape == (7, 64) and samples.dtype == model.dtype and samples.device.type == device.type
    assert float(samples.min()) >= 0 and float(samples.max()) <= 16
    model.check_data(samples)
    predictive = pyro.infer.Predictive(model.model, num_samples=3)(n=5)
    assert predictive["x"].shape == (3, 5, 64)
    assert ppl_dgm.draw(model.double(), 2).dtype == torch.float64


def test_bad_arguments_and_data_are_clear_errors():
    with pytest.raises(ValueError, match="square"):
        EBM(input_dim=10)
    with pytest.raises(ValueError, match="network"):
        EBM(network="resnet")
    with pytest.raises(ValueError, match=r"\[0, 16\]"):
        EBM(**TINY).check_data(torch.full((2, 64), 17.0))
    with pytest.raises(ValueError, match="shape"):
        EBM(**TINY).check_data(torch.zeros(2, 63))
    with pytest.raises(TypeError, match="lacks to_unit, energy, noise, langevin"):
        ContrastiveEngine(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="fresh"):
        ContrastiveEngine(EBM(**TINY), fresh=1.5)
    with pytest.raises(ValueError, match="likelihood"):
        ppl_dgm.log_likelihood(EBM(**TINY), _digits(3, "cpu"))


def test_replay_buffer_mixes_a_share_fresh_of_noise():
    engine = ContrastiveEngine(EBM(**TINY), buffer_size=50, fresh=0.05)
    engine.prepare({})
    engine.buffer = torch.arange(50.0).unsqueeze(-1).expand(50, 64) + 2.0  # every row outside the noise's [-1, 1]
    points, index, is_fresh = engine.starts(20000)
    assert abs(float(is_fresh.float().mean()) - 0.05) < 5 * math.sqrt(0.05 * 0.95 / 20000)
    assert float(points[is_fresh].abs().max()) <= 1.0
    assert torch.equal(points[~is_fresh], engine.buffer[index[~is_fresh]])
    negatives = engine.negatives(10)  # the chains' ends go back into the buffer
    assert all(any(torch.equal(row, kept) for kept in engine.buffer) for row in negatives)


def _state(engine: ContrastiveEngine) -> list[torch.Tensor]:
    return [p.detach().clone() for p in engine.model.parameters()] + [engine.buffer.clone()]


def test_engine_state_round_trip_resumes_identically(tmp_path):
    x = _digits(20, "cpu", "train")
    torch.manual_seed(1)
    engine = ContrastiveEngine(EBM(**TINY), buffer_size=30, steps=3, lr=1e-2)
    engine.prepare({"x": x[:10]})
    for rows in (x[:10], x[10:]):
        engine.step({"x": rows}, 20)
    io.save(engine.model, tmp_path)
    io.save_training_state(tmp_path, engine.name, engine.state_dict(), {})
    torch.manual_seed(7)
    continued = [engine.step({"x": x[:10]}, 20), engine.step({"x": x[10:]}, 20)]

    resumed = ContrastiveEngine(EBM(**TINY), buffer_size=30, steps=3, lr=1e-2)
    resumed.prepare({"x": x[:10]})
    io.load_weights(resumed.model, tmp_path)
    resumed.load_state_dict(io.load_training_state(tmp_path, "contrastive")[0])
    torch.manual_seed(7)
    assert [resumed.step({"x": x[:10]}, 20), resumed.step({"x": x[10:]}, 20)] == continued
    for a, b in zip(_state(engine), _state(resumed), strict=True):
        assert torch.equal(a, b)


def test_fit_runs_the_contrastive_engine_and_validates_by_the_frechet_distance(tmp_path):
    model = EBM(**TINY)
    x = _digits(20, "cpu", "train")
    result = ppl_dgm.fit(model, x, val=_digits(10, "cpu"), epochs=2, batch_size=10, progress=False, seed=0,
                         steps=2, buffer_size=20, checkpoint_dir=tmp_path)
    assert result.engine == "contrastive" and result.epochs_run == 2 and len(result.val_loss) == 2
    assert all(v > 0 for v in result.val_loss) and result.best_val_loss == min(result.val_loss)
    assert set(result.history) == {"loss", "energy_data", "energy_samples"}
    assert all(math.isfinite(v) for values in result.history.values() for v in values)
    loaded = ppl_dgm.load(tmp_path)
    torch.testing.assert_close(loaded.energy(loaded.to_unit(x)), model.energy(model.to_unit(x)), rtol=0, atol=0)


@pytest.mark.slow
def test_a_short_fit_gives_digits_lower_energy_than_noise():
    torch.manual_seed(0)
    model = EBM()
    ppl_dgm.fit(model, load_dataset("digits", "train").x, epochs=15, batch_size=100, progress=False, seed=0)
    test = load_dataset("digits", "test").x
    with torch.no_grad():
        energy_test = model.energy(model.to_unit(test))
        energy_noise = model.energy(model.noise(len(test)))
    # the energy's scale is arbitrary (unnormalized): measure the gap in units of the groups' spread
    gap = float(energy_noise.mean() - energy_test.mean())
    assert gap > 3 * max(float(energy_test.std()), float(energy_noise.std()))
    assert float((energy_test[:, None] < energy_noise[None, :]).float().mean()) > 0.99
