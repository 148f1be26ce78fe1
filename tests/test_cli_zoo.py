"""``ppl-dgm fit``, ``evaluate`` and ``fit --resume`` work for every family the way they work for the VAE."""

import json

import pytest
from test_contract import CASES

from ppl_dgm.cli import main
from ppl_dgm.models import get_model_class

NEW_FAMILIES = ["gan", "dcgan", "wgan", "wgangp", "cgan", "stylegan", "ddpm", "ebm"]


def _options(name: str) -> list[str]:
    """The first contract case of ``name`` as ``-O key=value`` flags."""
    kwargs, _ = CASES[name][0]
    return [flag for key, value in kwargs.items() for flag in ("-O", f"{key}={json.dumps(value)}")]


@pytest.mark.parametrize("name", NEW_FAMILIES)
def test_fit_evaluate_and_resume_from_the_command_line(name, tmp_path, capsys):
    out = tmp_path / name
    command = ["fit", name, "--data", "digits", "--out", str(out), "--batch-size", "250", "--no-progress",
               "--eval-samples", "1", *_options(name)]
    assert main([*command, "--epochs", "1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    cls = get_model_class(name)
    assert metrics["engine"] == cls.default_engine and metrics["epochs_run"] == 1
    assert len(metrics["val_loss"]) == 1 and (out / "samples.png").is_file() and (out / "curve.png").is_file()
    assert ("test" in metrics) == (cls.capabilities.likelihood != "none")
    capsys.readouterr()
    assert main(["evaluate", str(out), "--num-samples", "1"]) == 0
    printed = capsys.readouterr().out
    assert "frechet_distance" in printed and ("NLL" in printed) == (cls.capabilities.likelihood != "none")
    quality = json.loads((out / "quality.json").read_text())
    assert quality["num_samples"] == 447 and quality["model"]["frechet_distance"] > 0
    assert main([*command[:-len(_options(name))], "--resume", "--epochs", "2"]) == 0
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["epochs_run"] == 2 and resumed["train_loss"][0] == metrics["train_loss"][0]
