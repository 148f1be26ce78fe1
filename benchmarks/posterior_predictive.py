"""Posterior predictive replicas: the story run once per chunk of posterior draws against once per draw.

`ppl_dgm.diagnostics.predictive.posterior_predictive` draws one replicated data set per posterior
draw. With ``vectorize=True`` it runs the story once per chunk of draws, inside a plate over the
draws; with ``vectorize=False`` it runs the story once per draw (what the package did before).
Both sides get the same draws (2 chains, sampled from the prior: the benchmark is about speed) and
the same batch ``{"x": data, **context}``, on stories written as users write them:

- ``poisson_gamma``: ``rate ~ Gamma(2, 1)``, ``x_n ~ Poisson(rate)``, N = 200;
- ``linear_regression``: ``weights ~ N(0, I_3)``, ``sigma ~ HalfNormal(1)``,
  ``x_n ~ N(features_n @ weights, sigma)`` with ``features`` (N, 3) passed as context, N = 500;
- ``linear_regression_broadcast``: the same regression with the mean written
  ``(features * weights).sum(-1)``, which broadcasts over a leading batch of draws where
  ``features @ weights`` does not (the batched path then falls back to one run per draw).

Before timing, both paths' replicas are checked against each draw: per-draw means within a few
standard errors of the draw's expected mean, and the pooled variance. Repeats alternate between the
two paths. Prints per story the median seconds of each path and the median time ratio
(batched / one run per draw), one summary line last, and writes JSON.

    python benchmarks/posterior_predictive.py [--repeats 5] [--draws 500] [--device cpu] [--threads T] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
import warnings
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

import ppl_dgm
from ppl_dgm.diagnostics.predictive import posterior_predictive

CHAINS = 2
Z_LIMIT = 5.0
"""Largest |z| of a per-draw replica mean accepted by the check (1000 draws: the max is about 3.3)."""


class PoissonGamma(ppl_dgm.GenerativeModel):
    """``rate ~ Gamma(2, 1)``, ``x_n | rate ~ Poisson(rate)``."""

    def model(self, x=None, n=None):
        rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))
        with ppl_dgm.data_plate(x, n):
            return pyro.sample(ppl_dgm.X, dist.Poisson(rate), obs=x)


class LinearRegression(ppl_dgm.GenerativeModel):
    """``weights ~ N(0, I_3)``, ``sigma ~ HalfNormal(1)``, ``x_n ~ N(features_n @ weights, sigma)``."""

    def model(self, x=None, n=None, features=None):
        weights = pyro.sample("weights", dist.Normal(torch.zeros(3, device=features.device), 1.0).to_event(1))
        sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
        with ppl_dgm.data_plate(x, n):
            return pyro.sample(ppl_dgm.X, dist.Normal(features @ weights, sigma), obs=x)


class LinearRegressionBroadcast(ppl_dgm.GenerativeModel):
    """`LinearRegression` with the mean written so that it broadcasts over leading batch dims."""

    def model(self, x=None, n=None, features=None):
        weights = pyro.sample("weights", dist.Normal(torch.zeros(3, device=features.device), 1.0).to_event(1))
        sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
        with ppl_dgm.data_plate(x, n):
            return pyro.sample(ppl_dgm.X, dist.Normal((features * weights).sum(-1), sigma), obs=x)


def poisson_gamma_case(num_draws: int, device: torch.device) -> dict:
    n = 200
    draws = {"rate": dist.Gamma(2.0, 1.0).sample((CHAINS, num_draws)).to(device)}
    return {"model": PoissonGamma(), "n": n, "context": {}, "draws": draws,
            # mean and variance of each x_n at each draw, broadcastable to (chains, draws, N)
            "moments": (draws["rate"][..., None], draws["rate"][..., None])}


def regression_case(story: type[ppl_dgm.GenerativeModel], num_draws: int, device: torch.device) -> dict:
    n = 500
    features = torch.randn(n, 3).to(device)
    draws = {"weights": torch.randn(CHAINS, num_draws, 3).to(device),
             "sigma": dist.HalfNormal(1.0).sample((CHAINS, num_draws)).to(device)}
    return {"model": story(), "n": n, "context": {"features": features}, "draws": draws,
            "moments": (draws["weights"] @ features.T, draws["sigma"][..., None] ** 2)}


def make_batch(case: dict) -> dict[str, torch.Tensor]:
    """``{"x": data, **context}``, the data drawn from the story at one prior draw."""
    trace = poutine.trace(case["model"].model).get_trace(None, n=case["n"], **case["context"])
    return {ppl_dgm.X: trace.nodes[ppl_dgm.X]["value"], **case["context"]}


def run_path(case: dict, batch: dict[str, torch.Tensor], vectorize: bool) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the fallback's warning is reported by `fallback`
        return posterior_predictive(case["model"], batch, case["draws"], vectorize=vectorize)


def fallback(case: dict, batch: dict[str, torch.Tensor]) -> str | None:
    """The batched path's warning when the story does not broadcast over a plate of draws, else None."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        posterior_predictive(case["model"], batch, case["draws"], vectorize=True)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    return messages[0] if messages else None


def check(name: str, case: dict, batch: dict[str, torch.Tensor], seed: int) -> dict:
    """Per-draw replica means of both paths against each draw's expected mean (z-scores), and the pooled
    variance ratio; prints a few draws and raises ``SystemExit`` if either path is off."""
    n = case["n"]
    row_mean, row_variance = (m.expand(*m.shape[:2], n).flatten(0, 1).double() for m in case["moments"])
    # per draw: the expected replica mean, and the mean row variance (the replica mean has variance / n)
    mean, variance = row_mean.mean(1), row_variance.mean(1)
    result = {}
    for label, vectorize in (("batched", True), ("looped", False)):
        torch.manual_seed(seed)
        replicas = run_path(case, batch, vectorize).flatten(0, 1).double()  # (S, N)
        if replicas.shape != (mean.shape[0], n):
            raise SystemExit(f"{name}: {label} replicas have shape {tuple(replicas.shape)}")
        z = (replicas.mean(1) - mean) / (variance / n).sqrt()
        var_ratio = ((replicas - row_mean) ** 2).sum() / row_variance.sum()
        result[label] = {"z_first": z[:3].tolist(), "max_abs_z": z.abs().max().item(), "z_mean": z.mean().item(),
                         "z_sd": z.std().item(), "variance_ratio": var_ratio.item(),
                         "means_first": replicas.mean(1)[:3].tolist()}
    for s in range(3):
        print(f"  check draw {s}: expected mean {mean[s]:.3f} (se {math.sqrt(variance[s] / n):.3f}); replica mean "
              f"batched {result['batched']['means_first'][s]:.3f}, looped {result['looped']['means_first'][s]:.3f}")
    agree = all(r["max_abs_z"] < Z_LIMIT and abs(r["variance_ratio"] - 1) < 0.05 for r in result.values())
    print(f"  check over all {mean.shape[0]} draws: max |z| {result['batched']['max_abs_z']:.2f} vs "
          f"{result['looped']['max_abs_z']:.2f}, z mean {result['batched']['z_mean']:+.3f} vs "
          f"{result['looped']['z_mean']:+.3f}, z sd {result['batched']['z_sd']:.3f} vs {result['looped']['z_sd']:.3f}, "
          f"variance ratio {result['batched']['variance_ratio']:.3f} vs {result['looped']['variance_ratio']:.3f} "
          f"(batched vs looped): {'agree' if agree else 'DISAGREE'}")
    if not agree:
        raise SystemExit(f"{name}: the replicas do not match their draws; not timing wrong results")
    return {**result, "agree": agree}


def timed(case: dict, batch: dict[str, torch.Tensor], vectorize: bool, device: torch.device) -> float:
    """Seconds of one `posterior_predictive` call (device work included)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    run_path(case, batch, vectorize)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--draws", type=int, default=500, help="posterior draws per chain (2 chains)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/posterior_predictive.json")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cases = {"poisson_gamma": poisson_gamma_case(args.draws, device),
             "linear_regression": regression_case(LinearRegression, args.draws, device),
             "linear_regression_broadcast": regression_case(LinearRegressionBroadcast, args.draws, device)}
    paths = {"batched": True, "looped": False}
    stories = {}
    for name, case in cases.items():
        batch = make_batch(case)
        print(f"{name}: N = {case['n']}, {CHAINS} x {args.draws} draws, sites "
              + ", ".join(f"{k} {tuple(v.shape)}" for k, v in case["draws"].items()))
        warning = fallback(case, batch)  # also the warm-up of the batched path
        if warning:
            print(f"  the batched path falls back to one run per draw: {warning}")
        agreement = check(name, case, batch, args.seed)
        times: dict[str, list[float]] = {label: [] for label in paths}
        for repeat in range(args.repeats):
            order = list(paths) if repeat % 2 == 0 else list(reversed(paths))
            for label in order:
                torch.manual_seed(args.seed + repeat)
                times[label].append(timed(case, batch, paths[label], device))
        ratios = [a / b for a, b in zip(times["batched"], times["looped"], strict=True)]
        median = {label: statistics.median(values) for label, values in times.items()}
        stories[name] = {"n": case["n"], "batched_falls_back": warning, "check": agreement, "seconds": times,
                         "seconds_median": median, "ratios": ratios, "ratio_median": statistics.median(ratios)}
        print(f"  batched {median['batched']:.3f} s, one run per draw {median['looped']:.3f} s (medians of "
              f"{args.repeats}); ratio batched / looped {stories[name]['ratio_median']:.3f} "
              f"(repeats: {', '.join(f'{r:.3f}' for r in ratios)})")
    summary = {"device": str(device), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
               "chains": CHAINS, "draws": args.draws, "repeats": args.repeats, "seed": args.seed, "stories": stories}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    parts = ", ".join(f"{name} (N={s['n']}{', falls back' if s['batched_falls_back'] else ''}) {s['ratio_median']:.3f}"
                      for name, s in stories.items())
    print(f"posterior_predictive: batched / one run per draw time ratio = {parts} "
          f"(median of {args.repeats}, {device}, {torch.get_num_threads()} threads, {CHAINS} x {args.draws} draws)")
    return summary


if __name__ == "__main__":
    main()
