"""Hyperspherical VAE (S-VAE) on scikit-learn's 8x8 digits, against the Gaussian VAE of the same latent size.

For each latent size ``m`` fits `SVAE` (von Mises-Fisher guide on the sphere S^(m-1), uniform prior) and
`VAE` (Gaussian guide, standard normal prior) with the same networks and fitting settings, then reports on the
test split the importance-weighted NLL, the -ELBO, the KL term and the fit time; draws the test codes of the
m = 3 (or m = 2) models colored by label: the posterior modes on the 2-sphere (circle) for the S-VAE, the
posterior means in R^3 (R^2) for the VAE.

References:
    Davidson, Falorsi, De Cao, Kipf & Tomczak (2018), Hyperspherical Variational Auto-Encoders, UAI.
    Wood (1994), Simulation of the von Mises Fisher distribution, Communications in Statistics.
    Naesseth, Ruiz, Linderman & Blei (2017), Reparameterization Gradients through Acceptance-Rejection
    Sampling Algorithms, AISTATS.

    python examples/vae_svae.py --latent-dims 3,10,16 --out docs/images/vae_family/svae
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import ppl_dgm  # noqa: E402
from ppl_dgm.datasets import load_dataset  # noqa: E402
from ppl_dgm.models.vae.svae import SVAE  # noqa: E402
from ppl_dgm.models.vae.vae import VAE  # noqa: E402
from ppl_dgm.models.vae.von_mises_fisher import VonMisesFisher, vmf_log_normalizer  # noqa: E402

GRADIENT_CASES = ((3, 1.0), (3, 10.0), (16, 5.0), (16, 50.0))
"""(m, kappa) of the gradient check."""


def kappa_gradient_check(m: int, kappa: float, draws: int) -> dict[str, float]:
    """d/dkappa E_q[exp(c.z)] for q = vMF(mu, kappa) on S^{m-1}: exact (closed form C_m(kappa) / C_m(|kappa mu + c|)),
    and the Monte Carlo means ± standard errors over ``draws`` samples with and without the rejection correction."""
    dtype = torch.float64
    c = torch.linspace(-0.8, 1.1, m, dtype=dtype)
    mu = F.normalize(torch.ones(m, dtype=dtype), dim=-1)
    exact_kappa = torch.tensor(kappa, dtype=dtype, requires_grad=True)
    exact = (vmf_log_normalizer(m, exact_kappa) - vmf_log_normalizer(m, (exact_kappa * mu + c).norm())).exp()
    (exact_grad,) = torch.autograd.grad(exact, exact_kappa)
    row = {"m": m, "kappa": kappa, "exact": float(exact_grad)}
    for name, corrected in (("corrected", True), ("rep_only", False)):
        leaf = torch.full((draws,), kappa, dtype=dtype, requires_grad=True)  # one leaf per draw: per-draw gradients
        q = VonMisesFisher(mu.expand(draws, m), leaf)
        z = q.rsample()
        f = (z @ c).exp()
        (f + f.detach() * q.score_parts(z).score_function if corrected else f).sum().backward()
        row[name], row[name + "_stderr"] = float(leaf.grad.mean()), float(leaf.grad.std() / draws**0.5)
    return row


def latent_figure(codes: dict[str, tuple[np.ndarray, bool]], labels: np.ndarray, path: Path) -> None:
    """Scatter of test codes ``(N, 2)`` or ``(N, 3)`` per model, colored by digit label; panels flagged as on the
    sphere get the unit circle (a wireframe of the unit sphere) and the limits ``[-1, 1]``."""
    fig = plt.figure(figsize=(5.2 * len(codes), 4.8), layout="constrained")
    for index, (title, (z, on_sphere)) in enumerate(codes.items(), start=1):
        three_d = z.shape[1] == 3
        ax = fig.add_subplot(1, len(codes), index, **({"projection": "3d"} if three_d else {}))
        if on_sphere and three_d:
            u, v = np.meshgrid(np.linspace(0, 2 * np.pi, 25), np.linspace(0, np.pi, 13))
            ax.plot_wireframe(np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v), color="0.85", lw=0.5)
        elif on_sphere:
            t = np.linspace(0, 2 * np.pi, 200)
            ax.plot(np.cos(t), np.sin(t), color="0.85", lw=1)
        points = ax.scatter(*z.T, c=labels, cmap="tab10", s=8, vmin=-0.5, vmax=9.5)
        if on_sphere:
            for axis in ("x", "y", "z") if three_d else ("x", "y"):
                getattr(ax, f"set_{axis}lim")(-1.05, 1.05)
        if three_d:
            ax.set_box_aspect((1, 1, 1))
        else:
            ax.set_aspect("equal")
        ax.set_title(title)
    fig.colorbar(points, ax=fig.axes, ticks=range(10), shrink=0.7, label="digit")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent-dims", default="3,10,16", help="comma-separated latent sizes m, two fits each")
    parser.add_argument("--models", default="svae,vae", help="which of svae, vae to fit for each latent size")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--patience", type=int, default=50)
    parser.add_argument("--objective", default="elbo", choices=["elbo", "iwae"],
                        help="both carry the rejection sampler's gradient correction")
    parser.add_argument("--gradient-draws", type=int, default=40000, help="draws per case of the gradient check")
    parser.add_argument("--likelihood", default="categorical", choices=["categorical", "discretized_logistic"])
    parser.add_argument("--num-samples", type=int, default=1000, help="importance samples per test image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/vae_svae")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    gradients = [kappa_gradient_check(m, kappa, args.gradient_draws) for m, kappa in GRADIENT_CASES]
    for row in gradients:
        print(f"d/dkappa E[exp(c.z)], m={row['m']}, kappa={row['kappa']:g}: exact {row['exact']:.5f}, with correction "
              f"{row['corrected']:.5f} ± {row['corrected_stderr']:.5f}, reparameterization only "
              f"{row['rep_only']:.5f} ± {row['rep_only_stderr']:.5f}")
    objective = args.objective
    splits = {name: load_dataset("digits", name, device=args.device) for name in ("train", "val", "test")}
    test = splits["test"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, dict[str, float]] = {}
    codes: dict[str, np.ndarray] = {}
    for m in (int(d) for d in args.latent_dims.split(",")):
        for name, cls in ((name, {"svae": SVAE, "vae": VAE}[name]) for name in args.models.split(",")):
            torch.manual_seed(args.seed)
            model = cls(latent_dim=m, likelihood=args.likelihood)
            result = ppl_dgm.fit(model, splits["train"].x, val=splits["val"].x, epochs=args.epochs,
                                 patience=args.patience, objective=objective, seed=args.seed, device=args.device,
                                 progress=not args.no_progress)
            score = ppl_dgm.log_likelihood(model, test.x, num_samples=args.num_samples, seed=args.seed)
            kl = model.kl(test.x) if isinstance(model, SVAE) else model.kl_per_dim(test.x).sum(-1)
            label = f"{name} m={m}"
            figures[label] = {"test_nll": score.nll, "test_nll_stderr": score.stderr, "neg_elbo": -score.elbo_mean,
                              "kl": float(kl.mean()), "best_epoch": result.best_epoch,
                              "fit_seconds": result.seconds}
            print(f"{label}: test NLL {score.nll:.2f} ± {score.stderr:.2f} nats ({score.num_samples} samples), "
                  f"-ELBO {-score.elbo_mean:.2f}, KL {float(kl.mean()):.2f} nats, best epoch {result.best_epoch + 1}, "
                  f"fit {result.seconds:.0f} s")
            if m in (2, 3):
                z = model.encode(test.x)[0] if isinstance(model, SVAE) else model.posterior_mean(test.x)
                kind = "S-VAE: mode mu(x) on the sphere" if isinstance(model, SVAE) else "VAE: posterior mean"
                codes[f"{kind} (m={m})"] = (z.detach().cpu().numpy(), isinstance(model, SVAE))

    if codes:
        latent_figure(codes, test.y.cpu().numpy(), out / "latent_codes.png")
    (out / "vae_svae.json").write_text(json.dumps({"fits": figures, "kappa_gradient": gradients}, indent=2))
    print("summary: test NLL (nats/image) " + ", ".join(f"{label} {row['test_nll']:.2f}"
                                                        for label, row in figures.items()))
    return figures


if __name__ == "__main__":
    main()
