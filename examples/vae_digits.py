"""A VAE on scikit-learn's 8x8 digits: fit, importance-weighted test NLL, samples, reconstructions.

References:
    Kingma & Welling (2014), Auto-Encoding Variational Bayes, ICLR.
    Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders, ICLR.

    python examples/vae_digits.py --likelihood categorical --objective elbo --out runs/vae_digits
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import ppl_dgm
from ppl_dgm import plots
from ppl_dgm.datasets import load_dataset
from ppl_dgm.models import VAE


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--likelihood", default="categorical",
                        choices=["categorical", "gaussian", "discretized_logistic"])
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--objective", default="elbo", choices=["elbo", "iwae"])
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/vae_digits")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    splits = {name: load_dataset("digits", name, device=args.device) for name in ("train", "val", "test")}
    torch.manual_seed(args.seed)  # the initial weights depend on the seed too
    model = VAE(latent_dim=args.latent_dim, likelihood=args.likelihood)
    result = ppl_dgm.fit(model, splits["train"].x, val=splits["val"].x, epochs=args.epochs, objective=args.objective,
                         patience=50, seed=args.seed, device=args.device, progress=not args.no_progress)
    test = ppl_dgm.log_likelihood(model, splits["test"].x, num_samples=1000)
    print(f"best epoch {result.best_epoch}, validation loss {result.best_val_loss:.2f} nats")
    print(f"test NLL {test.nll:.2f} ± {test.stderr:.2f} nats per image ({test.kind}, {test.num_samples} samples), "
          f"{test.bits_per_dim:.3f} bits/dim; -ELBO {-test.elbo_mean:.2f}")

    out = Path(args.out)
    ppl_dgm.save(model, out)
    torch.manual_seed(args.seed)
    plots.image_grid(model.sample(64), (8, 8), out / "samples.png", vmax=16, title="samples")
    pairs = torch.stack([splits["test"].x[:32], model.reconstruct(splits["test"].x[:32])], 1).reshape(64, 64)
    plots.image_grid(pairs, (8, 8), out / "reconstructions.png", vmax=16, title="test image | reconstruction")
    plots.training_curve(result.train_loss, result.val_loss, out / "curve.png", result.best_epoch)
    print(f"checkpoint and figures in {out}")
    return {"test_nll": test.nll, "test_nll_stderr": test.stderr, "neg_elbo": -test.elbo_mean}


if __name__ == "__main__":
    main()
