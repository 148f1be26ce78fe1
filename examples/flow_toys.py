"""Every density-flow preset on the 2-D toys: held-out NLL (nats per point) and density maps beside the data.

Each flow is fitted by maximum likelihood with `ppl_dgm.fit` (early stopping on the validation split)
and scored exactly on the test split with `ppl_dgm.log_likelihood`.

References:
    Dinh, Krueger & Bengio (2015), NICE, arXiv:1410.8516.
    Dinh, Sohl-Dickstein & Bengio (2017), Density estimation using Real NVP, ICLR.
    Papamakarios, Pavlakou & Murray (2017), Masked Autoregressive Flow for Density Estimation, NeurIPS.
    Kingma et al. (2016), Improved Variational Inference with Inverse Autoregressive Flow, NeurIPS.
    Durkan, Bekasov, Murray & Papamakarios (2019), Neural Spline Flows, NeurIPS.
    Kingma & Dhariwal (2018), Glow, NeurIPS.
    Grathwohl et al. (2019), FFJORD, ICLR (the toy data sets).

    python examples/flow_toys.py --out docs/images/flows --no-progress
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import ppl_dgm
from ppl_dgm.datasets import load_dataset
from ppl_dgm.datasets.energies import grid
from ppl_dgm.models import get_model_class
from ppl_dgm.plots import density_grid

DATASETS = ["moons", "circles", "8gaussians", "checkerboard", "pinwheel"]
PRESETS = ["nice", "realnvp", "maf", "iaf", "nsf", "glow"]
WINDOW = 4.0  # the panels show [-4, 4]^2
RESOLUTION = 150  # pixels per side of each panel


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    parser.add_argument("--models", nargs="+", default=PRESETS, choices=PRESETS)
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 64], help="widths of the flows' networks")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/flow_toys")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    out = Path(args.out)
    points = grid(WINDOW, RESOLUTION)[0].float()
    results, failures = [], {}
    rows: dict[str, list[torch.Tensor | None]] = {}
    start = time.perf_counter()
    for name in args.datasets:
        train, val, test = (load_dataset(name, split, device=args.device).x for split in ("train", "val", "test"))
        data = torch.histogramdd(train.cpu(), bins=[RESOLUTION] * 2, range=[-WINDOW, WINDOW] * 2).hist.T
        rows[name] = [data]
        for preset in args.models:
            torch.manual_seed(args.seed)
            kwargs = {} if preset == "glow" else {"hidden_dims": args.hidden, "dropout": 0.0}
            try:
                model = get_model_class(preset)(input_dim=2, **kwargs)
            except ValueError as error:  # a preset that cannot take 2-D data says why
                failures[preset] = str(error)
                rows[name].append(None)
                print(f"{name} {preset:>8} cannot be built for 2-D data: {error}")
                continue
            fit = ppl_dgm.fit(model, train, val=val, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                              patience=args.patience, seed=args.seed, device=args.device,
                              progress=not args.no_progress)
            test_ll = ppl_dgm.log_likelihood(model, test)
            with torch.no_grad():
                density = model.log_prob(points.to(args.device)).exp().reshape(RESOLUTION, RESOLUTION).cpu()
            rows[name].append(density)
            results.append({"dataset": name, "model": preset, "test_nll_nats": test_ll.nll,
                            "test_nll_stderr": test_ll.stderr, "kind": test_ll.kind, "best_epoch": fit.best_epoch,
                            "epochs_run": fit.epochs_run, "fit_seconds": fit.seconds})
            print(f"{name:>12} {preset:>8} test NLL {test_ll.nll:.3f} ± {test_ll.stderr:.3f} nats/point "
                  f"({test_ll.kind}; best epoch {fit.best_epoch + 1} of {fit.epochs_run}, {fit.seconds:.0f} s)")
    density_grid(rows, ["data (train)", *args.models], out / "flow_toys.png", WINDOW)
    total = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    summary = {"results": results, "cannot_build": failures, "total_seconds": total, "args": vars(args)}
    (out / "flow_toys.json").write_text(json.dumps(summary, indent=2))
    mean_nll = {m: sum(r["test_nll_nats"] for r in results if r["model"] == m) / len(args.datasets)
                for m in args.models if m not in failures}
    print(f"{len(results)} fits in {total:.0f} s; mean test NLL over data sets (nats/point): "
          + ", ".join(f"{m} {v:.3f}" for m, v in mean_nll.items()) + f"; figure and JSON in {out}")
    return summary


if __name__ == "__main__":
    main()
