"""Sample-quality metrics: the digits classifier and its cache, ideal and worst cases, input errors, the CLI."""

import json

import numpy as np
import pyro
import pytest
import torch
from safetensors.torch import load_file, save_file

from ppl_dgm import Capabilities, GenerativeModel, data_plate, draw
from ppl_dgm.cli import main
from ppl_dgm.cli.results import quality_report
from ppl_dgm.datasets import load_dataset
from ppl_dgm.evaluation import digits_classifier as dc
from ppl_dgm.evaluation.sample_quality import (
    as_digit_images,
    draw_digit_images,
    is_dequantized_density,
    real_data_floor,
    sample_quality,
)

from helpers import DiagonalGaussian

QUICK = {"epochs": 4, "max_shift": 0, "dropout": 0.0, "lr": 1e-2}
"""Training settings of the classifier in the fast tests: 1.5 s, about 91% test accuracy (the real one: 60 epochs)."""


def session_cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.getbasetemp() / "cache")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """Every test caches into the session's directory, never the user's ~/.cache."""
    monkeypatch.setenv(dc.CACHE_ENV, session_cache(tmp_path_factory))


@pytest.fixture
def quick(monkeypatch):
    """Make `digits_classifier` train a 2-epoch network (a cache key of its own)."""
    monkeypatch.setattr(dc, "TRAINING", {**dc.TRAINING, **QUICK})


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(dc.CACHE_ENV, session_cache(tmp_path_factory))
        patch.setattr(dc, "TRAINING", {**dc.TRAINING, **QUICK})
        return dc.digits_classifier()


@pytest.fixture(scope="module")
def train_x():
    return load_dataset("digits", "train").x


def noise(n, seed=0):
    return torch.randint(0, 17, (n, 64), generator=torch.Generator().manual_seed(seed)).float()


SMALL = {"kid_subset_size": 50, "kid_subsets": 20}


def test_real_versus_real_is_near_the_ideal_and_noise_is_worse_on_every_metric(classifier, train_x):
    real = sample_quality(train_x[:200], train_x[200:400], classifier=classifier, **SMALL)
    bad = sample_quality(noise(200), train_x[200:400], classifier=classifier, **SMALL)
    assert real.precision > 0.7 and real.recall > 0.7 and abs(real.c2st_accuracy - 0.5) < 0.12
    assert real.frechet_distance < 0.1 * bad.frechet_distance and real.kid_mean < 0.1 * bad.kid_mean
    assert bad.precision < real.precision and bad.recall < real.recall
    assert bad.c2st_accuracy > 0.9 and bad.confident_share < real.confident_share
    assert bad.class_entropy < real.class_entropy
    assert real.class_entropy > 0.95 * np.log(10) and abs(sum(real.class_histogram) - 1) < 1e-9


def test_a_mode_collapsed_sample_has_no_recall_and_one_class(classifier, train_x):
    collapsed = sample_quality(train_x[5:6].repeat(200, 1), train_x[200:400], classifier=classifier, **SMALL)
    real = sample_quality(train_x[:200], train_x[200:400], classifier=classifier, **SMALL)
    assert collapsed.recall < 0.05 and max(collapsed.class_histogram) == 1.0 and collapsed.class_entropy == 0.0
    assert collapsed.frechet_distance > 10 * real.frechet_distance and collapsed.c2st_accuracy > 0.9


def test_the_frechet_distance_equals_the_formula_in_float64(classifier, train_x):
    samples, reference = noise(150, seed=3) * 0.5 + train_x[:150] * 0.5, train_x[300:500]
    quality = sample_quality(samples, reference, classifier=classifier, **SMALL)
    with torch.no_grad():
        a, b = (classifier.features(x).double().numpy() for x in (samples, reference))
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # tr sqrt(A B) = tr sqrt(A^1/2 B A^1/2), symmetric PSD
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a + cov_b) - 2 * trace_root
    assert quality.frechet_distance == pytest.approx(expected, rel=1e-3)


def test_precision_and_recall_follow_the_k_nearest_neighbour_balls(classifier, train_x):
    """A sample that copies half the reference rows: precision 1 (every copy sits on a real point), recall
    about a half or more (the copied rows, and others within the copies' k-NN radii)."""
    reference = train_x[:200]
    quality = sample_quality(reference[:100].repeat(2, 1), reference, classifier=classifier, **SMALL, k=1)
    assert quality.precision == 1.0 and 0.5 <= quality.recall < 1.0


def test_the_metrics_are_deterministic_given_the_seed(classifier, train_x):
    one, two = (sample_quality(noise(120), train_x[:120], classifier=classifier, seed=4, **SMALL)
                for _ in range(2))
    assert one == two
    assert json.loads(json.dumps(one.summary())) == one.summary()


def test_devices_agree(classifier, train_x, device):
    on_cpu = sample_quality(train_x[:100], train_x[100:200], classifier=classifier, **SMALL)
    moved = sample_quality(train_x[:100].to(device), train_x[100:200].to(device), classifier=classifier.to(device),
                           **SMALL)
    classifier.cpu()
    assert moved.frechet_distance == pytest.approx(on_cpu.frechet_distance, rel=1e-3)
    assert moved.precision == pytest.approx(on_cpu.precision, abs=0.02)


def test_as_digit_images_rounds_or_floors_then_clamps():
    raw = torch.tensor([[-3.0, 0.4, 0.6, 15.5, 16.7, 20.0] + [1.0] * 58])
    assert as_digit_images(raw)[0, :6].tolist() == [0, 0, 1, 16, 16, 16]
    assert as_digit_images(raw, dequantized=True)[0, :6].tolist() == [0, 0, 0, 15, 16, 16]
    assert as_digit_images(raw.reshape(1, 8, 8)).shape == (1, 64)


@pytest.mark.parametrize("samples,match", [
    (torch.zeros(20, 63), "shape"),
    (torch.full((20, 64), float("nan")), "non-finite"),
    (torch.full((20, 64), 17.0), r"outside the digits' range \[0, 16\].*as_digit_images"),
    (torch.full((20, 64), -0.5), "outside the digits' range"),
    (torch.zeros(3, 64), "too few for k=3"),
    (torch.zeros(40, 64), "fewer than the KID subset size 50"),
])
def test_bad_samples_are_a_clear_error(classifier, train_x, samples, match):
    with pytest.raises(ValueError, match=match):
        sample_quality(samples, train_x[:100], classifier=classifier, **SMALL)


def test_other_bad_arguments(classifier, train_x):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        sample_quality(train_x[:60], train_x[:60], classifier=classifier, k=0, **SMALL)
    with pytest.raises(ValueError, match="shape"):
        as_digit_images(torch.zeros(4, 10))
    with pytest.raises(ValueError, match="non-finite"):
        as_digit_images(torch.full((4, 64), float("inf")))
    with pytest.raises(ValueError, match="split must be 'val' or 'test'"):
        real_data_floor("train")


def test_the_classifier_is_cached_by_a_key_of_architecture_settings_and_data(tmp_path, monkeypatch):
    monkeypatch.setenv(dc.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(dc, "TRAINING", {**dc.TRAINING, "epochs": 1})
    with torch.no_grad():  # first asked for where gradients are off (inside a fit's validation): it still trains
        first = dc.digits_classifier()
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".safetensors"
    second = dc.digits_classifier()
    assert second.training_seconds == first.training_seconds and not second.training
    assert first.state_dict().keys() == second.state_dict().keys()
    assert all(torch.equal(value, second.state_dict()[name]) for name, value in first.state_dict().items())
    x = torch.zeros(2, 8, 8)
    assert first(x).shape == (2, 10) and first.features(x).shape == (2, dc.DigitsClassifier.num_features)
    train = load_dataset("digits", "train")
    key = dc._cache_key(train.x.double(), train.y)
    assert key != dc._cache_key(train.x.double() + 1, train.y)
    monkeypatch.setattr(dc, "TRAINING", {**dc.TRAINING, "seed": 1})
    assert dc._cache_key(train.x.double(), train.y) != key


def test_a_cache_file_with_another_key_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv(dc.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(dc, "TRAINING", {**dc.TRAINING, "epochs": 1})
    dc.digits_classifier()
    path = next(tmp_path.iterdir())
    state = {k: torch.zeros_like(v) for k, v in load_file(path).items()}
    save_file(state, path, metadata={"key": "stale", "training_seconds": "0"})
    again = dc.digits_classifier()
    assert again.training_seconds != 0 and bool(again.head.weight.abs().sum() > 0)


class _Noise(GenerativeModel):
    """No likelihood, conditional on labels: draws a digit-sized block of noise (a stand-in for a GAN)."""

    capabilities = Capabilities(likelihood="none", data="continuous", conditional=True)

    def __init__(self) -> None:
        super().__init__()
        self.event_shape = (64,)
        self.scale = torch.nn.Parameter(torch.tensor(8.0))

    def model(self, x=None, n=None, y=None):
        with data_plate(x, n):
            return pyro.deterministic("x", self.scale * torch.rand(n, 64) * (1 + y.unsqueeze(-1) % 2))


def test_densities_fitted_on_dequantized_data_are_floored_and_models_without_likelihood_rounded(train_x):
    assert is_dequantized_density(DiagonalGaussian(64), train_x[:10])
    assert not is_dequantized_density(_Noise(), train_x[:10], {"y": torch.zeros(10, dtype=torch.long)})
    model = DiagonalGaussian(64)
    with torch.no_grad():
        model.loc.fill_(8.0)
    torch.manual_seed(0)
    images = draw_digit_images(model, train_x[:50])
    torch.manual_seed(0)
    raw = draw(model, 50)
    assert torch.equal(images, raw.floor().clamp(0, 16)) and not torch.equal(images, raw.round().clamp(0, 16))


def test_quality_report_of_a_model_without_likelihood_draws_with_the_labels(quick):
    report = quality_report(_Noise(), "digits", "val", seed=0)
    assert report["num_samples"] == 350 and report["mapping"] == "round"
    assert report["model"]["frechet_distance"] > 10 * report["floor"]["frechet_distance"]
    assert quality_report(_Noise(), "moons", "test", seed=0) is None


def test_cli_evaluate_prints_the_metrics_and_writes_quality_json(quick, tmp_path, capsys):
    out = tmp_path / "vae"
    assert main(["fit", "vae", "--data", "digits", "--out", str(out), "--epochs", "1", "--eval-samples", "0",
                 "--no-progress", "-O", "hidden_dims=[8]", "-O", "latent_dim=2"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--num-samples", "2", "--split", "val"]) == 0
    text = capsys.readouterr().out
    assert "NLL" in text and "frechet_distance" in text and "floor" in text and "class shares" in text
    saved = json.loads((out / "quality.json").read_text())
    assert saved["num_samples"] == 350 and saved["log_likelihood"]["split"] == "val"
    assert 0 <= saved["model"]["precision"] <= 1 and len(saved["floor"]["class_histogram"]) == 10
    assert main(["evaluate", str(out), "--num-samples", "2", "--json", "--no-quality"]) == 0
    assert json.loads(capsys.readouterr().out)["quality"] is None


@pytest.mark.slow
def test_the_classifier_reaches_97_percent_on_test_and_the_floor_is_near_ideal(tmp_path, monkeypatch):
    monkeypatch.setenv(dc.CACHE_ENV, str(tmp_path))
    classifier = dc.digits_classifier()
    assert dc.classifier_accuracy(classifier, "test") >= 0.97
    assert classifier.training_seconds < 60
    floor = real_data_floor(classifier=classifier)
    assert floor.num_samples == floor.num_reference == 447
    assert floor.precision > 0.75 and floor.recall > 0.75 and floor.c2st_accuracy < 0.62
    assert floor.confident_share > 0.95 and floor.class_entropy > 0.98 * np.log(10)
