"""A VAE on scikit-learn's 8x8 digits: fit, importance-weighted test NLL, samples, reconstructions.

References:
    Kingma & Welling (2014), Auto-Encoding Variational Bayes, ICLR.
    Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders, ICLR.
    Salimans, Karpathy, Chen & Kingma (2017), PixelCNN++, ICLR (the discretized logistic likelihood).

    python examples/vae_digits.py --likelihood discretized_logistic --out runs/vae_digits --docs

``--docs`` records the run's figures in docs/images/vae/vae_digits.json (one row per likelihood) and rewrites
the results table of docs/models/vae.md from it, between the ``vae-digits`` markers, so the page cannot
drift from what this script prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

import ppl_dgm
from ppl_dgm import plots
from ppl_dgm.datasets import load_dataset
from ppl_dgm.models import VAE

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "docs" / "images" / "vae" / "vae_digits.json"
PAGE = ROOT / "docs" / "models" / "vae.md"
LABELS = {"categorical": "categorical (default)", "discretized_logistic": "discretized logistic",
          "gaussian": "gaussian (dequantized)"}
TABLE_HEADER = ("| likelihood | command | best val. −ELBO | test NLL (nats/image) | bits/dim | kind | test −ELBO |\n"
                "| --- | --- | --- | --- | --- | --- | --- |")


def results_table(records: dict[str, dict[str, Any]]) -> str:
    """The markdown table of the page: one row per recorded likelihood, figures in nats per image."""
    rows = [TABLE_HEADER]
    for likelihood, r in sorted(records.items()):
        rows.append(f"| {LABELS[likelihood]} | `{r['command']}` | {r['best_val_neg_elbo']:.2f} | "
                    f"**{r['test_nll']:.2f} ± {r['test_nll_stderr']:.2f}** | {r['bits_per_dim']:.3f} | {r['kind']} | "
                    f"{r['neg_elbo']:.2f} |")
    return "\n".join(rows)


def record_in_docs(likelihood: str, numbers: dict[str, Any]) -> bool:
    """Store this run's row in `RECORDS` and rewrite the page's table; whether the page has the markers."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from doc_blocks import replace_block

    records = json.loads(RECORDS.read_text()) if RECORDS.is_file() else {}
    records[likelihood] = numbers
    RECORDS.parent.mkdir(parents=True, exist_ok=True)
    RECORDS.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
    return replace_block(PAGE, "vae-digits", results_table(records))


def main(argv: list[str] | None = None) -> dict[str, Any]:
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
    parser.add_argument("--docs", action="store_true",
                        help=f"record the figures in {RECORDS.relative_to(ROOT)} and rewrite the table of "
                             f"{PAGE.relative_to(ROOT)}")
    args = parser.parse_args(argv)

    splits = {name: load_dataset("digits", name, device=args.device) for name in ("train", "val", "test")}
    torch.manual_seed(args.seed)  # the initial weights depend on the seed too
    model = VAE(latent_dim=args.latent_dim, likelihood=args.likelihood)
    result = ppl_dgm.fit(model, splits["train"].x, val=splits["val"].x, epochs=args.epochs, objective=args.objective,
                         patience=50, seed=args.seed, device=args.device, progress=not args.no_progress)
    test = ppl_dgm.log_likelihood(model, splits["test"].x, num_samples=1000)

    out = Path(args.out)
    ppl_dgm.save(model, out)
    torch.manual_seed(args.seed)
    plots.image_grid(model.sample(64), (8, 8), out / "samples.png", vmax=16, title="samples")
    pairs = torch.stack([splits["test"].x[:32], model.reconstruct(splits["test"].x[:32])], 1).reshape(64, 64)
    plots.image_grid(pairs, (8, 8), out / "reconstructions.png", vmax=16, title="test image | reconstruction")
    plots.training_curve(result.train_loss, result.val_loss, out / "curve.png", result.best_epoch)

    flags = [f"--likelihood {args.likelihood}"] if args.likelihood != "categorical" else []
    flags += [f"--{k.replace('_', '-')} {getattr(args, k)}" for k, default in
              (("latent_dim", 16), ("objective", "elbo"), ("epochs", 1000), ("seed", 0)) if getattr(args, k) != default]
    numbers = {"command": " ".join(["python examples/vae_digits.py", *flags]),
               "best_epoch": result.best_epoch + 1, "epochs_run": result.epochs_run,
               "best_val_neg_elbo": result.best_val_loss, "test_nll": test.nll, "test_nll_stderr": test.stderr,
               "bits_per_dim": test.bits_per_dim, "kind": test.kind, "num_samples": test.num_samples,
               "neg_elbo": -test.elbo_mean, "fit_seconds": result.seconds}
    (out / "vae_digits.json").write_text(json.dumps(numbers, indent=1) + "\n")
    print(f"checkpoint, figures and vae_digits.json in {out}")
    if args.docs:
        where = "rewritten" if record_in_docs(args.likelihood, numbers) else "not rewritten (no vae-digits markers)"
        print(f"row recorded in {RECORDS.relative_to(ROOT)}; table of {PAGE.relative_to(ROOT)} {where}")
    print(f"{args.likelihood}: best epoch {result.best_epoch + 1} of {result.epochs_run}, validation -ELBO "
          f"{result.best_val_loss:.2f}; test NLL {test.nll:.2f} ± {test.stderr:.2f} nats per image ({test.kind}, "
          f"{test.num_samples} samples), {test.bits_per_dim:.3f} bits/dim; -ELBO {-test.elbo_mean:.2f}")
    return numbers


if __name__ == "__main__":
    main()
