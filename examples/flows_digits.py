"""Density flows on scikit-learn's 8x8 digits: fit presets, test NLL bound (uniform dequantization), samples.

References:
    Dinh, Krueger & Bengio (2015), NICE: Non-linear Independent Components Estimation, ICLR workshop.
    Dinh, Sohl-Dickstein & Bengio (2017), Density estimation using Real NVP, ICLR.
    Papamakarios, Pavlakou & Murray (2017), Masked Autoregressive Flow for Density Estimation, NeurIPS.
    Kingma et al. (2016), Improved Variational Inference with Inverse Autoregressive Flow, NeurIPS.
    Durkan, Bekasov, Murray & Papamakarios (2019), Neural Spline Flows, NeurIPS.
    Kingma & Dhariwal (2018), Glow: Generative Flow with Invertible 1x1 Convolutions, NeurIPS.
    Theis, van den Oord & Bethge (2016), A note on the evaluation of generative models, ICLR (dequantization).
    Ho, Chen, Srinivas, Duan & Abbeel (2019), Flow++, ICML (variational dequantization).

    python examples/flows_digits.py --models nsf --out runs/flows_digits
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

import ppl_dgm
from ppl_dgm import plots
from ppl_dgm.datasets import load_dataset
from ppl_dgm.models import get_model_class

DIGITS = {"bounds": [0, 17]}
PRESETS: dict[str, dict[str, Any]] = {
    "nice": {**DIGITS, "num_layers": 4, "hidden_dims": [256, 256], "dropout": 0.2},
    "realnvp": {**DIGITS, "num_layers": 6, "hidden_dims": [256, 256], "dropout": 0.2},
    "maf": {**DIGITS, "num_layers": 5, "hidden_dims": [256, 256], "dropout": 0.2},
    "iaf": {**DIGITS, "num_layers": 2, "hidden_dims": [128], "dropout": 0.1},
    "nsf": {**DIGITS, "num_layers": 3, "bins": 8, "hidden_dims": [256, 256], "dropout": 0.2},
    "glow": {**DIGITS, "num_steps": 8, "hidden_channels": 64, "dropout": 0.2},
}
"""Digits configuration of each preset (constructor arguments)."""
MAX_EPOCHS = {"iaf": 100}
"""Epoch caps: IAF's density (what maximum likelihood fits) takes ``D`` sequential passes per layer."""


def spread(nll: torch.Tensor) -> dict[str, float]:
    """Mean, standard error, median, 90th percentile and maximum of per-image NLLs ``(N,)`` (nats)."""
    nll = nll.double()
    return {"mean": float(nll.mean()), "stderr": float(nll.std() / nll.numel() ** 0.5),
            "median": float(nll.median()), "p90": float(nll.quantile(0.9)), "max": float(nll.max())}


def run(name: str, splits: dict[str, torch.Tensor], args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Fit preset ``name`` on the digits train split (early stopping on validation), score the test split."""
    torch.manual_seed(args.seed)  # the initial weights depend on the seed too
    model = get_model_class(name)(**PRESETS[name], dequantization=args.dequantization)
    start = time.perf_counter()
    epochs = min(args.epochs, MAX_EPOCHS.get(name, args.epochs))
    result = ppl_dgm.fit(model, splits["train"], val=splits["val"], epochs=epochs, batch_size=args.batch_size,
                         lr=args.lr, weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm,
                         patience=args.patience, seed=args.seed, device=args.device, progress=not args.no_progress)
    seconds = time.perf_counter() - start
    test = ppl_dgm.log_likelihood(model, splits["test"], num_samples=args.num_samples, seed=args.seed)
    torch.manual_seed(args.seed)
    samples = model.sample(32).clamp(0, 16.999).floor()
    pairs = torch.cat([samples, splits["test"][:32]]).reshape(64, 64)
    plots.image_grid(pairs, (8, 8), out / f"{name}_samples.png", vmax=16,
                     title=f"{name}: 32 samples (top), 32 test digits (bottom)")
    plots.training_curve(result.train_loss, result.val_loss, out / f"{name}_curve.png", result.best_epoch)
    record = {"model": name, "config": model.config, "kind": test.kind, "nats_per_image": spread(-test.per_sample),
              "bits_per_dim": test.bits_per_dim, "num_samples": test.num_samples,
              "neg_elbo_nats": None if test.elbo_mean is None else -test.elbo_mean,
              "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "best_val_loss": result.best_val_loss,
              "fit_seconds": seconds}
    nats = record["nats_per_image"]
    print(f"{name}: test NLL {nats['mean']:.2f} ± {nats['stderr']:.2f} nats/image ({test.kind}), "
          f"{test.bits_per_dim:.3f} bits/dim, median {nats['median']:.2f}, p90 {nats['p90']:.2f}, "
          f"max {nats['max']:.2f}; best epoch {result.best_epoch + 1}, {seconds:.0f} s"
          + (f"; -ELBO {-test.elbo_mean:.2f}" if test.elbo_mean is not None else ""), flush=True)
    return record


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(PRESETS), help=f"comma-separated, from {','.join(PRESETS)}")
    parser.add_argument("--dequantization", default="uniform", choices=["uniform", "variational"])
    parser.add_argument("--num-samples", type=int, default=1000,
                        help="importance samples per test image (variational dequantization)")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--patience", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--max-grad-norm", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/flows_digits")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    names = [name.strip().lower() for name in args.models.split(",") if name.strip()]
    unknown = sorted(set(names) - set(PRESETS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(PRESETS)}")

    splits = {split: load_dataset("digits", split, device=args.device).x for split in ("train", "val", "test")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = [run(name, splits, args, out) for name in names]
    (out / "flows_digits.json").write_text(json.dumps(records, indent=2))
    best = min(records, key=lambda r: r["nats_per_image"]["mean"])
    print(f"best: {best['model']} {best['nats_per_image']['mean']:.2f} nats/image ({best['kind']}) "
          f"= {best['bits_per_dim']:.3f} bits/dim on {len(splits['test'])} test digits; results in {out}")
    return records


if __name__ == "__main__":
    main()
