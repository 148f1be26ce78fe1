"""The engine registry: models name their engine, callers override it, every engine runs in the one loop
and checkpoints its own state."""

import pytest
import torch

import ppl_dgm
from ppl_dgm.infer import Engine, get_engine_class, list_engines, register_engine
from ppl_dgm.models import GMM, VAE

from helpers import DiagonalGaussian


@register_engine("test-momentum")
class MomentumEngine(Engine):
    """Exact-likelihood fit by SGD with momentum; counts its steps (state a resume must restore)."""

    unit = "nats per example"

    def __init__(self, model, *, momentum: float = 0.9, **common):
        super().__init__(model, **common)
        self.momentum = momentum

    def prepare(self, first_batch):
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.lr, momentum=self.momentum)
        self.steps = 0

    def step(self, batch, dataset_size):
        loss = -self.model.log_prob(batch["x"]).mean()
        self.steps += 1
        return {"nll": self.update(loss, self.optimizer), "steps": float(self.steps)}

    def validation_loss(self, batch):
        return float(-self.model.log_prob(batch["x"]).mean())

    def state_dict(self):
        return {"optimizer": self.optimizer.state_dict(), "steps": self.steps}

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = state["steps"]


class MomentumGaussian(DiagonalGaussian):
    default_engine = "test-momentum"


def test_the_model_names_its_engine_and_the_caller_may_override_it():
    x = torch.randn(60, 2) + 3
    result = ppl_dgm.fit(MomentumGaussian(2), x, epochs=3, batch_size=60, lr=0.05, progress=False)
    assert result.engine == "test-momentum" and result.unit == "nats per example"
    assert result.history["steps"] == [1.0, 2.0, 3.0] and result.train_loss == result.history["nll"]
    assert result.train_loss[-1] < result.train_loss[0]
    overridden = ppl_dgm.fit(MomentumGaussian(2), x, engine="svi", epochs=1, progress=False)
    assert overridden.engine == "svi" and list(overridden.history) == ["loss"]
    assert "test-momentum" in list_engines() and get_engine_class("TEST-momentum") is MomentumEngine


def test_engine_options_pass_through_and_unknown_ones_are_named():
    x = torch.randn(30, 2)
    ppl_dgm.fit(MomentumGaussian(2), x, epochs=1, momentum=0.5, progress=False)
    with pytest.raises(ValueError, match=r"'test-momentum' engine takes no option\(s\) objective; its options are "
                                         r"lr, max_grad_norm, momentum, weight_decay"):
        ppl_dgm.fit(MomentumGaussian(2), x, epochs=1, objective="iwae", progress=False)
    with pytest.raises(ValueError, match="unknown engine 'nope'; known engines: adversarial, contrastive"):
        ppl_dgm.fit(DiagonalGaussian(2), x, engine="nope")


def test_resume_restores_the_engine_state_exactly(tmp_path):
    x = torch.randn(80, 2) * 2 + 3
    whole = ppl_dgm.fit(MomentumGaussian(2), x, epochs=8, batch_size=80, lr=0.02, seed=1, progress=False)
    ppl_dgm.fit(MomentumGaussian(2), x, epochs=4, batch_size=80, lr=0.02, seed=1, progress=False,
                checkpoint_dir=tmp_path)
    resumed = ppl_dgm.fit(MomentumGaussian(2), x, epochs=8, batch_size=80, lr=0.02, progress=False,
                          checkpoint_dir=tmp_path, resume=True)
    assert resumed.history["steps"] == [float(s) for s in range(1, 9)]  # the step counter came back
    # with the momentum buffers restored, the resumed epochs follow the uninterrupted run
    assert resumed.train_loss == pytest.approx(whole.train_loss, rel=1e-6)
    with pytest.raises(ValueError, match="holds the state of the 'test-momentum' engine, not 'svi'"):
        ppl_dgm.fit(MomentumGaussian(2), x, engine="svi", epochs=9, progress=False, checkpoint_dir=tmp_path,
                    resume=True)


def test_estimators_fit_by_their_own_em_unless_told_otherwise():
    x = torch.randn(200, 2)
    x[:100] += 6
    result = ppl_dgm.fit(GMM(2, random_state=0), x, val=x[:50], progress=False)
    assert result.engine == "em" and result.train_loss == sorted(result.train_loss, reverse=True)
    assert len(result.history["val_nll"]) == 1
    with pytest.raises(ValueError, match="epochs, lr do not apply: drop them, or pass engine='svi'"):
        ppl_dgm.fit(GMM(2), x, epochs=10, lr=0.1)
    with pytest.raises(TypeError, match="VAE has no EM/closed-form fit"):
        ppl_dgm.fit(VAE(hidden_dims=(4,), latent_dim=2), torch.zeros(3, 64), engine="em")
    with pytest.raises(ValueError, match="starts again from its initialization"):
        ppl_dgm.fit(GMM(2), x, resume=True, checkpoint_dir="unused")


def test_registering_engines_is_checked():
    with pytest.raises(TypeError, match="needs an Engine subclass"):
        register_engine("odd")(object)
    with pytest.raises(ValueError, match="the engine name 'svi' belongs to ppl_dgm.infer.svi:SVIEngine"):
        register_engine("svi")(MomentumEngine)
