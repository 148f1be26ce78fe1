"""The dataset registry: fixed splits, shapes, devices, nothing downloaded."""

import pytest
import torch

from ppl_dgm.datasets import dataset_info, list_datasets, load_dataset


def test_digits_split_and_values():
    sizes = {split: len(load_dataset("digits", split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 1000, "val": 350, "test": 447}
    test = load_dataset("digits", "test")
    assert test.x.shape == (447, 64) and test.x.dtype == torch.float32
    assert torch.equal(test.x, test.x.round()) and test.x.min() == 0 and test.x.max() == 16
    assert test.y.shape == (447,) and set(test.y.tolist()) == set(range(10))
    # split without shuffling: the test rows are the last 447 of sklearn's array
    from sklearn.datasets import load_digits

    assert torch.equal(test.x, torch.tensor(load_digits().data[1350:], dtype=torch.float32))


def test_sequence_view_is_rows_of_the_image():
    flat = load_dataset("digits", "val").x
    seq = load_dataset("digits_sequence", "val").x
    assert seq.shape == (350, 8, 8) and torch.equal(seq.reshape(350, 64), flat)


@pytest.mark.parametrize("name", ["moons", "circles", "8gaussians", "checkerboard", "pinwheel"])
def test_toys_are_fixed_and_two_dimensional(name):
    a, b = load_dataset(name, "train"), load_dataset(name, "train")
    assert a.x.shape == (10_000, 2) and torch.equal(a.x, b.x)
    assert len(load_dataset(name, "test")) == 2000
    assert torch.isfinite(a.x).all() and a.x.std() > 0.3


def test_checkerboard_fills_only_dark_squares():
    x = load_dataset("checkerboard", "all").x
    assert ((torch.floor(x[:, 0]) + torch.floor(x[:, 1])) % 2 == 0).all()


def test_device_and_dtype(device):
    split = load_dataset("digits", "val", device=device, dtype=torch.float64)
    assert split.x.device.type == device.type and split.x.dtype == torch.float64
    assert split.y.device.type == device.type


def test_bad_names_and_arguments():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", "validation")
    with pytest.raises(TypeError, match="floating"):
        load_dataset("digits", dtype=torch.int64)
    assert "digits" in list_datasets() and dataset_info("DIGITS").num_levels == 17
