"""VQ-VAE on scikit-learn's 8x8 digits: the bound on the test NLL, reconstructions, prior samples, codebook usage.

Fits `VQVAE` (the autoencoder with its codebook, then the MADE prior over the code strings on the trained
encoder's codes, both within one ``ppl_dgm.fit``), then on the test split: the reported figure
``-log p(x | z_q(x)) - log p(k(x))`` (an upper bound on the NLL; the point-mass guide makes every
importance weight equal, so ``--num-samples`` does not change it), split into its reconstruction and prior
parts; the pixel MSE of the reconstructions; codebook usage and perplexity. Figures: test images beside
their reconstructions and samples from the prior (prior -> codes -> decoder); codebook usage.

References:
    van den Oord, Vinyals & Kavukcuoglu (2017), Neural Discrete Representation Learning, NeurIPS.
    Germain, Gregor, Murray & Larochelle (2015), MADE: Masked Autoencoder for Distribution Estimation, ICML.

    python examples/vae_vqvae.py --out docs/images/vae_family/vqvae
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import ppl_dgm  # noqa: E402
from ppl_dgm import plots  # noqa: E402
from ppl_dgm.datasets import load_dataset  # noqa: E402
from ppl_dgm.models.vae.vqvae import VQVAE  # noqa: E402


@torch.no_grad()
def bound_parts(model: VQVAE, x: torch.Tensor) -> dict[str, float]:
    """Mean ``-log p(x | z_q(x))`` and ``-log p(k(x))`` (nats per image), the pixel MSE of the
    reconstructions (squared levels), and the codebook perplexity and number of entries used on ``x``."""
    model.eval()
    codes = model.codes(x)
    z_q = model.codebook[codes].flatten(-2)
    freq, perplexity = model.code_usage(x)
    return {"reconstruction_nll": float(-model.observation(z_q).log_prob(x).mean()),
            "prior_nll": float(-model.code_prior.log_prob(codes).mean()),
            "mse": float((model.decode_mean(z_q) - x).pow(2).mean()),
            "perplexity": perplexity, "codes_used": int((freq > 0).sum())}


def usage_figure(freq: torch.Tensor, perplexity: float, path: Path) -> None:
    """Bar chart of the entries' frequencies on the test codes, most used first."""
    fig, ax = plt.subplots(figsize=(6, 2.6))
    ax.bar(range(len(freq)), freq.sort(descending=True).values.numpy(), color="tab:blue")
    ax.set_xlabel("codebook entry (by use)")
    ax.set_ylabel("share of test positions")
    ax.set_title(f"codebook usage: perplexity {perplexity:.1f} of {len(freq)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--likelihood", default="discretized_logistic",
                        choices=["categorical", "gaussian", "discretized_logistic"])
    parser.add_argument("--num-positions", type=int, default=4)
    parser.add_argument("--num-codes", type=int, default=32)
    parser.add_argument("--codebook", default="ema", choices=["ema", "loss"])
    parser.add_argument("--objective", default="elbo", choices=["elbo", "iwae"])
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--patience", type=int, default=50)
    parser.add_argument("--num-samples", type=int, default=1000, help="importance samples per test image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/vae_vqvae")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    splits = {name: load_dataset("digits", name, device=args.device) for name in ("train", "val", "test")}
    torch.manual_seed(args.seed)  # the initial weights depend on the seed too
    model = VQVAE(likelihood=args.likelihood, num_positions=args.num_positions, num_codes=args.num_codes,
                  codebook=args.codebook)
    result = ppl_dgm.fit(model, splits["train"].x, val=splits["val"].x, epochs=args.epochs, patience=args.patience,
                         objective=args.objective, seed=args.seed, device=args.device, progress=not args.no_progress)
    test_x = splits["test"].x
    test = ppl_dgm.log_likelihood(model, test_x, num_samples=args.num_samples)
    figures = {"test_nll_bound": test.nll, "test_nll_stderr": test.stderr, "neg_elbo": -test.elbo_mean,
               "kind": test.kind, "num_samples": test.num_samples, **bound_parts(model, test_x),
               "best_epoch": result.best_epoch, "prior_epochs": len(result.history["prior_nll"]),
               "fit_seconds": result.seconds}

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    plots.image_panels({"test images": test_x[:36], "reconstructions": model.reconstruct(test_x[:36]),
                        "prior samples (means)": model.decode_mean(model.prior().sample((36,)))},
                       (8, 8), out / "reconstructions_samples.png", vmax=16, per_side=6, columns=3)
    usage_figure(*model.code_usage(test_x), out / "codebook_usage.png")
    (out / "vqvae.json").write_text(json.dumps(figures, indent=2))
    print(f"VQ-VAE test NLL <= {test.nll:.2f} ± {test.stderr:.2f} nats/image (reconstruction "
          f"{figures['reconstruction_nll']:.2f} + prior {figures['prior_nll']:.2f}); pixel MSE {figures['mse']:.2f}; "
          f"codebook perplexity {figures['perplexity']:.1f} ({figures['codes_used']}/{model.num_codes} used); "
          f"fit {result.seconds:.0f} s")
    return figures


if __name__ == "__main__":
    main()
