"""How trustworthy is a VAE's importance-weighted score, and how does it compare with classical models?

Fits the digits VAE (the defaults of ``examples/vae_digits.py``), measures the Pareto k-hat of its
guide's importance weights on the first 200 test images (``psis_diagnostic``, K = 1000 samples per
image), and compares its held-out NLL with a 10-component pPCA and a 10-component full-covariance GMM
(both fitted on the dequantized training images, as they are scored) on all 447 test images
(``compare``). Writes ``khat.png`` and ``guide_quality.json`` into ``--out``.

References:
    Vehtari, Simpson, Gelman, Yao & Gabry (2024), Pareto smoothed importance sampling, JMLR.
    Yao, Vehtari, Simpson & Gelman (2018), Yes, but did it work?: Evaluating variational inference, ICML.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import ppl_dgm
from ppl_dgm.datasets import load_dataset
from ppl_dgm.diagnostics import compare, psis_diagnostic
from ppl_dgm.models import GMM, PPCA, VAE


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/guide_quality")
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--psis-images", type=int, default=200)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train, val, test = (load_dataset("digits", split).x for split in ("train", "val", "test"))

    began = time.perf_counter()
    torch.manual_seed(args.seed)  # the initial weights depend on the seed too
    vae = VAE()
    fitted = ppl_dgm.fit(vae, train, val=val, epochs=args.epochs, patience=50, seed=args.seed, progress=False)
    psis = psis_diagnostic(vae, test[: args.psis_images], num_samples=args.num_samples, seed=args.seed,
                           plot=out / "khat.png")
    print(f"VAE: best epoch {fitted.best_epoch + 1}, validation -ELBO {fitted.best_val_loss:.2f}; PSIS on "
          f"{args.psis_images} test images: {json.dumps(psis.summary())}")

    torch.manual_seed(args.seed)
    dequantized = train + torch.rand_like(train)  # densities are scored on x + u: fit them on x + u
    models = {"VAE (categorical)": vae, "pPCA, 10 components": PPCA(10).fit(dequantized),
              "GMM, 10 full-covariance components": GMM(10, covariance_type="full", random_state=0).fit(dequantized)}
    table = compare(models, test, num_samples=args.num_samples, seed=args.seed)
    print(table)
    result = {"psis": psis.summary(), "best_epoch": fitted.best_epoch, "compare": table.rows,
              "seconds": time.perf_counter() - began}
    (out / "guide_quality.json").write_text(json.dumps(result, indent=2, default=float))
    print(f"guide quality: {psis.share_above(0.7):.1%} of test images with k-hat > 0.7; best model "
          f"{table.rows[0]['name']}; {result['seconds']:.0f} s; "
          f"results in {out}")
    return result


if __name__ == "__main__":
    main()
