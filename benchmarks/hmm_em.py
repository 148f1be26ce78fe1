"""Baum-Welch of ppl_dgm's HMM against hmmlearn's GaussianHMM, from the same parameters.

Two workloads, both K=8 states, D=4 dimensions, diagonal covariances, float64, 10 EM iterations
(``tol=0`` so that both do exactly 10), hmmlearn's priors made neutral (``covars_prior=0``; the
other defaults already are): (a) many short sequences, 1,000 x 200 steps; (b) few long ones,
20 x 5,000 steps. The data are drawn from a random HMM; both models start from the same other
random parameters. Repeats alternate the order of the two. Each repeat prints the times, their
ratio (ppl_dgm / hmmlearn) and the difference of the final log-likelihoods per sample; the last
line gives the median ratios of both workloads. Writes JSON.

    python benchmarks/hmm_em.py [--repeats 5] [--implementation scaling] [--device cpu] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from hmmlearn.hmm import GaussianHMM

from ppl_dgm.models import HMM

WORKLOADS = {"a": (1000, 200), "b": (20, 5000)}
TARGETS = {"a": 0.2, "b": 1.0}
N_STATES, N_FEATURES, N_ITER = 8, 4, 10


def make_problem(n_sequences: int, length: int, seed: int) -> tuple[np.ndarray, list[int], dict[str, np.ndarray]]:
    """Data drawn from a random diagonal Gaussian HMM, and other random starting parameters."""
    rng = np.random.RandomState(seed)
    truth = GaussianHMM(N_STATES, covariance_type="diag", init_params="", random_state=rng)
    truth.startprob_ = rng.dirichlet(np.ones(N_STATES))
    truth.transmat_ = rng.dirichlet(np.ones(N_STATES) * 0.5, size=N_STATES) * 0.5 + np.eye(N_STATES) * 0.5
    truth.means_ = rng.normal(scale=3.0, size=(N_STATES, N_FEATURES))
    truth.covars_ = rng.uniform(0.5, 2.0, size=(N_STATES, N_FEATURES))
    X = np.concatenate([truth.sample(length, random_state=rng)[0] for _ in range(n_sequences)])
    start = {
        "startprob_": rng.dirichlet(np.ones(N_STATES)),
        "transmat_": rng.dirichlet(np.ones(N_STATES), size=N_STATES),
        "means_": X[rng.choice(len(X), N_STATES, replace=False)],
        "covars_": np.tile(X.var(0), (N_STATES, 1)),
    }
    return X, [length] * n_sequences, start


def fit(model, X: np.ndarray, lengths: list[int], start: dict[str, np.ndarray]) -> tuple[float, float]:
    """Seconds of ``model.fit`` from ``start``, and the final log-likelihood (nats)."""
    for name, value in start.items():
        setattr(model, name, value.copy())
    begin = time.perf_counter()
    model.fit(X, lengths)
    seconds = time.perf_counter() - begin
    assert model.monitor_.iter == N_ITER, f"{type(model).__name__} stopped after {model.monitor_.iter} iterations"
    return seconds, model.score(X, lengths)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--implementation", default="scaling", choices=["scaling", "log"],
                        help="hmmlearn's forward-backward ('scaling' is its faster one)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="hmm_em.json")
    args = parser.parse_args(argv)

    settings = dict(covariance_type="diag", n_iter=N_ITER, tol=0.0, init_params="", params="stmc",
                    covars_prior=0.0, implementation=args.implementation)
    summary: dict = {"device": args.device, "torch_threads": torch.get_num_threads(), "n_iter": N_ITER,
                     "implementation": args.implementation, "workloads": {}}
    for key in args.workloads:
        n_sequences, length = WORKLOADS[key]
        X, lengths, start = make_problem(n_sequences, length, seed=0)
        runners = {
            "ppl_dgm": lambda: HMM(N_STATES, device=args.device, **settings),
            "hmmlearn": lambda: GaussianHMM(N_STATES, **settings),
        }
        for make in runners.values():  # warm-up
            fit(make(), X[: 10 * length], lengths[:10], start)
        times: dict[str, list[float]] = {name: [] for name in runners}
        scores: dict[str, list[float]] = {name: [] for name in runners}
        for repeat in range(args.repeats):
            order = list(runners) if repeat % 2 == 0 else list(reversed(runners))
            for name in order:
                seconds, score = fit(runners[name](), X, lengths, start)
                times[name].append(seconds)
                scores[name].append(score)
            diff = (scores["ppl_dgm"][-1] - scores["hmmlearn"][-1]) / len(X)
            print(f"({key}) {n_sequences} x {length}, repeat {repeat}: ppl_dgm {times['ppl_dgm'][-1]:.3f}s, "
                  f"hmmlearn {times['hmmlearn'][-1]:.3f}s, ratio {times['ppl_dgm'][-1] / times['hmmlearn'][-1]:.3f}; "
                  f"final log-likelihood difference {diff:+.2e} nats/sample")
        ratios = [a / b for a, b in zip(times["ppl_dgm"], times["hmmlearn"], strict=True)]
        summary["workloads"][key] = {
            "n_sequences": n_sequences, "length": length, "seconds": times, "ratios": ratios,
            "ratio_median": statistics.median(ratios), "target": TARGETS[key],
            "final_log_likelihood": scores,
            "max_abs_log_likelihood_difference_per_sample": max(
                abs(a - b) / len(X) for a, b in zip(scores["ppl_dgm"], scores["hmmlearn"], strict=True)),
        }
    with open(args.out, "w") as handle:
        json.dump(summary, handle, indent=2)
    parts = [f"({key}) {w['n_sequences']}x{w['length']}: ratio {w['ratio_median']:.3f} (target <= {w['target']}), "
             f"|dlogL| {w['max_abs_log_likelihood_difference_per_sample']:.1e}/sample"
             for key, w in summary["workloads"].items()]
    print(f"hmm_em: ppl_dgm / hmmlearn ({args.implementation}) EM time, median of {args.repeats}, {args.device}, "
          f"{summary['torch_threads']} threads: " + "; ".join(parts))
    return summary


if __name__ == "__main__":
    main()
