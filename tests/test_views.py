"""Representation views (ppl_dgm.views and ``ppl-dgm views``) on tiny untrained VAEs."""

import json

import pytest
import torch
import torch.nn.functional as F

from ppl_dgm import views
from ppl_dgm.cli import views as views_cli
from ppl_dgm.datasets import load_dataset
from ppl_dgm.models import VAE, get_model_class
from ppl_dgm.models.vae.cvae import CVAE

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "test")


def tiny_vae(latent_dim: int) -> VAE:
    torch.manual_seed(0)
    return VAE(hidden_dims=(8,), latent_dim=latent_dim).eval()  # dropout off where the test reads codes itself


def record_decoded_codes(monkeypatch, model) -> list:
    """Wrap ``model.decode_mean`` so that the codes (and context) it is given are kept."""
    calls, decode = [], model.decode_mean

    def recording(z, **ctx):
        calls.append((z.clone(), ctx))
        return decode(z, **ctx)

    monkeypatch.setattr(model, "decode_mean", recording)
    return calls


def test_traversal_varies_only_the_chosen_dims(monkeypatch, tmp_path, digits):
    model = tiny_vae(3)
    calls = record_decoded_codes(monkeypatch, model)
    x, data = digits.x[5], digits.x[:100]
    images = views.latent_traversals(model, x, tmp_path / "t.png", data=data, dims=[2, 0], steps=5, span=2.0)
    assert images.shape == (2, 5, 64) and images.min() >= 0 and images.max() <= 16
    assert is_png(tmp_path / "t.png")
    (z, ctx), = calls
    assert ctx == {}
    z = z.reshape(2, 5, 3)
    z0 = model.posterior_mean(x[None])[0]
    spread = model.posterior_mean(data).std(0)
    for row, dim in enumerate([2, 0]):
        others = [d for d in range(3) if d != dim]
        torch.testing.assert_close(z[row][:, others], z0[others].expand(5, 2), rtol=0, atol=0)
        torch.testing.assert_close(z[row, :, dim], z0[dim] + torch.linspace(-2, 2, 5) * spread[dim])
    torch.testing.assert_close(images[:, 2], model.reconstruct(x[None]).expand(2, 64))  # the middle column


def test_traversal_ranks_dims_by_kl_or_by_variance(monkeypatch, tmp_path, digits):
    model = tiny_vae(3)
    data = digits.x[:100]
    order, score, criterion = views.rank_latent_dims(model, data)
    kl = model.kl_per_dim(data).mean(0)
    assert criterion.startswith("mean KL") and torch.equal(score, kl)
    assert torch.equal(order, torch.argsort(kl, descending=True))
    calls = record_decoded_codes(monkeypatch, model)
    images = views.latent_traversals(model, digits.x[0], tmp_path / "t.png", data=data, num_dims=2, steps=3)
    assert images.shape == (2, 3, 64)
    varied = (calls[0][0].reshape(2, 3, 3).diff(dim=1).abs() > 0).any(dim=1)  # (rows, dims): which dims moved
    assert varied.tolist() == [[d == int(order[r]) for d in range(3)] for r in range(2)]

    variance = model.posterior_mean(data).var(0)
    for kl_per_dim in (lambda x, **ctx: None,  # a variant whose KL does not split by dimension
                       lambda x, **ctx: torch.ones(len(x), 5)):  # one whose KL covers more layers than its code
        monkeypatch.setattr(model, "kl_per_dim", kl_per_dim)
        order, score, criterion = views.rank_latent_dims(model, data)
        assert criterion == "variance of the posterior mean" and torch.equal(score, variance)
        assert torch.equal(order, torch.argsort(variance, descending=True))


def test_interpolate_ends_at_the_codes_and_slerp_stays_on_the_sphere():
    a, b = torch.randn(4, 5), torch.randn(4, 5)
    for method in ("linear", "slerp"):
        path = views.interpolate(a, b, 7, method)
        assert path.shape == (4, 7, 5)
        torch.testing.assert_close(path[:, 0], a, rtol=0, atol=1e-6)
        torch.testing.assert_close(path[:, -1], b, rtol=0, atol=1e-6)
    unit_a, unit_b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    norms = views.interpolate(unit_a, unit_b, 9, "slerp").norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones(4, 9))
    assert not torch.allclose(views.interpolate(unit_a, unit_b, 9, "linear").norm(dim=-1), torch.ones(4, 9))
    e1, e2 = torch.eye(2)[:1], torch.eye(2)[1:]
    torch.testing.assert_close(views.interpolate(e1, e2, 3, "slerp")[0, 1], torch.full((2,), 0.5 ** 0.5))
    parallel = views.interpolate(e1, 2 * e1, 3, "slerp")  # no angle: the straight line
    torch.testing.assert_close(parallel, views.interpolate(e1, 2 * e1, 3, "linear"))
    with pytest.raises(ValueError, match="'linear' or 'slerp'"):
        views.interpolate(a, b, 3, "cubic")


@pytest.mark.parametrize("method", ["linear", "slerp"])
def test_interpolations_decode_from_one_code_to_the_other(monkeypatch, tmp_path, digits, method):
    model = tiny_vae(3)
    calls = record_decoded_codes(monkeypatch, model)
    x_a, x_b = digits.x[:3], digits.x[3:6]
    images = views.interpolations(model, x_a, x_b, tmp_path / "i.png", steps=6, method=method)
    assert images.shape == (3, 8, 64) and is_png(tmp_path / "i.png")
    assert torch.equal(images[:, 0], x_a) and torch.equal(images[:, -1], x_b)
    z = calls[0][0].reshape(3, 6, 3)
    torch.testing.assert_close(z[:, 0], model.posterior_mean(x_a), rtol=0, atol=1e-6)
    torch.testing.assert_close(z[:, -1], model.posterior_mean(x_b), rtol=0, atol=1e-6)
    decoded = images[:, 1:-1]
    assert decoded.min() >= 0 and decoded.max() <= 16
    torch.testing.assert_close(decoded[:, 0], model.reconstruct(x_a))


def test_reconstructions_pair_each_digit_with_its_reconstruction(tmp_path, digits):
    model = tiny_vae(2)
    model.train()  # dropout on: the view must still be deterministic, and leave the mode as it found it
    pairs = views.reconstructions(model, digits.x[:10], tmp_path / "r.png", per_row=4)
    again = views.reconstructions(model, digits.x[:10], tmp_path / "r2.png", per_row=4)
    assert model.training and torch.equal(pairs, again)
    assert pairs.shape == (10, 2, 64) and is_png(tmp_path / "r.png")
    assert torch.equal(pairs[:, 0], digits.x[:10])
    model.eval()
    torch.testing.assert_close(pairs[:, 1], model.reconstruct(digits.x[:10]))


def test_latent_map_of_a_2d_code(tmp_path, digits):
    model = tiny_vae(2)
    shown = views.latent_map(model, digits.x, digits.y, tmp_path / "m.png", grid_size=5)
    assert is_png(tmp_path / "m.png") and shown.projection == "none"
    torch.testing.assert_close(shown.points, model.posterior_mean(digits.x))
    assert torch.equal(shown.labels, digits.y)
    assert shown.grid.shape == (5, 5, 64) and shown.grid.min() >= 0 and shown.grid.max() <= 16
    torch.testing.assert_close(shown.grid[1, 3], model.decode_mean(torch.stack([shown.u[3], shown.v[1]])[None])[0])
    assert shown.u[0] >= shown.points[:, 0].min() and shown.u[-1] <= shown.points[:, 0].max()


def test_latent_map_of_a_wider_code_says_fit_2d_or_asks_for_pca(tmp_path, digits):
    model = tiny_vae(3)
    with pytest.raises(ValueError, match="latent_dim=3: fit it with latent_dim=2"):
        views.latent_map(model, digits.x, digits.y, tmp_path / "m.png")
    assert not (tmp_path / "m.png").exists()
    shown = views.latent_map(model, digits.x, digits.y, tmp_path / "m.png", projection="pca", grid_size=4)
    assert shown.projection == "pca" and shown.points.shape == (len(digits.x), 2) and shown.grid.shape == (4, 4, 64)
    torch.testing.assert_close(shown.basis.T @ shown.basis, torch.eye(2), atol=1e-5, rtol=0)
    codes = model.posterior_mean(digits.x)
    torch.testing.assert_close(shown.points, (codes - codes.mean(0)) @ shown.basis)
    assert shown.points.var(0)[0] >= shown.points.var(0)[1]  # the first principal component first


def test_class_conditional_grid_of_a_conditional_model(monkeypatch, tmp_path, digits):
    torch.manual_seed(0)
    model = CVAE(hidden_dims=(8,), latent_dim=2).eval()
    calls = record_decoded_codes(monkeypatch, model)
    images = views.class_conditional_grid(model, tmp_path / "c.png", per_class=3)
    assert images.shape == (10, 3, 64) and images.min() >= 0 and images.max() <= 16 and is_png(tmp_path / "c.png")
    (z, ctx), = calls
    assert z.shape == (30, 2) and torch.equal(ctx["y"], torch.arange(10).repeat_interleave(3))
    assert z.std(0).min() > 0.5  # drawn from the standard normal prior, not a fixed code
    drawn = views.class_conditional_grid(model, tmp_path / "s.png", per_class=2, kind="sample")
    assert drawn.shape == (10, 2, 64) and torch.equal(drawn, drawn.round()) and is_png(tmp_path / "s.png")
    # the other views take the labels as y
    calls.clear()
    views.latent_traversals(model, digits.x[0], tmp_path / "t.png", y=digits.y[:1], data=digits.x[:50],
                            data_y=digits.y[:50], steps=3)
    (z, ctx), = calls
    assert len(z) == 6 and torch.equal(ctx["y"], digits.y[:1].repeat(6))
    y = digits.y[:4]
    pairs = views.reconstructions(model, digits.x[:4], tmp_path / "r.png", y=y)
    torch.testing.assert_close(pairs[:, 1], model.decode_mean(model.posterior_mean(digits.x[:4], y=y), y=y))
    with pytest.raises(ValueError, match="conditional on labels: pass the labels y"):
        views.reconstructions(model, digits.x[:4], tmp_path / "r.png")
    shown = views.latent_map(model, digits.x, digits.y, tmp_path / "m.png")
    assert shown.grid is None  # the decoder needs a label; the plane is not decoded
    torch.testing.assert_close(shown.points, model.posterior_mean(digits.x, y=digits.y))


def test_views_reject_models_without_the_code_interface(tmp_path, digits):
    model = tiny_vae(2)
    with pytest.raises(ValueError, match="not conditional on labels"):
        views.class_conditional_grid(model, tmp_path / "c.png")
    gmm = get_model_class("gmm")(n_components=2)
    with pytest.raises(TypeError, match="GaussianMixture has no posterior_mean and no decode_mean"):
        views.reconstructions(gmm, digits.x[:4], tmp_path / "r.png")
    with pytest.raises(TypeError, match="no posterior_mean"):
        views.latent_traversals(gmm, digits.x[0], tmp_path / "t.png")
    with pytest.raises(ValueError, match="x_a and x_b must have the same shape"):
        views.interpolations(model, digits.x[:2], digits.x[:3], tmp_path / "i.png")
    with pytest.raises(ValueError, match="dims must be"):
        views.latent_traversals(model, digits.x[0], tmp_path / "t.png", dims=[5])
    assert not list(tmp_path.iterdir())


@pytest.fixture
def main(monkeypatch):
    """``ppl_dgm.cli.main`` with the ``views`` subcommand (added here until ppl_dgm/cli/__init__.py lists it)."""
    from ppl_dgm import cli

    if views_cli not in cli.COMMAND_MODULES:
        monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, views_cli))
    return cli.main


@pytest.fixture(scope="module")
def fitted_2d(tmp_path_factory):
    from ppl_dgm.cli import main

    out = tmp_path_factory.mktemp("run") / "vae2d"
    assert main(["fit", "vae", "--data", "digits", "--out", str(out), "--epochs", "1", "--eval-samples", "0",
                 "--no-progress", "-O", "hidden_dims=[8]", "-O", "latent_dim=2"]) == 0
    return out


def test_cli_writes_every_view_that_applies_and_a_json(main, fitted_2d, tmp_path, capsys):
    out = tmp_path / "views"
    assert main(["views", str(fitted_2d), "--out", str(out), "--steps", "5", "--num-dims", "2", "-n", "6"]) == 0
    summary = json.loads((out / "views.json").read_text())
    assert list(summary["views"]) == ["traversals", "interpolations", "reconstructions", "latent_map"]
    assert summary["model"] == "VAE" and summary["split"] == "test" and summary["data"] == "digits"
    for name, view in summary["views"].items():
        assert view["file"] == f"{name}.png" and is_png(out / view["file"])
    assert summary["views"]["latent_map"] == {"file": "latent_map.png", "projection": "none", "decoded_grid": True}
    assert len(summary["views"]["reconstructions"]["indices"]) == 6
    assert summary["views"]["traversals"]["criterion"].startswith("mean KL")
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("4 view(s) of VAE on digits test")
    again = tmp_path / "again"
    assert main(["views", str(fitted_2d), "--out", str(again), "--which", "interpolations",
                 "--interpolation", "slerp", "--pairs", "2"]) == 0
    assert json.loads((again / "views.json").read_text())["views"]["interpolations"]["method"] == "slerp"
    assert sorted(p.name for p in again.iterdir()) == ["interpolations.png", "views.json"]


def test_cli_draws_the_class_grid_of_a_cvae_and_same_class_pairs(main, tmp_path, digits):
    run = tmp_path / "cvae"
    assert main(["fit", "cvae", "--data", "digits", "--out", str(run), "--epochs", "1", "--eval-samples", "0",
                 "--no-progress", "-O", "hidden_dims=[8]", "-O", "latent_dim=3"]) == 0
    out = tmp_path / "views"
    assert main(["views", str(run), "--out", str(out), "--per-class", "2", "--pairs", "3", "-n", "4"]) == 0
    summary = json.loads((out / "views.json").read_text())
    assert list(summary["views"]) == ["traversals", "interpolations", "class_grid", "reconstructions"]
    assert all(is_png(out / view["file"]) for view in summary["views"].values())
    pairs = summary["views"]["interpolations"]["pairs"]
    assert len(pairs) == 3 and all(a != b and digits.y[a] == digits.y[b] for a, b in pairs)


@pytest.mark.parametrize("argv, message", [
    (["--which", "class_grid"], "class_grid needs a conditional model"),
    (["--which", "latent_map,reconstructions", "--data", "moons"], "moons has no image form"),
])
def test_cli_usage_errors_are_one_line(main, fitted_2d, tmp_path, capsys, argv, message):
    assert main(["views", str(fitted_2d), "--out", str(tmp_path / "v"), *argv]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
    assert not (tmp_path / "v").exists()


def test_cli_rejects_an_unknown_view_and_a_model_without_codes(main, fitted_2d, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["views", str(fitted_2d), "--out", str(tmp_path / "v"), "--which", "traversals,nope"])
    assert exit_info.value.code == 2 and "unknown view(s) nope" in capsys.readouterr().err
    gmm = tmp_path / "gmm"
    assert main(["fit", "gmm", "--data", "digits", "--out", str(gmm), "-O", "n_components=2", "-O",
                 "covariance_type=diag", "--eval-samples", "0", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["views", str(gmm), "--out", str(tmp_path / "v")]) == 2
    error = capsys.readouterr().err.strip()
    assert "GaussianMixture has no posterior_mean" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "v").exists()
