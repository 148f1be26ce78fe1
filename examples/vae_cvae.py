"""Conditional VAE on scikit-learn's 8x8 digits: p(x | y) on the test split and a class-conditional grid.

Fits `CVAE` on the training digits with their labels, then on the test split the importance-weighted
``-log p(x | y)`` (the label given, so not comparable with an unconditional ``-log p(x)``: it is smaller by
up to ``log 10 = 2.30`` nats, the information the label carries) and the -ELBO; figures of a
class-conditional grid (row ``y = 0..9``, one prior draw of ``z`` per column shared by every row, so a
column keeps its style across digits) and of test digits reconstructed with their labels. Whether a draw is
the digit asked for is read by the package's digits classifier (trained on the training split).

References:
    Sohn, Lee & Yan (2015), Learning Structured Output Representation using Deep Conditional Generative
    Models, NeurIPS.
    Kingma, Rezende, Mohamed & Welling (2014), Semi-supervised Learning with Deep Generative Models, NeurIPS.

    python examples/vae_cvae.py --out docs/images/vae_family/cvae
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import ppl_dgm
from ppl_dgm import plots
from ppl_dgm.datasets import load_dataset
from ppl_dgm.evaluation.digits_classifier import classifier_accuracy, digits_classifier
from ppl_dgm.models.vae.cvae import CVAE
from ppl_dgm.views import image_rows


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--likelihood", default="categorical",
                        choices=["categorical", "gaussian", "discretized_logistic"])
    parser.add_argument("--objective", default="elbo", choices=["elbo", "iwae"])
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--patience", type=int, default=50)
    parser.add_argument("--num-samples", type=int, default=1000, help="importance samples per test image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/vae_cvae")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    splits = {name: load_dataset("digits", name, device=args.device) for name in ("train", "val", "test")}
    data = {name: {"x": split.x, "y": split.y} for name, split in splits.items()}
    torch.manual_seed(args.seed)  # the initial weights depend on the seed too
    model = CVAE(likelihood=args.likelihood)
    result = ppl_dgm.fit(model, data["train"], val=data["val"], epochs=args.epochs, patience=args.patience,
                         objective=args.objective, seed=args.seed, device=args.device, progress=not args.no_progress)
    test = ppl_dgm.log_likelihood(model, data["test"], num_samples=args.num_samples)
    figures = {"test_nll_given_y": test.nll, "test_nll_stderr": test.stderr, "neg_elbo": -test.elbo_mean,
               "num_samples": test.num_samples, "best_epoch": result.best_epoch,
               "best_val_loss": result.best_val_loss, "fit_seconds": result.seconds}

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    columns = 10
    z = model.prior().sample((columns,)).repeat(10, 1)  # column c: the same z for every digit
    y = torch.arange(10, device=z.device).repeat_interleave(columns)
    grid = model.decode_mean(z, y=y).reshape(10, columns, -1)
    image_rows(grid, (8, 8), out / "class_grid.png", vmax=16, row_labels=[f"y={c}" for c in range(10)],
               title="mean images of p(x | y, z): one z per column")
    test_x, test_y = splits["test"].x[:32], splits["test"].y[:32]
    pairs = torch.stack([test_x, model.reconstruct(test_x, y=test_y)], 1).reshape(64, 64)
    plots.image_grid(pairs, (8, 8), out / "reconstructions.png", vmax=16, title="test image | reconstruction")
    labels = torch.arange(10, device=z.device).repeat_interleave(100)
    torch.manual_seed(args.seed)
    draws = model.sample(len(labels), y=labels)
    classifier = digits_classifier(args.device)
    figures["draws_read_as_asked"] = float((classifier(draws).argmax(-1) == labels).double().mean())
    figures["classifier_test_accuracy"] = classifier_accuracy(classifier, "test")
    (out / "vae_cvae.json").write_text(json.dumps({**vars(args), **figures}, indent=2))
    print(f"best epoch {result.best_epoch + 1} of {result.epochs_run}, "
          f"validation loss {result.best_val_loss:.2f} nats, "
          f"fit {result.seconds:.0f} s; figures and JSON in {out}")
    print(f"summary: CVAE ({args.likelihood}, {args.objective}) test NLL -log p(x | y) {test.nll:.2f} ± "
          f"{test.stderr:.2f} nats per image ({test.kind}, {test.num_samples} samples), -ELBO {-test.elbo_mean:.2f}; "
          f"the digits classifier reads the asked-for label off {figures['draws_read_as_asked']:.1%} of 1000 draws "
          f"(and {figures['classifier_test_accuracy']:.1%} of the test digits)")
    return figures


if __name__ == "__main__":
    main()
