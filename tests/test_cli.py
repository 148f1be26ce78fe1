"""The ppl-dgm command line, end to end in a temporary directory."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ppl_dgm import io
from ppl_dgm.cli import build_parser, main
from ppl_dgm.infer import list_engines

FAST = ["--epochs", "3", "--eval-samples", "20", "--no-progress", "-O", "hidden_dims=[16]", "-O", "latent_dim=2"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "vae"
    assert main(["fit", "vae", "--data", "digits", "--out", str(out), *FAST]) == 0
    return out


def test_fit_writes_checkpoint_metrics_and_figures(fitted):
    for name in (io.CONFIG_FILE, io.WEIGHTS_FILE, "metrics.json", "curve.png", "samples.png", "run.json"):
        assert (fitted / name).is_file(), name
    metrics = json.loads((fitted / "metrics.json").read_text())
    assert len(metrics["train_loss"]) == 3 and metrics["test"]["kind"] == "estimate"
    assert "compile_reason" in metrics and metrics["compile_reason"] is None  # the VAE's step ran compiled
    assert (fitted / "samples.png").read_bytes()[:4] == b"\x89PNG"


def test_the_summary_counts_epochs_from_one(fitted):
    metrics = json.loads((fitted / "metrics.json").read_text())
    assert f"at epoch {metrics['best_epoch'] + 1} (3 epochs" in metrics["summary"]  # best_epoch: a 0-based index


def test_evaluate_json(fitted, capsys):
    assert main(["evaluate", str(fitted), "--json", "--num-samples", "10"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {"test_nll_nats", "test_nll_stderr", "bits_per_dim", "kind"} <= set(summary)
    assert summary["kind"] == "estimate" and summary["num_examples"] == 447
    assert 0 < summary["test_nll_nats"] < 64 * 3  # below the uniform distribution's 64 ln 17


def test_evaluate_text_and_sample(fitted, tmp_path, capsys):
    assert main(["evaluate", str(fitted), "--num-samples", "5", "--split", "val"]) == 0
    assert "NLL" in capsys.readouterr().out
    png = tmp_path / "s.png"
    assert main(["sample", str(fitted), "-n", "9", "-o", str(png), "--seed", "1"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_resume_continues_the_fit(fitted, capsys):
    assert main(["fit", "vae", "--data", "digits", "--out", str(fitted), "--epochs", "5", "--eval-samples", "0",
                 "--no-progress", "--resume"]) == 0
    assert len(json.loads((fitted / "metrics.json").read_text())["train_loss"]) == 5


def test_fit_on_a_toy_dataset_draws_a_scatter(tmp_path):
    out = tmp_path / "toy"
    assert main(["fit", "vae", "--data", "moons", "--out", str(out), "--epochs", "1", "--eval-samples", "5",
                 "--no-progress", "-O", "likelihood=gaussian", "-O", "input_dim=2", "-O", "hidden_dims=[8]"]) == 0
    assert json.loads((out / "metrics.json").read_text())["test"]["kind"] == "estimate"  # real-valued: no bound
    assert (out / "samples.png").is_file()


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "vae" in out and "digits" in out and "checkerboard" in out


@pytest.mark.parametrize("argv,match", [
    (["fit", "nope", "--data", "digits", "--out", "X"], "unknown model 'nope'"),
    (["fit", "vae", "--data", "nope", "--out", "X"], "unknown dataset 'nope'"),
    (["fit", "vae", "--data", "digits", "--out", "X", "-O", "latentdim=3"], "unknown option"),
    (["fit", "vae", "--data", "digits", "--out", "X", "-O", "likelihood=poisson"], "likelihood must be"),
    (["fit", "vae", "--data", "digits", "--out", "X", "--device", "tpu"], "device"),
    (["fit", "vae", "--data", "digits", "--out", "X", "--resume"], "run.json"),
    (["evaluate", "MISSING"], "no checkpoint directory"),
    (["sample", "MISSING", "-o", "a.png"], "no checkpoint directory"),
])
def test_user_errors_are_one_line_with_status_2(argv, match, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("argv", [["fit", "vae", "--data", "digits", "--out", "X", "--epochs", "0"],
                                  ["sample", "d", "-n", "-3", "-o", "a.png"], ["bogus"]])
def test_argument_errors_are_one_line_with_status_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_console_script_reports_without_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "ppl_dgm.cli", "evaluate", str(tmp_path / "missing")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["list", "fit", "evaluate", "sample", "demo"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0 and "usage: ppl-dgm" in capsys.readouterr().out


def test_the_seed_fixes_the_fit(tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert main(["fit", "vae", "--data", "digits", "--out", str(out), "--epochs", "1", "--eval-samples", "0",
                     "--no-progress", "-O", "hidden_dims=[8]", "--seed", "4"]) == 0
    # the tensors and the metadata are equal (the bytes need not be: safetensors writes its metadata keys in
    # hash-map order)
    (a, meta_a), (b, meta_b) = ((load_file(out / io.WEIGHTS_FILE), safe_open(out / io.WEIGHTS_FILE, "pt").metadata())
                                for out in outs)
    assert meta_a == meta_b and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_estimators_fit_by_em_and_are_scored_with_the_dequantization_bound(tmp_path, capsys):
    out = tmp_path / "gmm"
    assert main(["fit", "gmm", "--data", "digits", "--out", str(out), "--no-progress", "--eval-samples", "1",
                 "-O", "n_components=2", "-O", "covariance_type=diag"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["engine"] == "em" and metrics["test"]["kind"] == "bound"
    assert metrics["train_loss"] == sorted(metrics["train_loss"], reverse=True)  # EM never lowers the likelihood
    assert metrics["unit"] == "nats per example" and len(metrics["history"]["val_nll"]) == 1
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_nll_nats"] == pytest.approx(metrics["test"]["test_nll_nats"])
    assert main(["fit", "vae", "--data", "digits", "--out", str(tmp_path / "v"), "--engine", "em"]) == 2


def test_a_fit_never_replaces_an_earlier_one_unless_asked(tmp_path, capsys):
    out = tmp_path / "run"
    command = ["fit", "gmm", "--data", "digits", "--out", str(out), "--eval-samples", "0", "-O", "n_components=1"]
    assert main(command) == 0
    weights = (out / io.WEIGHTS_FILE).read_bytes()
    capsys.readouterr()
    assert main([*command[:-1], "n_components=2"]) == 2
    assert "holds an earlier fit (run.json, config.json); pass --resume" in capsys.readouterr().err
    assert (out / io.WEIGHTS_FILE).read_bytes() == weights
    assert main([*command[:-1], "n_components=2", "--overwrite"]) == 0
    assert (out / io.WEIGHTS_FILE).read_bytes() != weights


def test_engine_choices_and_options_come_from_the_registries(tmp_path, capsys):
    parser = build_parser()
    fit_parser = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith(" fit"))
    engine = next(a for a in fit_parser._actions if a.dest == "engine")
    assert engine.choices == ["auto", *list_engines()]
    assert main(["fit", "gmm", "--data", "digits", "--out", str(tmp_path / "g"), "--objective", "iwae"]) == 2
    assert "the 'em' engine takes its options as -E" in capsys.readouterr().err
    assert main(["fit", "vae", "--data", "digits", "--out", str(tmp_path / "v"), "-E", "n_critic=5"]) == 2
    assert ("the 'svi' engine takes no option(s) n_critic; its options are alpha, compile, dequantize"
            in capsys.readouterr().err)
    out = tmp_path / "renyi"
    assert main(["fit", "vae", "--data", "digits", "--out", str(out), "--epochs", "1", "--eval-samples", "0",
                 "--no-progress", "-O", "hidden_dims=[8]", "-E", "objective=\"renyi\"", "-E", "alpha=0.25"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["fit"]["engine"] == "svi" and run["fit"]["engine_options"] == {"objective": "renyi", "alpha": 0.25}


def test_list_shows_plain_text_cut_at_a_word():
    from ppl_dgm.cli.results import one_line

    doc = "A model: ``z ~ N(0, I)`` and a very " + "long " * 30 + "story.\n\nArgs: ..."
    line = one_line(doc)
    assert "``" not in line and line.startswith("A model: z ~ N(0, I)") and len(line) <= 100
    assert line.endswith("long...")
    assert one_line("Short.\n\nMore.") == "Short."
