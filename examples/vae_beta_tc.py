"""beta-TCVAE on scikit-learn's 8x8 digits: the KL term split into mutual information, total correlation and
dimension-wise KL, for several weights beta on the total correlation.

Fits `BetaTCVAE` once per beta (beta=1 with alpha=gamma=1 is the plain VAE), then prints the importance-weighted
test NLL, the -ELBO and the three KL parts (nats per example, over the training set: ``q(z)`` the exact mixture
of the 1,000 training posteriors), and plots the parts against beta.

References:
    Chen, Li, Grosse & Duvenaud (2018), Isolating sources of disentanglement in variational autoencoders,
    NeurIPS.
    Hoffman & Johnson (2016), ELBO surgery, NeurIPS workshop on advances in approximate Bayesian inference.

    python examples/vae_beta_tc.py --betas 1,3,6,10 --out docs/images/vae_family/beta-tcvae
    python examples/vae_beta_tc.py --checkpoints runs/vae runs/betavae runs/betatcvae
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

import ppl_dgm  # noqa: E402
from ppl_dgm.datasets import load_dataset  # noqa: E402
from ppl_dgm.models.vae.beta_tc import BetaTCVAE  # noqa: E402
from ppl_dgm.models.vae.beta_tc_estimators import kl_decomposition  # noqa: E402

PARTS = {"mutual_information": "index-code MI", "total_correlation": "total correlation",
         "dimensionwise_kl": "dimension-wise KL"}


def parts_figure(figures: dict[str, dict[str, float]], path: Path) -> None:
    """Stacked bars of the three KL parts (nats per training example) for each beta."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    labels = list(figures)
    bottom = np.zeros(len(labels))
    for key, name in PARTS.items():
        values = np.array([figures[label][key] for label in labels])
        ax.bar(labels, values, bottom=bottom, label=name)
        bottom += values
    ax.set_ylabel("nats per training example")
    ax.set_title("KL(q(z|x) || p(z)) = MI + TC + DWKL")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def decompose_runs(runs: list[str], train_x: torch.Tensor, seed: int, device: str) -> dict[str, dict[str, float]]:
    """Print and return the KL parts (nats per training example, exact mixture over ``train_x``) of saved runs."""
    figures = {}
    for run in runs:
        model = ppl_dgm.load(run, device=device).eval()
        torch.manual_seed(seed)
        figures[run] = kl_decomposition(model, train_x).as_dict()
        print(f"{run}: " + ", ".join(f"{name} {value:.2f}" for name, value in figures[run].items()))
    print("summary: " + "; ".join(f"{run} TC {f['total_correlation']:.2f} of KL {f['kl']:.2f}"
                                  for run, f in figures.items()))
    return figures


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--betas", default="1,6", help="comma-separated weights of the total correlation")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--patience", type=int, default=50)
    parser.add_argument("--objective", default="elbo", choices=["elbo", "iwae"])
    parser.add_argument("--num-samples", type=int, default=1000, help="importance samples per test image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/vae_beta_tc")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--checkpoints", nargs="+", metavar="RUN_DIR",
                        help="instead of fitting: the KL parts of saved runs of any Gaussian-posterior VAE")
    args = parser.parse_args(argv)

    splits = {name: load_dataset("digits", name, device=args.device) for name in ("train", "val", "test")}
    if args.checkpoints:
        return decompose_runs(args.checkpoints, splits["train"].x, args.seed, args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figures = {}
    for beta in (float(b) for b in args.betas.split(",")):
        torch.manual_seed(args.seed)
        model = BetaTCVAE(beta=beta)
        result = ppl_dgm.fit(model, splits["train"].x, val=splits["val"].x, epochs=args.epochs, patience=args.patience,
                             objective=args.objective, seed=args.seed, device=args.device,
                             progress=not args.no_progress)
        test = ppl_dgm.log_likelihood(model, splits["test"].x, num_samples=args.num_samples)
        torch.manual_seed(args.seed)
        parts = model.kl_decomposition(splits["train"].x)
        label = f"beta={beta:g}"
        figures[label] = {"test_nll": test.nll, "test_nll_stderr": test.stderr, "neg_elbo": -test.elbo_mean,
                          **parts.as_dict(), "best_epoch": result.best_epoch, "fit_seconds": result.seconds}
        print(f"{label}: test NLL {test.nll:.2f} ± {test.stderr:.2f} nats ({test.num_samples} samples), -ELBO "
              f"{-test.elbo_mean:.2f}; train KL {parts.kl:.2f} = MI {parts.mutual_information:.2f} + TC "
              f"{parts.total_correlation:.2f} + DWKL {parts.dimensionwise_kl:.2f} nats; best epoch "
              f"{result.best_epoch + 1}, fit {result.seconds:.0f} s")

    parts_figure(figures, out / "kl_parts.png")
    (out / "vae_beta_tc.json").write_text(json.dumps(figures, indent=2))
    print("summary: " + "; ".join(f"{label} NLL {f['test_nll']:.2f}, TC {f['total_correlation']:.2f}"
                                  for label, f in figures.items()))
    return figures


if __name__ == "__main__":
    main()
