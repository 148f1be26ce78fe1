"""The compiled SVI step (`ppl_dgm.infer.compiled`): same losses and gradients as eager, fresh draws, fallbacks."""

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import autoguide

import ppl_dgm
from ppl_dgm import GenerativeModel, X, data_plate
from ppl_dgm.datasets import load_dataset
from ppl_dgm.infer.compiled import CompiledObjective
from ppl_dgm.infer.objectives import ELBO, RenyiELBO
from ppl_dgm.infer.svi import SVIEngine
from ppl_dgm.lazy import initialize_parameters
from ppl_dgm.models import VAE


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


def _digits(device, rows=40):
    return load_dataset("digits", "train", device=device).x[:rows]


CASES = {
    "vae-elbo": (lambda: VAE(hidden_dims=(16,), latent_dim=2), ELBO, False),
    "vae-iwae": (lambda: VAE(hidden_dims=(16,), latent_dim=2), lambda: RenyiELBO(0.0, 3), False),
    "autonormal-story": (NormalMean, ELBO, True),
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


def test_fits_with_and_without_compilation_reach_the_same_figure(device):
    x = _digits(device, 250)  # batches of 100, 100 and 50 rows: two traced signatures
    results = []
    for compile in (True, False):
        torch.manual_seed(0)
        model = VAE(hidden_dims=(32,), latent_dim=4).to(device)
        results.append(ppl_dgm.fit(model, x[:200], val=x[200:], epochs=3, batch_size=100, patience=None,
                                   progress=False, seed=0, compile=compile))
    compiled, eager = results
    assert compiled.compile_reason is None and eager.compile_reason == "compile=False"  # what the result reports
    assert compiled.train_loss[-1] < compiled.train_loss[0]
    assert abs(compiled.train_loss[-1] - eager.train_loss[-1]) < 0.01 * abs(eager.train_loss[-1])
    assert abs(compiled.val_loss[-1] - eager.val_loss[-1]) < 0.01 * abs(eager.val_loss[-1])
