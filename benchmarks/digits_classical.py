"""The classical models on the digits, beside the estimators they replace, fitted the same way.

GMM vs sklearn GaussianMixture and pPCA vs sklearn PCA on the flat images (N, 64); HMM vs
hmmlearn GaussianHMM on the 8-row sequence view (N, 8, 8). Every model is a density, so the
integer images are dequantized (x + u, u ~ U[0,1), one fixed draw per split shared by both
sides) and the test NLL is the dequantization bound of DESIGN.md, in nats per image. For
each family a small grid of settings is fitted on train, the best is chosen on validation by
our model, and both sides are reported on test with that setting.

    python benchmarks/digits_classical.py [--out digits_classical.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings

import numpy as np
import torch
from hmmlearn.hmm import GaussianHMM
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from ppl_dgm.datasets import load_dataset
from ppl_dgm.models import GMM, HMM, PPCA


def dequantized(split: str, seed: int, view: str = "digits") -> np.ndarray:
    """The split plus one fixed draw of U[0, 1) noise per pixel (float64)."""
    x = load_dataset(view, split, dtype=torch.float64).x.numpy()
    return x + np.random.default_rng(seed).random(x.shape)


def _nll(log_likelihoods: np.ndarray) -> tuple[float, float]:
    """Mean negative log-likelihood per image and its standard error (nats)."""
    return float(-log_likelihoods.mean()), float(log_likelihoods.std(ddof=1) / math.sqrt(len(log_likelihoods)))


def _sequences(x: np.ndarray) -> tuple[np.ndarray, list[int]]:
    return x.reshape(-1, x.shape[-1]), [x.shape[1]] * x.shape[0]


def _hmm_per_image(model, x: np.ndarray) -> np.ndarray:
    return np.array([model.score(seq) for seq in x])


FAMILIES = {
    "GMM (flat images) vs sklearn GaussianMixture": dict(
        view="digits",
        grid=[dict(n_components=k, covariance_type=c, random_state=0, reg_covar=1e-3)
              for c in ("full", "diag") for k in (1, 5, 10, 20)],
        ours=lambda kw: GMM(**kw), theirs=lambda kw: GaussianMixture(**kw),
        fit=lambda m, x: m.fit(x), score=lambda m, x: m.score_samples(x),
    ),
    "pPCA (flat images) vs sklearn PCA": dict(
        view="digits",
        grid=[dict(n_components=q) for q in (10, 20, 30, 40, 50, 60)],
        ours=lambda kw: PPCA(**kw), theirs=lambda kw: PCA(**kw),
        fit=lambda m, x: m.fit(x), score=lambda m, x: m.score_samples(x),
    ),
    "HMM (8 rows of 8 pixels) vs hmmlearn GaussianHMM": dict(
        view="digits_sequence",
        grid=[dict(n_components=k, covariance_type=c, random_state=0, n_iter=100, min_covar=1e-3)
              for c in ("full", "diag") for k in (4, 8, 16)],
        ours=lambda kw: HMM(**kw), theirs=lambda kw: GaussianHMM(**kw),
        fit=lambda m, x: m.fit(*_sequences(x)), score=_hmm_per_image,
    ),
}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="digits_classical.json")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", ConvergenceWarning)
    results = {}
    for family, spec in FAMILIES.items():
        data = {split: dequantized(split, seed, spec["view"]) for seed, split in enumerate(("train", "val", "test"))}
        rows = []
        for settings in spec["grid"]:
            row = {"settings": settings}
            for side in ("ours", "theirs"):
                model = spec[side](dict(settings))
                began = time.perf_counter()
                spec["fit"](model, data["train"])
                row[f"{side}_seconds"] = time.perf_counter() - began
                row[f"{side}_val_nll"] = _nll(spec["score"](model, data["val"]))[0]
                row[f"{side}_test_nll"], row[f"{side}_test_stderr"] = _nll(spec["score"](model, data["test"]))
            rows.append(row)
            print(f"{family} {settings}: val {row['ours_val_nll']:.2f} / {row['theirs_val_nll']:.2f}, "
                  f"test {row['ours_test_nll']:.2f} / {row['theirs_test_nll']:.2f} nats (ours / reference)")
        best = min(rows, key=lambda r: r["ours_val_nll"])
        results[family] = {"rows": rows, "best": best}
        print(f"{family}: chosen {best['settings']}; test NLL {best['ours_test_nll']:.2f} ± "
              f"{best['ours_test_stderr']:.2f} (ours) vs {best['theirs_test_nll']:.2f} ± "
              f"{best['theirs_test_stderr']:.2f} (reference) nats per image (dequantization bound)")
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2)
    print("digits_classical: " + "; ".join(
        f"{name.split(' ')[0]} {r['best']['ours_test_nll']:.2f} vs {r['best']['theirs_test_nll']:.2f}"
        for name, r in results.items()) + " nats per image (ours vs reference, test, dequantized)")
    return results


if __name__ == "__main__":
    main()
