"""What a new user hits on the command line: one-line errors that say what to do (exit status 2), and a
failed fit that leaves nothing half-made behind."""

import json

import numpy as np
import pytest
import torch

from ppl_dgm import io
from ppl_dgm.cli import fit as cli_fit
from ppl_dgm.cli import main
from ppl_dgm.models import VAE

TINY = ["--epochs", "1", "--eval-samples", "0", "--no-progress", "-O", "hidden_dims=[8]", "-O", "latent_dim=2"]


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("options,hint", [
    ([], "input_dim=2"),  # 2-D points, a VAE for 64 pixels
    (["-O", "input_dim=2"], "likelihood=gaussian"),  # real values, a likelihood of integer levels
])
def test_a_vae_on_points_says_which_option_fits_them(options, hint, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", "vae", "--data", "moons", "--out", str(out), *TINY, *options]) == 2
    assert hint in error_line(capsys)
    assert not out.exists()  # the failed fit left nothing behind


def test_the_library_error_carries_the_hint_too():
    with pytest.raises(ValueError, match="likelihood='gaussian'"):
        VAE(input_dim=2, hidden_dims=[8], latent_dim=2).check_data(torch.tensor([[0.5, 1.0]]))


def test_an_hmm_on_images_points_to_the_sequence_data(tmp_path, capsys):
    assert main(["fit", "hmm", "--data", "digits", "--out", str(tmp_path / "hmm"), "--no-progress"]) == 2
    assert "digits_sequence" in error_line(capsys)


def test_an_unknown_user_class_in_a_checkpoint_says_to_import_it(tmp_path, capsys):
    run = tmp_path / "mine"
    io.save(VAE(hidden_dims=[8], latent_dim=2), run)
    config = json.loads((run / io.CONFIG_FILE).read_text())
    config.update(model=None, **{"class": "my_unimported_module:MyModel"})
    (run / io.CONFIG_FILE).write_text(json.dumps(config))
    assert main(["evaluate", str(run), "--data", "digits"]) == 2
    assert "import" in error_line(capsys)


@pytest.mark.parametrize("command", [["evaluate"], ["sample", "-o", "s.png"], ["diagnose"]])
@pytest.mark.parametrize("layout,hint", [
    (None, "no checkpoint directory"),
    ([], "is not a run"),
    (["run.json"], "--overwrite"),
])
def test_a_directory_that_is_not_a_run_is_named_so(command, layout, hint, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if layout is not None:
        (tmp_path / "d").mkdir()
        for name in layout:
            (tmp_path / "d" / name).write_text(json.dumps({"model": "vae", "data": "digits", "options": {}}))
    assert main([command[0], "d", *command[1:]]) == 2
    assert hint in error_line(capsys)


def _stop(after_checkpoint: bool):
    """A stand-in for `ppl_dgm.fit` that is interrupted (Ctrl-C), after writing a checkpoint or before."""
    def fit(model, *args, checkpoint_dir=None, **kwargs):
        if after_checkpoint:
            io.save(model, checkpoint_dir)
        raise KeyboardInterrupt
    return fit


def test_a_fit_stopped_before_its_first_checkpoint_leaves_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli_fit, "fit", _stop(after_checkpoint=False))
    (tmp_path / "mine").mkdir()
    out = tmp_path / "mine" / "new" / "run"
    assert main(["fit", "vae", "--data", "digits", "--out", str(out), *TINY]) == 130
    assert "no checkpoint was written" in capsys.readouterr().err
    assert not (tmp_path / "mine" / "new").exists() and (tmp_path / "mine").is_dir()  # only what the fit created


def test_a_failed_overwrite_keeps_the_earlier_run(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    earlier = {name: f"earlier {name}".encode() for name in ("run.json", io.CONFIG_FILE, io.WEIGHTS_FILE)}
    for name, data in earlier.items():
        (out / name).write_bytes(data)
    monkeypatch.setattr(cli_fit, "fit", _stop(after_checkpoint=False))
    assert main(["fit", "vae", "--data", "digits", "--out", str(out), "--overwrite", *TINY]) == 130
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {**earlier, "notes.txt": b"mine"}


def test_an_error_in_the_fit_cleans_up_and_propagates(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("engine broke")

    monkeypatch.setattr(cli_fit, "fit", broken)
    with pytest.raises(RuntimeError, match="engine broke"):
        main(["fit", "vae", "--data", "digits", "--out", str(tmp_path / "run"), *TINY])
    assert not (tmp_path / "run").exists()


def test_a_fit_stopped_after_a_checkpoint_stays_resumable(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli_fit, "fit", _stop(after_checkpoint=True))
    out = tmp_path / "run"
    assert main(["fit", "vae", "--data", "digits", "--out", str(out), *TINY]) == 130
    assert "--resume" in capsys.readouterr().err
    assert (out / "run.json").is_file() and (out / io.CONFIG_FILE).is_file()
    assert main(["fit", "vae", "--data", "digits", "--out", str(out), *TINY]) == 2  # refused: an earlier fit
    assert "--resume" in error_line(capsys)


def test_a_leftover_run_json_asks_for_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"model": "vae", "data": "digits", "options": {}}))
    assert main(["fit", "vae", "--data", "digits", "--out", str(out), *TINY]) == 2
    assert "--overwrite" in error_line(capsys)
    assert main(["fit", "vae", "--data", "digits", "--out", str(out), "--no-progress", "--resume"]) == 2
    assert "--overwrite" in error_line(capsys)


REGRESSION = '''
import pyro
import pyro.distributions as dist
import torch


def poisson_regression(rows=None, size=100):
    b = pyro.sample("b", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("rows", rows.shape[0]):  # needs its covariates: cannot draw data alone
        return pyro.sample("obs", dist.Poisson(torch.exp(rows[:, :2] @ b)), obs=rows[:, 2])
'''


def test_a_story_that_cannot_draw_alone_is_fitted_and_diagnosed_with_hints(tmp_path, capsys):
    (tmp_path / "reg.py").write_text(REGRESSION)
    generator = np.random.default_rng(0)
    features = generator.normal(size=(60, 2))
    counts = generator.poisson(np.exp(features @ [0.5, -0.3]))
    np.savetxt(tmp_path / "rows.csv", np.column_stack([features, counts]),
                                delimiter=",")
    out = tmp_path / "run"
    assert main(["fit", f"{tmp_path / 'reg.py'}:poisson_regression", "--data", str(tmp_path / "rows.csv"),
                 "--out", str(out), "-O", "guide=AutoNormal", "-O", "plate=rows", "--epochs", "20", "--lr", "0.05",
                 "--batch-size", "60", "--eval-samples", "10", "--no-progress"]) == 0
    assert "no samples.png" in capsys.readouterr().out  # 3 columns: no picture, so nothing is drawn
    assert main(["diagnose", str(out), "--num-draws", "20"]) == 2
    line = error_line(capsys)
    assert f"raised at {tmp_path.resolve() / 'reg.py'}:" in line and "--no-ppc" in line
    assert main(["diagnose", str(out), "--num-draws", "20", "--no-ppc"]) == 0
    assert (out / "diagnostics" / "summary.csv").is_file() and not (out / "diagnostics" / "ppc.png").exists()


def test_minibatch_options_given_to_an_em_fit_are_named(tmp_path, capsys):
    assert main(["fit", "ppca", "--data", "moons", "--out", str(tmp_path / "run"), "-O", "n_components=1",
                 "--epochs", "5", "--lr", "0.1", "--eval-samples", "0", "--no-progress"]) == 0
    assert "note: --epochs, --lr set(s) minibatch fitting, which the em engine does not do" in capsys.readouterr().out
