"""An integer discrete flow on scikit-learn's 8x8 digits: fit, exact test NLL, timings, samples.

References:
    Hoogeboom, Peters, van den Berg & Welling (2019), Integer Discrete Flows and Lossless Compression, NeurIPS.
    Tomczak (2022), Deep Generative Modeling, Springer (Chapter 3: flows for discrete data).

    python examples/idf_digits.py --out docs/images/idf
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import ppl_dgm
from ppl_dgm import plots
from ppl_dgm.datasets import load_dataset
from ppl_dgm.evaluation.timing import median_seconds
from ppl_dgm.models.flows.idf import IDF
from ppl_dgm.models.flows.idf_base import DiscretizedLogisticMixture


def _coding_figures(model: IDF, x: torch.Tensor) -> dict[str, float | list[float]]:
    """How the entropy-coding alphabet fits: range of the latent integers ``f(x)`` of ``x``, the base's largest
    per-dimension mass outside the alphabet, and the largest gap (nats per image) between the code length of
    ``x`` and ``-log P(x)``."""
    symbols = model.to_symbols(x)
    latents = symbols + model.symbol_offset
    base = model.base()  # in float64, so that a tiny mass outside is not lost to rounding
    base = DiscretizedLogisticMixture(base.logits.double(), base.loc.double(), base.scale.double())
    values = torch.arange(model.num_symbols, dtype=torch.float64, device=x.device) + model.symbol_offset
    inside = base.log_prob(values.unsqueeze(-1)).logsumexp(0)  # (D,) log-mass inside the alphabet
    _, log_probs = model.coding_log_probs(symbols, 0)
    code_length = -log_probs.gather(-1, symbols.unsqueeze(-1)).squeeze(-1).sum(-1)
    return {
        "test_latent_range": [int(latents.min()), int(latents.max())],
        "alphabet": [model.symbol_offset, model.symbol_offset + model.num_symbols - 1],
        "base_mass_outside_alphabet_max": float(-torch.expm1(inside).max()),
        "code_length_minus_nll_max_abs_nats": float((code_length + model.log_prob(x)).abs().max()),
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-couplings", type=int, default=12)
    parser.add_argument("--num-parts", type=int, default=4, help="parts each coupling splits the pixels into")
    parser.add_argument("--hidden", type=int, default=128, help="width of the two hidden layers of each network")
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=600)
    parser.add_argument("--patience", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/idf_digits")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    splits = {name: load_dataset("digits", name, device=device).x for name in ("train", "val", "test")}
    torch.manual_seed(args.seed)  # the initial weights depend on the seed too
    model = IDF(num_couplings=args.num_couplings, num_parts=args.num_parts, hidden_dims=(args.hidden, args.hidden),
                dropout=args.dropout)
    result = ppl_dgm.fit(model, splits["train"], val=splits["val"], epochs=args.epochs, batch_size=64, lr=1e-3,
                         patience=args.patience, seed=args.seed, device=device, progress=not args.no_progress)
    test = ppl_dgm.log_likelihood(model, splits["test"])
    print(f"best epoch {result.best_epoch + 1} of {result.epochs_run}, validation NLL {result.best_val_loss:.2f} nats "
          f"({result.seconds:.0f} s)")

    with torch.no_grad():
        log_prob_s = median_seconds(lambda: model.log_prob(splits["test"]), device, repeats=5)
        sample_s = median_seconds(lambda: model.sample(1000), device, repeats=5)
        torch.manual_seed(args.seed)
        samples = model.sample(1000)
    outside = float(((samples < 0) | (samples > model.num_levels - 1)).double().mean())
    coding = _coding_figures(model, splits["test"])

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shown = samples[:32].clamp(0, model.num_levels - 1)  # display only: values outside 0..16 drawn as 0 or 16
    pairs = torch.stack([splits["test"][:32], shown], 1).reshape(64, 64)
    plots.image_grid(pairs, (8, 8), out / "samples.png", vmax=16, title="test digit | IDF sample")
    plots.training_curve(result.train_loss, result.val_loss, out / "curve.png", result.best_epoch)
    per_image = -test.per_sample
    figures = {
        **test.summary(),
        "test_nll_per_image_quantiles": dict(zip(("min", "q25", "median", "q75", "max"), torch.quantile(
            per_image, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=per_image.dtype)).tolist(), strict=True)),
        "best_val_nll_nats": result.best_val_loss,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "fit_seconds": result.seconds,
        "log_prob_447_test_seconds": log_prob_s,
        "sample_1000_seconds": sample_s,
        "sample_share_outside_0_16": outside,
        **coding,
        "device": str(device),
        "config": model.config,
    }
    (out / "idf_digits.json").write_text(json.dumps(figures, indent=2))
    print(f"log_prob of {len(splits['test'])} test digits {log_prob_s * 1e3:.1f} ms, 1000 samples "
          f"{sample_s * 1e3:.1f} ms; {100 * outside:.2f}% of sampled pixels outside 0..16 (clamped for display)")
    print(f"IDF digits: test NLL {test.nll:.2f} ± {test.stderr:.2f} nats/image ({test.kind}), "
          f"{test.bits_per_dim:.3f} bits/dim; figures and JSON in {out}")
    return figures


if __name__ == "__main__":
    main()
