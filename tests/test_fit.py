"""ppl_dgm.fit: scaling, objectives, early stopping, failure handling, resuming."""

import pyro
import pyro.infer
import pytest
import torch

import ppl_dgm
from ppl_dgm.infer import ELBO, NonFiniteLossError, RenyiELBO, make_objective
from ppl_dgm.infer.svi import evaluate_loss
from ppl_dgm.models import VAE

from helpers import DiagonalGaussian, LinearGaussian


def test_minibatch_losses_average_to_the_full_data_loss():
    model = DiagonalGaussian(3)
    x = torch.randn(120, 3) * 2 + 1
    full = ELBO().loss(model, {"x": x}, 120)
    parts = [ELBO().loss(model, {"x": part}, 120) for part in x.split(30)]
    assert torch.allclose(torch.stack(parts).mean(), full, rtol=1e-6)
    assert torch.allclose(full, -model.log_prob(x).sum(), rtol=1e-6)


def test_elbo_equals_pyro_trace_elbo_with_the_same_draws():
    model = LinearGaussian(4, 2)
    x = torch.randn(50, 4)
    ours, pyros = [], []
    for objective, out in ((ELBO(), ours), (make_objective(pyro.infer.Trace_ELBO()), pyros)):
        torch.manual_seed(1)
        out.append(objective.loss(model, {"x": x[:10]}, dataset_size=50))
    assert torch.allclose(ours[0], pyros[0], rtol=1e-5)


def test_importance_weighted_bound_is_tighter_than_the_elbo():
    torch.manual_seed(0)
    model = VAE(hidden_dims=(32,), latent_dim=4)
    x = ppl_dgm.datasets.load_dataset("digits", "val").x
    elbo = evaluate_loss(model.eval(), ELBO(), {"x": x}, 350)
    iwae = evaluate_loss(model, RenyiELBO(0.0, 50), {"x": x}, 350)
    renyi = evaluate_loss(model, RenyiELBO(0.5, 50), {"x": x}, 350)
    assert iwae < renyi < elbo  # losses are negative bounds


def test_objective_names_and_bad_objectives():
    assert isinstance(make_objective("iwae"), RenyiELBO)
    assert make_objective("renyi", 7, alpha=0.3).alpha == 0.3
    with pytest.raises(ValueError, match="objective must be"):
        make_objective("elbow")
    with pytest.raises(ValueError, match="alpha"):
        RenyiELBO(alpha=1.0)
    with pytest.raises(ValueError, match="num_particles"):
        ELBO(0)


def test_fit_reduces_the_loss_and_reports_history():
    model = DiagonalGaussian(2)
    x = torch.randn(500, 2) * 0.3 + 4
    result = ppl_dgm.fit(model, x, epochs=30, batch_size=50, lr=0.1, progress=False)
    assert result.epochs_run == 30 and len(result.train_loss) == 30 and result.val_loss == []
    assert result.train_loss[-1] < result.train_loss[0] - 1
    assert torch.allclose(model.loc, torch.tensor([4.0, 4.0]), atol=0.1)


def test_early_stopping_restores_the_best_parameters():
    # Train and validation come from different distributions, so validation gets worse
    # once the model moves towards the training data: the best epoch is an early one.
    model = DiagonalGaussian(2)
    train = torch.randn(400, 2) + 5
    val = torch.randn(100, 2) + 1
    result = ppl_dgm.fit(model, train, val=val, epochs=100, batch_size=100, lr=0.05, patience=5, progress=False)
    assert result.stopped_early and result.epochs_run < 100
    assert result.best_epoch == min(range(len(result.val_loss)), key=result.val_loss.__getitem__)
    restored = -float(model.log_prob(val).mean().detach())
    assert restored == pytest.approx(result.best_val_loss, rel=1e-5)
    assert restored < result.val_loss[-1]


class _FailAtStep:
    """An objective that returns NaN at a chosen step, recording the parameters before it."""

    def __init__(self, fail_at: int) -> None:
        self.calls, self.fail_at, self.before = 0, fail_at, None

    def loss(self, model, batch, dataset_size):
        loss = ELBO().loss(model, batch, dataset_size)
        self.calls += 1
        if self.calls == self.fail_at:
            self.before = {k: v.clone() for k, v in model.state_dict().items()}
            return loss * float("nan")
        return loss


def test_non_finite_loss_names_epoch_and_step_and_keeps_parameters():
    model = DiagonalGaussian(2)
    objective = _FailAtStep(fail_at=7)
    with pytest.raises(NonFiniteLossError, match=r"loss at epoch 2, step 2"):
        ppl_dgm.fit(model, torch.randn(100, 2), epochs=5, batch_size=20, objective=objective, progress=False)
    for key, value in model.state_dict().items():
        assert torch.equal(value, objective.before[key])


def test_failed_fit_leaves_the_checkpoint_intact(tmp_path):
    model = DiagonalGaussian(2)
    x = torch.randn(100, 2)
    ppl_dgm.fit(model, x, epochs=3, batch_size=20, progress=False, checkpoint_dir=tmp_path)
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(NonFiniteLossError):
        ppl_dgm.fit(model, x, epochs=6, batch_size=20, progress=False, checkpoint_dir=tmp_path,
                    checkpoint_every=1e-9, objective=_FailAtStep(fail_at=2), resume=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files


def test_resume_continues_from_the_saved_state(tmp_path):
    x = torch.randn(200, 2) + 3
    first = DiagonalGaussian(2)
    done = ppl_dgm.fit(first, x, epochs=4, batch_size=50, lr=0.05, progress=False, checkpoint_dir=tmp_path)
    again = DiagonalGaussian(2)
    resumed = ppl_dgm.fit(again, x, epochs=7, batch_size=50, lr=0.05, progress=False, checkpoint_dir=tmp_path,
                          resume=True)
    assert resumed.epochs_run == 7 and resumed.train_loss[:4] == done.train_loss
    assert len(resumed.train_loss) == 7
    # the resumed fit started from the saved weights: its first new epoch continues the descent
    assert resumed.train_loss[4] < done.train_loss[0]


@pytest.mark.parametrize("bad,match", [
    (torch.tensor([[1.0, float("nan")]]), "non-finite"),
    (torch.tensor([[1.0, float("inf")]]), "non-finite"),
    (torch.zeros(0, 2), "empty"),
    (torch.zeros(5, 3), r"expected \(N, 2\)"),
    ([[1.0, 2.0]], "must be a torch.Tensor"),
])
def test_bad_training_data_is_rejected(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ppl_dgm.fit(DiagonalGaussian(2), bad, epochs=1, progress=False)


@pytest.mark.parametrize("kwargs,match", [
    ({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"lr": -1.0}, "lr"),
    ({"resume": True}, "checkpoint_dir"), ({"val": torch.zeros(3, 5)}, r"expected \(N, 2\)"),
])
def test_bad_fit_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ppl_dgm.fit(DiagonalGaussian(2), torch.zeros(4, 2), progress=False, **kwargs)


def test_context_must_match_the_data():
    with pytest.raises(ValueError, match="rows"):
        ppl_dgm.fit(DiagonalGaussian(2), {"x": torch.zeros(4, 2), "y": torch.zeros(3)}, progress=False)
    with pytest.raises(ValueError, match="key 'x'"):
        ppl_dgm.fit(DiagonalGaussian(2), {"data": torch.zeros(4, 2)}, progress=False)


def test_fit_on_device(device):
    model = VAE(hidden_dims=(16,), latent_dim=2)
    x = ppl_dgm.datasets.load_dataset("digits", "val").x[:64]
    result = ppl_dgm.fit(model, x, val=x, epochs=2, batch_size=32, device=device, progress=False)
    assert model.device.type == device.type and len(result.val_loss) == 2


class _TwoComponentMixture(ppl_dgm.GenerativeModel):
    """A 1-D mixture whose assignment is enumerated by TraceEnum_ELBO (no guide latents)."""

    capabilities = ppl_dgm.Capabilities(likelihood="exact", discrete_latents=True)
    event_shape = (1,)

    def __init__(self):
        super().__init__()
        self.locs = torch.nn.Parameter(torch.tensor([-1.0, 1.0]))

    def model(self, x=None, n=None):
        with ppl_dgm.data_plate(x, n):
            k = pyro.sample("k", pyro.distributions.Categorical(torch.ones(2) / 2), infer={"enumerate": "parallel"})
            return pyro.sample("x", pyro.distributions.Normal(self.locs[k].unsqueeze(-1), 0.5).to_event(1), obs=x)


def test_trace_enum_elbo_trains_and_validates():
    x = torch.cat([torch.randn(100, 1) * 0.5 - 3.1, torch.randn(100, 1) * 0.5 + 2.9])
    model = _TwoComponentMixture()
    result = ppl_dgm.fit(model, x, val=x, epochs=60, batch_size=50, lr=0.1, progress=False,
                         objective=pyro.infer.TraceEnum_ELBO(max_plate_nesting=1))
    assert len(result.val_loss) == result.epochs_run
    assert torch.allclose(model.locs.detach().sort().values, torch.tensor([-3.1, 2.9]), atol=0.3)


def test_elbos_that_compute_their_own_gradients_are_refused():
    with pytest.raises(TypeError, match="no differentiable_loss"):
        make_objective(pyro.infer.TraceGraph_ELBO())


def test_training_objectives_honour_poutine_scale_and_evaluation_ignores_it():
    class Tempered(LinearGaussian):
        def model(self, x=None, n=None):
            with pyro.poutine.scale(scale=0.25):
                return super().model(x, n)

    plain, tempered = LinearGaussian(3, 1), Tempered(3, 1)
    tempered.load_state_dict(plain.state_dict())
    x = torch.randn(40, 3)
    losses = []
    for model in (plain, tempered):
        torch.manual_seed(2)
        losses.append(ELBO().loss(model, {"x": x}, 40))
    # the tempered loss scales every model site by 1/4, the guide's entropy term stays
    torch.manual_seed(2)
    weights = ppl_dgm.evaluation.log_importance_weights(plain, x, 1)
    assert not torch.allclose(losses[0], losses[1])
    evaluated = [ppl_dgm.log_likelihood(m, x, num_samples=5, seed=1).mean for m in (plain, tempered)]
    assert evaluated[0] == pytest.approx(evaluated[1], rel=1e-6)
    assert weights.local.shape == (1, 40)


def test_continuous_models_are_fitted_on_dequantized_integer_data():
    model = DiagonalGaussian(1)
    x = torch.full((400, 1), 3.0)  # integer-valued: the density is fitted to 3 + U[0, 1)
    ppl_dgm.fit(model, x, epochs=150, batch_size=100, lr=0.05, progress=False)
    assert float(model.loc.detach()) == pytest.approx(3.5, abs=0.05)
    assert float(torch.nn.functional.softplus(model.raw_scale.detach())) == pytest.approx((1 / 12) ** 0.5, abs=0.05)
