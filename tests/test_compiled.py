"""The compiled SVI step (`ppl_dgm.infer.compiled`): same losses and gradients as eager, fresh draws, fallbacks."""

import copy
import gc
import warnings
import weakref

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import autoguide

import ppl_dgm
from ppl_dgm import GenerativeModel, X, data_plate
from ppl_dgm.datasets import load_dataset
from ppl_dgm.infer import compiled as compiled_module
from ppl_dgm.infer.compiled import RECORDED, CompiledObjective
from ppl_dgm.infer.objectives import ELBO, RenyiELBO
from ppl_dgm.infer.svi import SVIEngine
from ppl_dgm.lazy import initialize_parameters
from ppl_dgm.models import VAE

_record = compiled_module.record


class NormalMean(GenerativeModel):
    """A user's story with an AutoNormal guide: ``mu ~ N(0, 1)``, ``x_n ~ N(mu, 1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.autoguide = autoguide.AutoNormal(self.model)

    def model(self, x=None, n=None):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(3, device=self.device), 1.0).to_event(1))
        with data_plate(x, n):
            return pyro.sample(X, dist.Normal(mu, 1.0).to_event(1), obs=x)

    def guide(self, x=None, n=None):
        return self.autoguide(x, n)


class SideEffect(NormalMean):
    """The guide's scale changes with a Python counter on every run: a trace would freeze it."""

    def __init__(self) -> None:
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(3))
        self.runs = 0

    def guide(self, x=None, n=None):
        self.runs += 1
        pyro.sample("mu", dist.Normal(self.loc, 1.0 / self.runs).to_event(1))


class Branching(NormalMean):
    """The guide branches on the value of a draw: data-dependent control flow a trace would freeze."""

    def __init__(self) -> None:
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(3))

    def guide(self, x=None, n=None):
        z = pyro.sample("mu", dist.Normal(self.loc, 1.0).to_event(1))
        return z if z.sum() > 0 else -z


class StopGradient(NormalMean):
    """The guide's scale is a statistic of the data around its location computed under ``torch.no_grad``: the
    recorded graph switches grad mode (so it is replayed by Python, not TorchScript)."""

    def __init__(self) -> None:
        super().__init__()
        self.loc = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 3))

    def guide(self, x=None, n=None):
        with torch.no_grad():
            scale = (x - self.loc).std() + 0.5
        pyro.sample("mu", dist.Normal(self.loc, scale).to_event(1))


class CountingBuffer(NormalMean):
    """Counts its guide's runs in a tensor buffer, written in place (a side effect the replay must repeat) and,
    with ``read=True``, read back as a Python number (which a recording would freeze)."""

    def __init__(self, read: bool = False) -> None:
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(3))
        self.register_buffer("runs", torch.zeros((), dtype=torch.long))
        self.read = read

    def guide(self, x=None, n=None):
        self.runs.add_(1)
        scale = 1.0 + 1.0 / int(self.runs) if self.read else 1.0
        pyro.sample("mu", dist.Normal(self.loc, scale).to_event(1))


class MaskedBatch(NormalMean):
    """The guide's scale is the fraction of rows with a positive first column: a size that depends on the data."""

    def __init__(self) -> None:
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(3))

    def guide(self, x=None, n=None):
        positive = x[x[:, 0] > 0]
        pyro.sample("mu", dist.Normal(self.loc, 0.5 + positive.shape[0] / x.shape[0]).to_event(1))


class ListedBatch(NormalMean):
    """The guide reads a statistic of the batch into Python with ``tolist``."""

    def __init__(self) -> None:
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(3))

    def guide(self, x=None, n=None):
        spread = x.std(0).tolist()
        pyro.sample("mu", dist.Normal(self.loc, 0.5 + max(spread)).to_event(1))


class PlainTensor(NormalMean):
    """The guide reads a tensor attribute that is neither a parameter nor a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(3))
        self.scale = torch.ones(3)

    def guide(self, x=None, n=None):
        pyro.sample("mu", dist.Normal(self.loc, self.scale).to_event(1))


class Tempered(NormalMean):
    """The guide's scale is a plain Python attribute: a recorded graph holds the value it had."""

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(3))
        self.temperature = temperature

    def guide(self, x=None, n=None):
        pyro.sample("mu", dist.Normal(self.loc, self.temperature).to_event(1))


def _digits(device, rows=40):
    return load_dataset("digits", "train", device=device).x[:rows]


CASES = {
    "vae-elbo": (lambda: VAE(hidden_dims=(16,), latent_dim=2), ELBO, False),
    "vae-iwae": (lambda: VAE(hidden_dims=(16,), latent_dim=2), lambda: RenyiELBO(0.0, 3), False),
    "autonormal-story": (NormalMean, ELBO, True),
    "no-grad-block": (StopGradient, ELBO, True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_compiled_loss_and_gradients_equal_eager_on_the_same_random_numbers(case, device):
    make_model, make_objective, gaussian = CASES[case]
    model = make_model().to(device)
    x = torch.randn(40, 3, device=device) + 1.0 if gaussian else _digits(device)
    batch = {X: x[:20]}
    initialize_parameters(model, batch)
    eager, compiled = make_objective(), CompiledObjective(make_objective())
    compiled.loss(model, batch, 40)  # traces and checks
    assert compiled.reason is None
    params = [p for p in model.parameters() if p.requires_grad]
    for seed in (1, 2):
        pyro.set_rng_seed(seed)
        a = eager.loss(model, batch, 40)
        grads_a = torch.autograd.grad(a, params, allow_unused=True)
        pyro.set_rng_seed(seed)
        b = compiled.loss(model, batch, 40)
        grads_b = torch.autograd.grad(b, params, allow_unused=True)
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-4)
        for ga, gb in zip(grads_a, grads_b, strict=True):
            assert (ga is None) == (gb is None)
            if ga is not None:
                torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-4)
    # fresh draws on every replay: the same stream as eager, so the same distribution of the estimate
    losses = torch.stack([compiled.loss(model, batch, 40).detach() for _ in range(4)])
    assert len(set(losses.tolist())) == 4


def test_a_story_with_python_side_effects_falls_back_to_eager_with_a_reason():
    model = SideEffect()
    x = torch.randn(30, 3)
    engine = SVIEngine(model, compile=True)
    engine.prepare({X: x})
    with pytest.warns(RuntimeWarning, match="compiled step disabled.*differs from the eager loss"):
        engine.step({X: x}, 30)
    assert "differs from the eager loss" in engine.compile_reason
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        engine.step({X: x}, 30)  # eager from now on, without a second warning
    assert engine.compile_reason.count("\n") == 0


def test_data_dependent_control_flow_falls_back_and_names_the_line():
    objective = CompiledObjective(ELBO())
    with pytest.warns(RuntimeWarning, match=r"data-dependent control flow at test_compiled.py:\d+"):
        loss = objective.loss(Branching(), {X: torch.randn(10, 3)}, 10)
    assert torch.isfinite(loss) and objective.reason.startswith("data-dependent control flow")


def test_pyro_elbos_and_compile_false_run_eagerly_and_say_why():
    x = torch.randn(30, 3)
    engine = SVIEngine(NormalMean(), objective=pyro.infer.Trace_ELBO(), compile=True)
    engine.prepare({X: x})
    assert "Pyro's ELBOs" in engine.compile_reason
    engine = SVIEngine(NormalMean(), compile=False)
    engine.prepare({X: x})
    assert engine.compile_reason == "compile=False" and isinstance(engine.loss_fn, ELBO)
    engine = SVIEngine(NormalMean())  # auto: the built-in ELBO is compiled
    engine.prepare({X: x})
    assert engine.compile_reason is None and isinstance(engine.loss_fn, CompiledObjective)


def test_compiled_and_eager_fits_take_the_same_steps(device):
    x = _digits(device, 250)  # batches of 100, 100 and 50 rows: two recorded signatures
    RECORDED.clear()
    results = {}
    for run in ("compiled, recorded", "compiled, kept graph", "eager"):
        torch.manual_seed(0)
        model = VAE(hidden_dims=(32,), latent_dim=4).to(device)
        results[run] = ppl_dgm.fit(model, x[:200], val=x[200:], epochs=3, batch_size=100, patience=None,
                                   progress=False, seed=0, compile=run != "eager")
    assert results["compiled, recorded"].compile_reason is None and results["eager"].compile_reason == "compile=False"
    eager = results["eager"]
    assert eager.train_loss[-1] < eager.train_loss[0]
    for run in ("compiled, recorded", "compiled, kept graph"):  # the same draws in the same order: the same fit
        np.testing.assert_allclose(results[run].train_loss, eager.train_loss, rtol=1e-5)
        np.testing.assert_allclose(results[run].val_loss, eager.val_loss, rtol=1e-5)


def _same_loss_and_gradients(objective, model, batch, dataset_size, seed=3):
    """Assert that ``objective`` gives the eager ELBO's loss and gradients for ``model`` on the same draws."""
    params = [p for p in model.parameters() if p.requires_grad]
    results = []
    for loss_fn in (objective, ELBO()):
        pyro.set_rng_seed(seed)
        loss = loss_fn.loss(model, batch, dataset_size)
        results.append((loss.detach(), torch.autograd.grad(loss, params)))
    (loss, grads), (eager_loss, eager_grads) = results
    torch.testing.assert_close(loss, eager_loss)
    for grad, eager_grad in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(grad, eager_grad)


def test_a_buffer_read_as_a_python_number_falls_back_and_names_the_line():
    objective = CompiledObjective(ELBO())
    with pytest.warns(RuntimeWarning, match=r"data-dependent control flow at test_compiled.py:\d+"):
        objective.loss(CountingBuffer(read=True), {X: torch.randn(10, 3)}, 10)


def test_writes_into_buffers_happen_once_per_step_as_in_eager():
    x = torch.randn(30, 3)
    counts = {}
    for compile in (True, False):
        model = CountingBuffer()
        engine = SVIEngine(model, compile=compile)
        engine.prepare({X: x})
        model.runs.zero_()
        for _ in range(3):
            engine.step({X: x}, 30)
        counts[compile] = int(model.runs)
        if compile:
            assert engine.compile_reason is None
    assert counts == {True: 3, False: 3}


def test_a_second_model_reuses_the_recorded_graph_with_its_own_parameters(monkeypatch):
    RECORDED.clear()
    records = []
    monkeypatch.setattr(compiled_module, "record", lambda *args: records.append(1) or _record(*args))
    batch = {X: _digits("cpu", 20)}
    first = VAE(hidden_dims=(16,), latent_dim=2)
    initialize_parameters(first, batch)
    CompiledObjective(ELBO()).loss(first, batch, 40)
    second = copy.deepcopy(first)
    with torch.no_grad():
        for p in second.parameters():
            p.add_(0.1 * torch.randn_like(p))
    objective = CompiledObjective(ELBO())
    objective.loss(second, batch, 40)
    assert len(records) == 1 and objective.reason is None  # checked and reused, not recorded again
    _same_loss_and_gradients(objective, second, batch, 40)
    first.zero_grad(set_to_none=True)
    objective.loss(second, batch, 40).backward()
    assert all(p.grad is None for p in first.parameters())  # the replay reads the second model's parameters


def test_a_kept_graph_that_no_longer_matches_the_story_is_recorded_again(monkeypatch):
    RECORDED.clear()
    records = []
    monkeypatch.setattr(compiled_module, "record", lambda *args: records.append(1) or _record(*args))
    x = torch.randn(20, 3)
    first = Tempered(1.0)
    initialize_parameters(first, {X: x})
    CompiledObjective(ELBO()).loss(first, {X: x}, 20)
    second = copy.deepcopy(first)
    second.temperature = 3.0  # the kept graph holds 1.0: its replay disagrees with the eager loss
    objective = CompiledObjective(ELBO())
    objective.loss(second, {X: x}, 20)
    assert len(records) == 2 and objective.reason is None
    _same_loss_and_gradients(objective, second, {X: x}, 20)


def test_without_torchscript_the_graph_is_replayed_by_python(monkeypatch):
    RECORDED.clear()

    def unavailable(*args, **kwargs):
        raise RuntimeError("torch.jit.trace is gone")

    monkeypatch.setattr(torch.jit, "trace", unavailable)
    batch = {X: _digits("cpu", 20)}
    model = VAE(hidden_dims=(16,), latent_dim=2)
    initialize_parameters(model, batch)
    objective = CompiledObjective(ELBO())
    objective.loss(model, batch, 40)
    assert objective.reason is None
    _same_loss_and_gradients(objective, model, batch, 40)


def test_a_kept_graph_keeps_no_fitted_model_alive():
    RECORDED.clear()
    model = VAE(hidden_dims=(16,), latent_dim=2)
    result = ppl_dgm.fit(model, _digits("cpu", 40), epochs=1, batch_size=20, patience=None, progress=False)
    assert result.compile_reason is None and len(RECORDED._graphs) == 1
    parameter = weakref.ref(next(model.parameters()))
    del model
    gc.collect()
    assert parameter() is None


@pytest.mark.parametrize("story, what", [(MaskedBatch, "shape"), (ListedBatch, "control flow")])
def test_values_of_the_batch_read_into_python_fall_back_and_name_the_line(story, what):
    objective = CompiledObjective(ELBO())
    with pytest.warns(RuntimeWarning, match=rf"data-dependent {what} at test_compiled.py:\d+"):
        objective.loss(story(), {X: torch.randn(10, 3)}, 10)


def test_a_graph_reading_a_plain_tensor_attribute_is_used_but_not_kept():
    RECORDED.clear()
    model = PlainTensor()
    x = torch.randn(20, 3)
    result = ppl_dgm.fit(model, x, epochs=1, batch_size=20, patience=None, progress=False)
    assert result.compile_reason is None and not RECORDED._graphs  # a later model would read this one's tensor


def test_a_model_whose_check_fails_is_not_kept_alive():
    RECORDED.clear()
    x = torch.randn(20, 3)
    ppl_dgm.fit(CountingBuffer(), x, epochs=1, batch_size=20, patience=None, progress=False)
    assert len(RECORDED._graphs) == 1
    second = CountingBuffer(read=True)  # the kept graph disagrees, and recording refuses int(buffer)
    with pytest.warns(RuntimeWarning, match="data-dependent control flow"):
        ppl_dgm.fit(second, x, epochs=1, batch_size=20, patience=None, progress=False)
    parameter = weakref.ref(second.loc)
    del second
    gc.collect()
    assert parameter() is None


def test_a_failing_replay_inside_a_no_grad_block_leaves_gradients_on():
    model, x = StopGradient(), torch.randn(20, 3)
    initialize_parameters(model, {X: x})
    objective = CompiledObjective(ELBO())
    objective.loss(model, {X: x}, 20)
    replay = next(iter(objective._replays.values()))
    with pytest.raises(RuntimeError):
        replay(torch.randn(20, 4))  # a batch the recorded shapes do not fit
    assert torch.is_grad_enabled()
