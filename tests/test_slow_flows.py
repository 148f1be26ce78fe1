"""The best density flow reaches its digits target (issue 7, item 4): test NLL bound <= 94 nats/image."""

import pytest
import torch

import ppl_dgm
from ppl_dgm.datasets import load_dataset
from ppl_dgm.models import get_model_class

pytestmark = pytest.mark.slow

BEST = ("nsf", {"bounds": [0, 17], "num_layers": 3, "bins": 8, "hidden_dims": [256, 256], "dropout": 0.2})
FIT = {"epochs": 1000, "batch_size": 100, "lr": 1e-3, "weight_decay": 1e-4, "max_grad_norm": 100.0, "patience": 30}


def _fitted(dequantization: str):
    train, val = (load_dataset("digits", split).x for split in ("train", "val"))
    name, kwargs = BEST
    torch.manual_seed(0)
    model = get_model_class(name)(**kwargs, dequantization=dequantization)
    ppl_dgm.fit(model, train, val=val, seed=0, progress=False, **FIT)
    return model


def test_best_flow_reaches_the_digits_target():
    score = ppl_dgm.log_likelihood(_fitted("uniform"), load_dataset("digits", "test").x)
    assert score.kind == "bound" and score.per_sample.shape == (447,)
    assert score.nll <= 94.0, f"test NLL bound {score.nll:.2f} nats/image"


def test_variational_dequantization_reaches_the_digits_target():
    score = ppl_dgm.log_likelihood(_fitted("variational"), load_dataset("digits", "test").x, num_samples=1000)
    assert score.kind == "estimate" and score.num_samples == 1000
    assert score.nll <= 94.0, f"test NLL (importance-weighted, 1000 samples) {score.nll:.2f} nats/image"
