"""Checkpoints: safetensors + JSON, atomic, rebuilt from the registry, no pickle."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import ppl_dgm
from ppl_dgm import io
from ppl_dgm.datasets import load_dataset
from ppl_dgm.models import VAE

from helpers import LinearGaussian


def test_files_are_safetensors_and_json(tmp_path):
    io.save(VAE(hidden_dims=(8,), latent_dim=2), tmp_path)
    config = json.loads((tmp_path / io.CONFIG_FILE).read_text())
    assert config["model"] == "vae" and config["config"]["hidden_dims"] == [8]
    assert (tmp_path / io.WEIGHTS_FILE).read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle


def test_unregistered_user_models_load_when_their_module_is_imported(tmp_path):
    model = LinearGaussian(dim=3, latent_dim=1)
    io.save(model, tmp_path)
    loaded = io.load(tmp_path)
    assert isinstance(loaded, LinearGaussian) and torch.equal(loaded.weight, model.weight)


def test_unknown_classes_are_not_imported(tmp_path):
    io.save(LinearGaussian(3, 1), tmp_path)
    config = json.loads((tmp_path / io.CONFIG_FILE).read_text())
    config["class"] = "some_module_never_imported:Thing"
    (tmp_path / io.CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="not registered"):
        io.load(tmp_path)


def test_weights_from_another_configuration_are_refused(tmp_path):
    io.save(VAE(hidden_dims=(8,)), tmp_path / "a")
    io.save(VAE(hidden_dims=(8,), latent_dim=3), tmp_path / "b")
    os.replace(tmp_path / "b" / io.WEIGHTS_FILE, tmp_path / "a" / io.WEIGHTS_FILE)
    with pytest.raises(ValueError, match="not saved with this"):
        io.load(tmp_path / "a")


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint directory"):
        io.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="configuration"):
        io.load(tmp_path / "empty")


def test_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "file.bin"
    io.atomic_write(target, b"good")

    def broken_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(KeyboardInterrupt):
        io.atomic_write(target, b"half")
    assert target.read_bytes() == b"good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]  # no temporary left behind


def test_engine_state_round_trip(tmp_path):
    model = VAE(hidden_dims=(8,), latent_dim=2)
    x = ppl_dgm.datasets.load_dataset("digits", "val").x[:20]
    ppl_dgm.fit(model, x, epochs=2, batch_size=10, progress=False, checkpoint_dir=tmp_path)
    state, history = io.load_training_state(tmp_path, "svi")
    assert history["epochs_run"] == 2 and len(history["train_loss"]) == 2
    optimizer = torch.optim.AdamW(model.parameters())
    optimizer.load_state_dict(state["optimizer"])  # integer keys and tensors come back as they were
    saved = optimizer.state_dict()["state"]
    assert len(saved) == len(list(model.parameters())) and all("exp_avg" in s for s in saved.values())
    with pytest.raises(ValueError, match="'svi' engine, not 'adversarial'"):
        io.load_training_state(tmp_path, "adversarial")


def test_engine_state_keeps_nested_values(tmp_path):
    model = LinearGaussian()
    io.save(model, tmp_path)
    state = {"buffer": torch.arange(6.0).reshape(2, 3), "steps": 7, "nested": {3: [torch.ones(2), None, "a"]},
             "pair": (1.5, True)}
    io.save_training_state(tmp_path, "custom", state, {"epochs_run": 1})
    loaded, history = io.load_training_state(tmp_path, "custom")
    assert history == {"epochs_run": 1}
    assert torch.equal(loaded["buffer"], state["buffer"]) and loaded["steps"] == 7 and loaded["pair"] == (1.5, True)
    assert list(loaded["nested"]) == [3] and torch.equal(loaded["nested"][3][0], torch.ones(2))
    assert loaded["nested"][3][1:] == [None, "a"]
    with pytest.raises(TypeError, match="not object"):
        io.save_training_state(tmp_path, "custom", {"odd": object()}, {})


def test_non_json_constructor_arguments_are_a_clear_error(tmp_path):
    class Odd(LinearGaussian):
        def __init__(self, thing=None):
            super().__init__()

    with pytest.raises(TypeError, match="JSON-serializable"):
        io.save(Odd(thing=object()), tmp_path)


# Checkpoints written by ppl_dgm 0.1 before the zoo moved into one subpackage per family
# (``ppl_dgm.models.hmm`` -> ``ppl_dgm.models.classical.hmm``, ...), with the scores they gave then.
OLD_CHECKPOINTS = Path(__file__).parent / "data" / "checkpoints_0.1"


@pytest.mark.parametrize("name", ["gmm", "hmm", "hmm_svi", "ppca", "vae"])
def test_checkpoints_written_before_the_move_still_load(name):
    reference = json.loads((OLD_CHECKPOINTS / "scores.json").read_text())[name]
    model = ppl_dgm.load(OLD_CHECKPOINTS / name)
    data = "digits_sequence" if name.startswith("hmm") else "digits"
    x = load_dataset(data, "train").x[:5]
    scores = ppl_dgm.log_likelihood(model, x, num_samples=10, seed=0).per_sample
    np.testing.assert_allclose(scores.numpy(), reference, rtol=1e-9)


def test_a_float64_model_comes_back_in_float64_with_the_same_scores(tmp_path):
    torch.manual_seed(0)
    model = VAE(hidden_dims=[8], latent_dim=2).double()
    x = load_dataset("digits", "val", dtype=torch.float64).x[:4]
    ppl_dgm.save(model, tmp_path / "m")
    loaded = ppl_dgm.load(tmp_path / "m")
    assert loaded.dtype == torch.float64
    assert loaded.config == model.config and isinstance(VAE(hidden_dims=(8,)).config["hidden_dims"], list)
    expected = ppl_dgm.log_likelihood(model, x, num_samples=5, seed=0).per_sample
    torch.testing.assert_close(ppl_dgm.log_likelihood(loaded, x, num_samples=5, seed=0).per_sample, expected,
                               rtol=0, atol=0)
