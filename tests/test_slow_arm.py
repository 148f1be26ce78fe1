"""Slow tier (``pytest -m slow``): the ARM trained to its quality target on the digits."""

import pytest
import torch

import ppl_dgm
from ppl_dgm.datasets import load_dataset
from ppl_dgm.models.autoregressive.arm import ARM


@pytest.mark.slow
def test_arm_with_default_settings_reaches_80_nats_on_the_digits_test_split():
    """The settings of examples/arm_digits.py (about 4 minutes of CPU time on one core)."""
    splits = {name: load_dataset("digits", name).x for name in ("train", "val", "test")}
    torch.manual_seed(0)
    model = ARM()
    result = ppl_dgm.fit(model, splits["train"], val=splits["val"], epochs=300, batch_size=50, lr=1e-3,
                         patience=30, seed=0, progress=False)
    test = ppl_dgm.log_likelihood(model, splits["test"])
    print(f"best epoch {result.best_epoch}, validation {result.best_val_loss:.2f}, test {test.nll:.2f} nats")
    assert test.kind == "exact" and test.num_samples == 1
    assert test.nll <= 80.0
    assert test.stderr < 1.0
