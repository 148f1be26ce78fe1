"""EM for a Gaussian mixture: ppl_dgm.models.GMM against sklearn.mixture.GaussianMixture.

Same data, same initial parameters (weights_init/means_init/precisions_init), the same number
of EM iterations (tol=0), float64. Repeats alternate between the two; prints one line per
repeat and, last, the median time ratio (ppl_dgm / sklearn) with the final log-likelihood
difference per sample. Writes JSON.

    python benchmarks/gmm_em.py [--n 200000] [--d 16] [--k 16] [--iters 20] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from ppl_dgm.models import GMM


def make_data(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    """``n`` points from ``k`` random Gaussian clusters in ``d`` dimensions."""
    rng = np.random.default_rng(seed)
    centres = 3.0 * rng.standard_normal((k, d))
    mixing = rng.standard_normal((k, d, d)) / np.sqrt(d) + np.eye(d)
    labels = rng.integers(k, size=n)
    return centres[labels] + np.einsum("nd,nde->ne", rng.standard_normal((n, d)), mixing[labels])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--covariance-type", default="full", choices=["full", "tied", "diag", "spherical"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="gmm_em.json")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", ConvergenceWarning)

    x = make_data(args.n, args.d, args.k)
    start = GaussianMixture(args.k, covariance_type=args.covariance_type, max_iter=0, random_state=0).fit(x[:20_000])
    init = dict(weights_init=start.weights_, means_init=start.means_, precisions_init=start.precisions_)
    common = dict(covariance_type=args.covariance_type, max_iter=args.iters, tol=0.0, **init)
    x_device = torch.as_tensor(x, device=args.device)
    runners = {
        "ppl_dgm": lambda: GMM(args.k, device=args.device, **common).fit(x_device),
        "sklearn": lambda: GaussianMixture(args.k, **common).fit(x),
    }
    runners["ppl_dgm"]()  # warm-up: first calls pay for lazy initialisation
    times: dict[str, list[float]] = {name: [] for name in runners}
    bounds: dict[str, float] = {}
    for repeat in range(args.repeats):
        order = list(runners) if repeat % 2 == 0 else list(reversed(runners))
        for name in order:
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            began = time.perf_counter()
            fitted = runners[name]()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - began)
            assert fitted.n_iter_ == args.iters
            bounds[name] = float(fitted.lower_bound_)
        print(f"repeat {repeat}: ppl_dgm {times['ppl_dgm'][-1]:.2f}s, sklearn {times['sklearn'][-1]:.2f}s, "
              f"ratio {times['ppl_dgm'][-1] / times['sklearn'][-1]:.3f}")
    ratios = [a / b for a, b in zip(times["ppl_dgm"], times["sklearn"], strict=True)]
    delta = abs(bounds["ppl_dgm"] - bounds["sklearn"])
    summary = {
        "device": args.device, "n": args.n, "d": args.d, "k": args.k, "iterations": args.iters,
        "covariance_type": args.covariance_type, "torch_threads": torch.get_num_threads(),
        "seconds": times, "ratios": ratios, "ratio_median": statistics.median(ratios),
        "final_log_likelihood_per_sample": bounds, "abs_difference_per_sample": delta,
    }
    with open(args.out, "w") as handle:
        json.dump(summary, handle, indent=2)
    print(f"gmm_em: ppl_dgm / sklearn time ratio = {summary['ratio_median']:.3f} (median of {args.repeats}, "
          f"{args.device}, N={args.n} D={args.d} K={args.k} {args.covariance_type}, {args.iters} iterations; "
          f"|delta log-likelihood| = {delta:.1e} per sample; target <= 0.5)")
    return summary


if __name__ == "__main__":
    main()
