"""The command line with a user's own story (``file.py:ClassName``), data files, and ``diagnose``."""

import json
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ppl_dgm import io
from ppl_dgm.cli import main
from ppl_dgm.datasets import load_dataset
from ppl_dgm.user_code import module_name

FAST = ["--epochs", "2", "--eval-samples", "0", "--no-progress"]

STORY = textwrap.dedent('''
    """A user's story: a diagonal Gaussian with a learned mean and scale, no latents."""
    import pyro
    import pyro.distributions as dist
    import torch
    from torch import nn

    from ppl_dgm import GenerativeModel
    from ppl_dgm.core import Capabilities, data_plate


    class Gauss(GenerativeModel):
        capabilities = Capabilities(likelihood="exact")

        def __init__(self, dim: int = 2, init_scale: float = 1.0):
            super().__init__()
            self.event_shape = (dim,)
            self.loc = nn.Parameter(torch.zeros(dim))
            self.log_scale = nn.Parameter(torch.full((dim,), float(init_scale)).log())

        def model(self, x=None, n=None):
            with data_plate(x, n):
                return pyro.sample("x", dist.Normal(self.loc, self.log_scale.exp()).to_event(1), obs=x)


    class NotAStory:
        pass


    def poisson_counts(counts=None, size=100):
        """A plain Pyro model function, as in Pyro's tutorials: a rate and counts."""
        rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))
        with pyro.plate("counts", len(counts) if counts is not None else size):
            return pyro.sample("obs", dist.Poisson(rate), obs=counts)
''')


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: on a shared 2-core machine, torch's thread hand-offs cost more than the work
    (NUTS here runs several times faster on one thread). Results do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


@pytest.fixture
def story(tmp_path):
    path = tmp_path / "my_story.py"
    path.write_text(STORY)
    yield path
    sys.modules.pop(module_name(path), None)


@pytest.fixture(scope="module")
def gmm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gmm") / "run"
    assert main(["fit", "gmm", "--data", "moons", "--out", str(out), "-O", "n_components=3", *FAST]) == 0
    return out


def _closed_form_nll(weights: dict[str, torch.Tensor], x: torch.Tensor) -> float:
    normal = torch.distributions.Normal(weights["loc"], weights["log_scale"].exp())
    return float(-normal.log_prob(x).sum(-1).mean())


def test_fit_a_story_file_then_evaluate_and_sample_it_in_a_fresh_state(story, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative spec is recorded with its absolute path
    out = tmp_path / "run"
    assert main(["fit", "my_story.py:Gauss", "--data", "moons", "--out", str(out), *FAST, "-O", "init_scale=0.5"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["model"] == f"{story.resolve()}:Gauss" and run["options"] == {"init_scale": 0.5}
    assert io.load_config(out)["class"] == f"{module_name(story)}:Gauss"
    assert (out / "samples.png").read_bytes()[:4] == b"\x89PNG"
    weights = load_file(out / io.WEIGHTS_FILE)
    assert not torch.equal(weights["loc"], torch.zeros(2))  # it was fitted

    first_class = sys.modules.pop(module_name(story)).Gauss  # as if in a new process
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json", "--num-samples", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert sys.modules[module_name(story)].Gauss is not first_class  # the recorded file was imported again
    test = load_dataset("moons", "test").x
    assert summary["kind"] == "exact" and summary["split"] == "test" and summary["num_examples"] == len(test)
    assert summary["test_nll_nats"] == pytest.approx(_closed_form_nll(weights, test), rel=1e-5)

    sys.modules.pop(module_name(story))
    assert main(["sample", str(out), "-n", "16", "-o", str(tmp_path / "s.png"), "--seed", "1"]) == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_a_moved_story_file_is_reported_at_load_time(story, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", f"{story}:Gauss", "--data", "moons", "--out", str(out), *FAST]) == 0
    sys.modules.pop(module_name(story))
    story.rename(tmp_path / "elsewhere.py")
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 2
    _one_line_error(capsys, "no longer exists", str(story))


BAD_FILES = {
    "raises.py": "raise RuntimeError('no database here')\n",
    "syntax.py": "def broken(:\n",
}


@pytest.mark.parametrize("spec,fragments", [
    ("missing.py:Gauss", ["no story file", "missing.py"]),
    ("my_story.py:Nope", ["has no class 'Nope'", "my_story.py", "Gauss"]),
    ("my_story.py:NotAStory", ["neither a subclass of ppl_dgm.GenerativeModel nor a Pyro model function",
                               "my_story.py"]),
    ("my_story.py", ["name the class after the file"]),
    ("my_story.txt:Gauss", ["expected path/to/file.py:ClassName"]),
    ("raises.py:Gauss", ["cannot import", "raises.py", "RuntimeError: no database here"]),
    ("syntax.py:Gauss", ["cannot import", "syntax.py", "SyntaxError"]),
])
def test_bad_story_specs_are_one_line_with_status_2(spec, fragments, story, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, text in BAD_FILES.items():
        (tmp_path / name).write_text(text)
    assert main(["fit", spec, "--data", "moons", "--out", "X", *FAST]) == 2
    _one_line_error(capsys, *fragments)
    assert not (tmp_path / "X").exists()
    for name in BAD_FILES:  # a file that failed to import leaves nothing behind
        assert module_name(tmp_path / name) not in sys.modules


def test_story_options_are_checked_against_its_constructor(story, capsys):
    assert main(["fit", f"{story}:Gauss", "--data", "moons", "--out", "X", "-O", "latent_dim=3"]) == 2
    _one_line_error(capsys, "unknown option(s) latent_dim", "dim, init_scale")


def test_a_data_file_is_all_training_data(story, tmp_path, capsys):
    points = load_dataset("moons", "train").x[:300].numpy()
    np.save(tmp_path / "points.npy", points)
    out = tmp_path / "run"
    assert main(["fit", f"{story}:Gauss", "--data", str(tmp_path / "points.npy"), "--out", str(out),
                 "--epochs", "2", "--eval-samples", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "no validation split: no early stopping" in printed and "on the training data" in printed
    assert json.loads((out / "run.json").read_text())["data"] == str((tmp_path / "points.npy").resolve())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_loss"] == [] and len(metrics["train_loss"]) == 2 and "test" not in metrics
    assert metrics["train"]["split"] == "train" and metrics["train"]["num_examples"] == 300
    weights = load_file(out / io.WEIGHTS_FILE)
    assert metrics["train"]["test_nll_nats"] == pytest.approx(_closed_form_nll(weights, torch.as_tensor(points)),
                                                              rel=1e-5)
    assert (out / "samples.png").is_file()  # 2-D points: a scatter plot
    assert main(["evaluate", str(out), "--json"]) == 0  # the default split of a data file is train
    assert json.loads(capsys.readouterr().out)["split"] == "train"
    assert main(["evaluate", str(out), "--split", "test"]) == 2
    _one_line_error(capsys, "only a train split")


def test_a_csv_without_a_picture_form_fits_and_skips_the_samples(story, tmp_path, capsys):
    rows = np.random.default_rng(0).normal(size=(40, 3))
    (tmp_path / "table.csv").write_text("a,b,c\n" + "\n".join(",".join(f"{v:.6f}" for v in r) for r in rows))
    out = tmp_path / "run"
    assert main(["fit", f"{story}:Gauss", "--data", str(tmp_path / "table.csv"), "--out", str(out), *FAST,
                 "-O", "dim=3"]) == 0
    assert "no samples.png" in capsys.readouterr().out and not (out / "samples.png").exists()
    assert (out / io.WEIGHTS_FILE).is_file() and (out / "curve.png").is_file()


@pytest.mark.parametrize("name,content,fragment", [
    ("absent.npy", None, "no data file"),
    ("words.csv", "a,b\nx,y\n", "expected comma-separated numbers"),
    ("holes.csv", "1,2\nnan,3\n", "NaN or infinite"),
])
def test_bad_data_files_are_one_line_with_status_2(name, content, fragment, story, tmp_path, capsys):
    if content is not None:
        (tmp_path / name).write_text(content)
    assert main(["fit", f"{story}:Gauss", "--data", str(tmp_path / name), "--out", str(tmp_path / "X"), *FAST]) == 2
    _one_line_error(capsys, fragment)


def test_diagnose_writes_arviz_files_and_never_overwrites_silently(gmm_run, tmp_path, capsys):
    assert main(["diagnose", str(gmm_run), "--num-draws", "8"]) == 0
    printed = capsys.readouterr().out.splitlines()
    folder = gmm_run / "diagnostics"
    names = ["summary.csv", "loo.json", "trace.png", "ppc.png", "khat.png"]
    assert printed[:-1] == [f"wrote {folder / name}" for name in names]
    assert "elpd_loo" in printed[-1] and "k-hat > 0.7" in printed[-1]
    for name in names[2:]:
        assert (folder / name).read_bytes()[:4] == b"\x89PNG"
    loo = json.loads((folder / "loo.json").read_text())
    assert loo["posterior"] == "guide" and loo["split"] == "train" and loo["n_samples"] == 8
    assert 0 <= loo["share_pareto_k_above_0.7"] <= 1 and isinstance(loo["warning"], bool)
    # the run's model on the run's training data: LOO's expected log density is close to the fitted one
    model, train = io.load(gmm_run), load_dataset("moons", "train").x
    assert loo["n_data_points"] == len(train)
    fitted = float(model.log_prob(train).double().sum())
    assert loo["elpd_loo"] == pytest.approx(fitted, abs=0.05 * len(train)) and loo["se"] > 0
    header = (folder / "summary.csv").read_text().splitlines()[0]
    assert "r_hat" in header and "ess_bulk" in header

    before = {name: (folder / name).read_bytes() for name in names}
    assert main(["diagnose", str(gmm_run), "--num-draws", "8"]) == 2
    _one_line_error(capsys, "exists", "--overwrite")
    assert {name: (folder / name).read_bytes() for name in names} == before

    points = tmp_path / "few.npy"
    np.save(points, train[:40].numpy())
    assert main(["diagnose", str(gmm_run), "--overwrite", "--nuts", "--num-samples", "4", "--warmup", "4",
                 "--chains", "2", "--no-progress", "--data", str(points)]) == 0
    assert "max R-hat" in capsys.readouterr().out.splitlines()[-1]
    loo = json.loads((folder / "loo.json").read_text())
    assert loo["posterior"] == "nuts" and loo["num_chains"] == 2 and loo["n_samples"] == 8
    assert loo["n_data_points"] == 40 and loo["data"] == str(points.resolve())
    assert sorted(p.name for p in gmm_run.iterdir() if p.name.startswith(".diagnostics")) == []


def test_diagnose_needs_global_latents(story, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["fit", f"{story}:Gauss", "--data", "moons", "--out", str(out), *FAST]) == 0
    capsys.readouterr()
    assert main(["diagnose", str(out)]) == 2
    _one_line_error(capsys, "diagnose needs global latent sites", "Gauss")
    assert not (out / "diagnostics").exists()


@pytest.mark.parametrize("argv,fragment", [
    (["diagnose", "MISSING"], "no checkpoint directory"),
    (["diagnose", "RUN", "--split", "val", "--data", "few.npy"], "only a train split"),
])
def test_diagnose_user_errors(argv, fragment, gmm_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "few.npy", np.zeros((5, 2)))
    argv = [str(gmm_run) if a == "RUN" else a for a in argv]
    assert main([*argv, "--overwrite"]) == 2  # the run may hold diagnostics from another test
    _one_line_error(capsys, fragment)


def test_diagnose_has_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["diagnose", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: ppl-dgm diagnose" in out and "--nuts" in out and "--overwrite" in out


def test_a_plain_model_function_fits_evaluates_and_diagnoses(story, tmp_path, capsys):
    counts = np.random.default_rng(0).poisson(3.0, size=150).astype(float)
    np.save(tmp_path / "counts.npy", counts)
    out = tmp_path / "run"
    assert main(["fit", f"{story}:poisson_counts", "--data", str(tmp_path / "counts.npy"), "--out", str(out),
                 "-O", "guide=AutoNormal", "-O", "plate=counts", "-O", "size_arg=size", "--epochs", "300",
                 "--batch-size", "150", "--lr", "0.05", "--eval-samples", "200", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["kind"] == "predictive"
    sys.modules.pop(module_name(story), None)  # as in a new process
    assert main(["evaluate", str(out), "--json", "--num-samples", "200"]) == 0
    shape, rate = 2.0 + counts.sum(), 1.0 + len(counts)  # the exact posterior, Gamma(shape, rate)
    exact = torch.distributions.NegativeBinomial(torch.tensor(shape), probs=torch.tensor(1 / (rate + 1)))
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["test_nll_nats"] == pytest.approx(float(-exact.log_prob(torch.as_tensor(counts)).mean()),
                                                       abs=0.02)
    assert main(["diagnose", str(out), "--num-draws", "50"]) == 0
    assert (out / "diagnostics" / "loo.json").is_file()
