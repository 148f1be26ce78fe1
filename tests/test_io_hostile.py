"""Hostile and damaged checkpoints: each gives one clear error naming the file, and no code of theirs runs."""

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

import ppl_dgm
from ppl_dgm import io
from ppl_dgm.models import VAE


class _Payload:
    """Unpickling this creates a marker file: proof that a loader ran code from the file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def saved(tmp_path) -> Path:
    path = tmp_path / "ckpt"
    io.save(VAE(hidden_dims=(8,), latent_dim=2), path)
    return path


def _tensor_data_offset(data: bytes) -> int:
    return 8 + int.from_bytes(data[:8], "little")


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_pickle_named_model_safetensors_is_refused_without_running_it(saved, tmp_path, writer):
    marker = tmp_path / "ran"
    target = saved / io.WEIGHTS_FILE
    if writer == "torch.save":
        torch.save({"payload": _Payload(marker)}, target)
    else:
        target.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ValueError, match=r"model\.safetensors is not a safetensors file: it is a pickle"):
        ppl_dgm.load(saved)
    assert not marker.exists()


def test_a_model_pt_without_safetensors_is_named_and_not_loaded(saved, tmp_path):
    marker = tmp_path / "ran"
    (saved / io.WEIGHTS_FILE).unlink()
    torch.save({"payload": _Payload(marker)}, saved / "model.pt")
    with pytest.raises(FileNotFoundError, match=r"no weights file at .*model\.safetensors; model\.pt cannot stand"):
        ppl_dgm.load(saved)
    assert not marker.exists()


def test_a_config_naming_a_module_never_imports_it(saved, tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "evil_module_h6.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = json.loads((saved / io.CONFIG_FILE).read_text())
    for model, cls in ((None, "evil_module_h6:Model"), ("evil_model_h6", "evil_module_h6:Model")):
        config.update(model=model, **{"class": cls})
        (saved / io.CONFIG_FILE).write_text(json.dumps(config))
        with pytest.raises(ValueError, match=r"config\.json.*import 'evil_module_h6'"):
            ppl_dgm.load(saved)
    assert not marker.exists()


def test_a_class_outside_the_registry_that_is_not_a_model_is_refused(saved):
    config = json.loads((saved / io.CONFIG_FILE).read_text())
    config.update(model=None, **{"class": "os:system"})
    (saved / io.CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config\.json: 'os:system' is not a GenerativeModel"):
        ppl_dgm.load(saved)


def test_an_unimported_user_class_names_the_module_to_import(saved):
    config = json.loads((saved / io.CONFIG_FILE).read_text())
    config.update(model="binomial_factor", **{"class": "my_project.models:BinomialFactor"})
    (saved / io.CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"names model 'binomial_factor', which is not registered in this program; "
                                         r"import 'my_project\.models'"):
        ppl_dgm.load(saved)


def _damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "tampered":
        data[_tensor_data_offset(bytes(data)) + 3] ^= 0x01  # one bit of one float
    elif how == "truncated":
        del data[len(data) // 3 :]
    elif how == "garbled":
        data[:] = b"\xff" * len(data)
    elif how == "empty":
        data.clear()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("how", "message"), [
    ("tampered", "does not match the checksum saved with it"),
    ("truncated", "is truncated or garbled"),
    ("garbled", "is truncated or garbled"),
    ("empty", "is truncated or garbled"),
])
@pytest.mark.parametrize("file", [io.WEIGHTS_FILE, io.TRAINER_FILE])
def test_damaged_safetensors_name_the_file_and_what_to_do(tmp_path, file, how, message):
    x = ppl_dgm.datasets.load_dataset("digits", "val").x[:10]
    model = VAE(hidden_dims=(8,), latent_dim=2)
    ppl_dgm.fit(model, x, epochs=1, batch_size=10, progress=False, checkpoint_dir=tmp_path)
    _damage(tmp_path / file, how)
    with pytest.raises(ValueError, match=rf"{file.replace('.', '[.]')}.*{message}.*(re-save|restore)"):
        if file == io.WEIGHTS_FILE:
            ppl_dgm.load(tmp_path)
        else:
            io.load_training_state(tmp_path, "svi")


@pytest.mark.parametrize("content", [b"{\"format\": ", b"\xff\xfe\xff", b"[1, 2]", b"{\"format\": \"other\"}"])
def test_a_garbled_config_names_the_file(saved, content):
    (saved / io.CONFIG_FILE).write_bytes(content)
    with pytest.raises(ValueError, match=r"config\.json is not (valid JSON|a ppl_dgm checkpoint configuration)"):
        ppl_dgm.load(saved)


def test_missing_files_are_file_not_found(saved):
    (saved / io.CONFIG_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        ppl_dgm.load(saved)
    with pytest.raises(FileNotFoundError, match="no checkpoint directory"):
        ppl_dgm.load(saved / "nowhere")


def test_checkpoints_without_the_checksum_still_load(tmp_path):
    """Checkpoints written before the checksum (tests/data/checkpoints_0.1) load as before."""
    source = Path(__file__).parent / "data" / "checkpoints_0.1"
    found = [p for p in sorted(source.iterdir()) if (p / io.WEIGHTS_FILE).is_file()]
    assert found, "tests/data/checkpoints_0.1 holds no checkpoints"
    for old in found:
        data = (old / io.WEIGHTS_FILE).read_bytes()
        assert b"data_sha256" not in data[:_tensor_data_offset(data)]
        copy = tmp_path / old.name
        shutil.copytree(old, copy)
        assert isinstance(ppl_dgm.load(copy), ppl_dgm.GenerativeModel)


def test_load_weights_refuses_a_model_built_with_other_arguments(saved):
    with pytest.raises(ValueError, match=r"holds a model built with .*build the model with the checkpoint's"):
        io.load_weights(VAE(hidden_dims=(8,), latent_dim=3), saved)
