"""VampPrior VAE on scikit-learn's 8x8 digits: test NLL, the learned pseudo-inputs, samples.

Fits `VampPriorVAE` (the prior a mixture of the guide at K learned pseudo-inputs), then on the test split the
importance-weighted NLL and the -ELBO; figures of the pseudo-inputs (as images, and decoded at their codes)
and of samples from the mixture prior.

References:
    Tomczak & Welling (2018), VAE with a VampPrior, AISTATS.
    Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders, ICLR.

    python examples/vae_vampprior.py --likelihood discretized_logistic --out docs/images/vae_family/vampprior
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import ppl_dgm
from ppl_dgm import plots
from ppl_dgm.datasets import load_dataset
from ppl_dgm.models.vae.vampprior import VampPriorVAE


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--likelihood", default="discretized_logistic",
                        choices=["categorical", "gaussian", "discretized_logistic"])
    parser.add_argument("--num-pseudo-inputs", type=int, default=100)
    parser.add_argument("--objective", default="elbo", choices=["elbo", "iwae"])
    parser.add_argument("--num-particles", type=int, default=None, help="guide samples per example while fitting")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--patience", type=int, default=50)
    parser.add_argument("--num-samples", type=int, default=1000, help="importance samples per test image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/vae_vampprior")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    splits = {name: load_dataset("digits", name, device=args.device) for name in ("train", "val", "test")}
    torch.manual_seed(args.seed)  # the initial weights depend on the seed too
    model = VampPriorVAE(likelihood=args.likelihood, num_pseudo_inputs=args.num_pseudo_inputs)
    result = ppl_dgm.fit(model, splits["train"].x, val=splits["val"].x, epochs=args.epochs, patience=args.patience,
                         objective=args.objective, num_particles=args.num_particles, seed=args.seed,
                         device=args.device, progress=not args.no_progress)
    test = ppl_dgm.log_likelihood(model, splits["test"].x, num_samples=args.num_samples)
    figures = {"test_nll": test.nll, "test_nll_stderr": test.stderr, "neg_elbo": -test.elbo_mean,
               "num_samples": test.num_samples, "best_epoch": result.best_epoch,
               "best_val_loss": result.best_val_loss, "fit_seconds": result.seconds}

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shown = model.pseudo_inputs[:64].detach()
    plots.image_panels({"pseudo-inputs u_k": shown, "decoded at their codes": model.reconstruct(shown)},
                       (8, 8), out / "pseudo_inputs.png", vmax=16, per_side=8, columns=2)
    torch.manual_seed(args.seed)
    plots.image_grid(model.sample(64), (8, 8), out / "samples.png", vmax=16, title="samples from the VampPrior")
    (out / "vae_vampprior.json").write_text(json.dumps({**vars(args), **figures}, indent=2))
    print(f"best epoch {result.best_epoch + 1} of {result.epochs_run}, "
          f"validation loss {result.best_val_loss:.2f} nats, "
          f"fit {result.seconds:.0f} s; figures and JSON in {out}")
    print(f"summary: VampPrior (K={args.num_pseudo_inputs}, {args.likelihood}, {args.objective}) test NLL "
          f"{test.nll:.2f} ± {test.stderr:.2f} nats per image ({test.kind}, {test.num_samples} samples), "
          f"-ELBO {-test.elbo_mean:.2f}")
    return figures


if __name__ == "__main__":
    main()
