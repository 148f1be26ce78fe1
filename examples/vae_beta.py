"""beta-VAE on scikit-learn's 8x8 digits: what beta > 1 costs in test NLL, and how it empties latent dimensions.

Fits `BetaVAE` once per beta (beta=1 is the plain VAE; the other settings are the same), then on the test
split: the importance-weighted NLL, the -ELBO, the KL per latent dimension and the active units; figures of
the KL per dimension and of reconstructions for each beta.

References:
    Higgins et al. (2017), beta-VAE: Learning basic visual concepts with a constrained variational
    framework, ICLR.
    Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders, ICLR (active units).

    python examples/vae_beta.py --betas 1,4 --out docs/images/vae_family/beta-vae
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
from ppl_dgm import plots  # noqa: E402
from ppl_dgm.datasets import load_dataset  # noqa: E402
from ppl_dgm.evaluation.latents import latent_usage  # noqa: E402
from ppl_dgm.models.vae.beta import BetaVAE  # noqa: E402


def kl_figure(kl_per_dim: dict[str, np.ndarray], path: Path) -> None:
    """Bars of the KL per latent dimension (nats, sorted, test split) for each run."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    width = 0.8 / len(kl_per_dim)
    for index, (label, kl) in enumerate(kl_per_dim.items()):
        ax.bar(np.arange(kl.size) + index * width, np.sort(kl)[::-1], width, label=label)
    ax.set_xlabel("latent dimension (sorted by KL)")
    ax.set_ylabel("KL(q(z_j | x) || p(z_j)) [nats]")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--betas", default="1,4", help="comma-separated KL weights, one fit each")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--patience", type=int, default=50)
    parser.add_argument("--num-samples", type=int, default=1000, help="importance samples per test image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/vae_beta")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    splits = {name: load_dataset("digits", name, device=args.device) for name in ("train", "val", "test")}
    test_x = splits["test"].x
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figures, kl_per_dim, panels = {}, {}, {"test images": test_x[:16]}
    for beta in (float(b) for b in args.betas.split(",")):
        torch.manual_seed(args.seed)
        model = BetaVAE(beta=beta)
        result = ppl_dgm.fit(model, splits["train"].x, val=splits["val"].x, epochs=args.epochs, patience=args.patience,
                             seed=args.seed, device=args.device, progress=not args.no_progress)
        test = ppl_dgm.log_likelihood(model, test_x, num_samples=args.num_samples)
        usage = latent_usage(model, test_x)
        label = f"beta={beta:g}"
        figures[label] = {"test_nll": test.nll, "test_nll_stderr": test.stderr, "neg_elbo": -test.elbo_mean,
                          "kl": float(usage.kl_per_dim.sum()), "active_units": usage.active_units,
                          "best_epoch": result.best_epoch, "fit_seconds": result.seconds}
        kl_per_dim[label] = usage.kl_per_dim
        panels[label] = model.reconstruct(test_x[:16])
        print(f"{label}: test NLL {test.nll:.2f} ± {test.stderr:.2f} nats ({test.num_samples} samples), -ELBO "
              f"{-test.elbo_mean:.2f}, KL {figures[label]['kl']:.2f} nats, {usage.active_units} active units, "
              f"best epoch {result.best_epoch + 1}, fit {result.seconds:.0f} s")

    kl_figure(kl_per_dim, out / "kl_per_dim.png")
    plots.image_panels(panels, (8, 8), out / "reconstructions.png", vmax=16)
    (out / "vae_beta.json").write_text(json.dumps(figures, indent=2))
    first, *rest = figures
    print("summary: " + ", ".join(f"{label} NLL {figures[label]['test_nll']:.2f} "
                                  f"({figures[label]['test_nll'] - figures[first]['test_nll']:+.2f} vs {first})"
                                  for label in rest) + f"; {first} NLL {figures[first]['test_nll']:.2f}")
    return figures


if __name__ == "__main__":
    main()
