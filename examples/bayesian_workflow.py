"""A Bayesian workflow on one story: prior checks, SVI, NUTS, LOO, held-out scores, SBC, PPC.

The story is a Poisson regression of counts on one covariate, written as a plain Pyro function:
intercept ~ N(0, 1), slope ~ N(0, 1), y_n ~ Poisson(exp(intercept + slope * c_n)). It is wrapped
with ``ppl_dgm.story`` and taken through the steps of the workflow of Gelman et al. (2020):
prior predictive check, fit by SVI (AutoNormal) and by NUTS, convergence diagnostics, PSIS-LOO
and model comparison against an intercept-only story, held-out log predictive density,
simulation-based calibration of NUTS on the story, and a posterior predictive check. Every
step writes its figure into ``--out`` and its numbers into ``workflow.json``.

References:
    Gelman, Vehtari, Simpson et al. (2020), Bayesian Workflow, arXiv:2011.01808.
    Gabry, Simpson, Vehtari, Betancourt & Gelman (2019), Visualization in Bayesian workflow, JRSS A.
    Vehtari, Gelman & Gabry (2017), Practical Bayesian model evaluation using leave-one-out
    cross-validation and WAIC, Statistics and Computing.
    Talts, Betancourt, Simpson, Vehtari & Gelman (2018), Validating Bayesian inference
    algorithms with simulation-based calibration, arXiv:1804.06788.

    python examples/bayesian_workflow.py [--quick] [--out runs/workflow] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import arviz as az
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402

import ppl_dgm  # noqa: E402
from ppl_dgm.diagnostics import nuts_engine, sbc, to_inference_data  # noqa: E402
from ppl_dgm.infer.mcmc import nuts  # noqa: E402

TRUE_INTERCEPT, TRUE_SLOPE = 0.5, 0.8


def model(covariate, y=None):
    """Poisson regression: log E[y_n] = intercept + slope * covariate_n."""
    intercept = pyro.sample("intercept", dist.Normal(0.0, 1.0))
    slope = pyro.sample("slope", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(covariate)):
        return pyro.sample("obs", dist.Poisson(torch.exp(intercept + slope * covariate)), obs=y)


def intercept_only(covariate, y=None):
    """The rival story: the same counts with a constant rate (the covariate is ignored)."""
    intercept = pyro.sample("intercept", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(covariate)):
        return pyro.sample("obs", dist.Poisson(torch.exp(intercept)), obs=y)


def poisson_story():
    return ppl_dgm.story(model, "AutoNormal", data_arg="y")


def synthetic_counts(n_train: int = 150, n_test: int = 50, seed: int = 0) -> tuple[dict, dict]:
    """Train and held-out data sets ``{"x": counts, "covariate": c}`` from the story at the true values."""
    generator = torch.Generator().manual_seed(seed)
    c = torch.randn(n_train + n_test, generator=generator)
    counts = torch.poisson(torch.exp(TRUE_INTERCEPT + TRUE_SLOPE * c), generator=generator)
    return ({"x": counts[:n_train], "covariate": c[:n_train]},
            {"x": counts[n_train:], "covariate": c[n_train:]})


def save(path: Path) -> str:
    plt.savefig(path, dpi=90, bbox_inches="tight")
    plt.close("all")
    return path.name


def prior_predictive_check(train: dict, out: Path, num_samples: int) -> dict:
    """Step 1: replicated data sets from the prior; their means and maxima against the observed ones."""
    pyro.set_rng_seed(0)
    replicated = pyro.infer.Predictive(model, num_samples=num_samples)(train["covariate"])["obs"]
    means, maxima = replicated.mean(1).numpy(), replicated.amax(1).numpy()
    observed_mean, observed_max = float(train["x"].mean()), float(train["x"].max())
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, values, observed, label in ((axes[0], means, observed_mean, "mean count"),
                                        (axes[1], maxima, observed_max, "max count")):
        ax.hist(np.log10(1 + values), bins=30, color="C0", alpha=0.7, label="prior replicates")
        ax.axvline(np.log10(1 + observed), color="C3", lw=2, label="observed")
        ax.set_xlabel(f"log10(1 + {label})")
        ax.legend(fontsize=8)
    fig.suptitle(f"Prior predictive check ({num_samples} replicated data sets)")
    return {"figure": save(out / "prior_predictive.png"), "observed_mean": observed_mean,
            "observed_max": observed_max,
            "share_replicated_mean_above_observed": float((means > observed_mean).mean()),
            "share_replicated_max_above_observed": float((maxima > observed_max).mean()),
            "replicated_max_quantiles_5_50_95": np.quantile(maxima, [0.05, 0.5, 0.95]).tolist()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: about a minute")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/workflow")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = (dict(epochs=300, samples=200, warmup=200, sims=10, sbc_draws=49, sbc_samples=50, sbc_warmup=50)
             if args.quick else
             dict(epochs=1000, samples=500, warmup=500, sims=30, sbc_draws=99, sbc_samples=100, sbc_warmup=100))
    began = time.perf_counter()
    train, held_out = synthetic_counts(seed=args.seed)
    result: dict = {"data": {"n_train": len(train["x"]), "n_held_out": len(held_out["x"]),
                             "true_intercept": TRUE_INTERCEPT, "true_slope": TRUE_SLOPE}}

    # 1. prior predictive check
    result["prior_predictive"] = prior_predictive_check(train, out, num_samples=200)
    print("prior predictive:", {k: v for k, v in result["prior_predictive"].items() if k != "figure"})

    # 2. SVI with AutoNormal
    poisson = poisson_story()
    ppl_dgm.fit(poisson, train, epochs=sizes["epochs"], batch_size=150, lr=0.05, seed=args.seed, progress=False)
    medians = {name: float(value) for name, value in poisson.point_estimate().items()}
    print("SVI posterior medians:", medians)
    result["svi"] = {"medians": medians}

    # 3. NUTS, summary and trace plot
    run = nuts(poisson, train, num_samples=sizes["samples"], warmup_steps=sizes["warmup"], num_chains=2,
               seed=args.seed, progress=False)
    idata = to_inference_data(poisson, train, run)
    summary = az.summary(idata, var_names=["intercept", "slope"])
    print(summary.to_string())
    summary.to_csv(out / "nuts_summary.csv")
    az.plot_trace(idata, var_names=["intercept", "slope"])
    result["nuts"] = {"seconds": run.seconds, "divergences": int(sum(run.divergences)),
                      "max_r_hat": float(summary["r_hat"].max()), "min_ess_bulk": float(summary["ess_bulk"].min()),
                      "mean": summary["mean"].to_dict(), "sd": summary["sd"].to_dict(),
                      "figure": save(out / "trace.png"), "summary_csv": "nuts_summary.csv"}

    # 4. PSIS-LOO (NUTS and SVI) and comparison with the intercept-only story
    loo_nuts = az.loo(idata)
    loo_svi = az.loo(to_inference_data(poisson, train))  # SVI: draws from the AutoNormal guide
    rival = ppl_dgm.story(intercept_only, "AutoNormal", data_arg="y")
    ppl_dgm.fit(rival, train, epochs=sizes["epochs"], batch_size=150, lr=0.05, seed=args.seed, progress=False)
    rival_run = nuts(rival, train, num_samples=sizes["samples"], warmup_steps=sizes["warmup"], num_chains=2,
                     seed=args.seed, progress=False)
    rival_idata = to_inference_data(rival, train, rival_run)
    comparison = az.compare({"poisson_regression": idata, "intercept_only": rival_idata}, ic="loo")
    print(comparison[["rank", "elpd_loo", "p_loo", "elpd_diff", "dse", "weight"]].to_string())
    az.plot_compare(comparison)
    result["loo"] = {
        "nuts": {"elpd_loo": float(loo_nuts.elpd_loo), "se": float(loo_nuts.se), "p_loo": float(loo_nuts.p_loo),
                 "max_pareto_k": float(loo_nuts.pareto_k.max())},
        "svi": {"elpd_loo": float(loo_svi.elpd_loo), "se": float(loo_svi.se), "p_loo": float(loo_svi.p_loo),
                "max_pareto_k": float(loo_svi.pareto_k.max())},
        "compare": {name: {"elpd_loo": float(row["elpd_loo"]), "elpd_diff": float(row["elpd_diff"]),
                           "dse": float(row["dse"]), "weight": float(row["weight"])}
                    for name, row in comparison.iterrows()},
        "chosen": str(comparison.index[0]), "figure": save(out / "compare.png")}
    print(f"LOO: NUTS {loo_nuts.elpd_loo:.2f} ± {loo_nuts.se:.2f}, SVI {loo_svi.elpd_loo:.2f} ± {loo_svi.se:.2f}")

    # 5. held-out log predictive density per count
    held = {"poisson_svi": ppl_dgm.log_likelihood(poisson, held_out, num_samples=1000),
            "poisson_nuts": ppl_dgm.log_likelihood(poisson, held_out, posterior=run),
            "intercept_only_svi": ppl_dgm.log_likelihood(rival, held_out, num_samples=1000),
            "intercept_only_nuts": ppl_dgm.log_likelihood(rival, held_out, posterior=rival_run)}
    result["held_out"] = {name: {"mean": float(score.mean), "stderr": float(score.stderr), "kind": score.kind}
                          for name, score in held.items()}
    print("held-out log predictive density per count:",
          {name: f"{score.mean:.3f} ± {score.stderr:.3f} ({score.kind})" for name, score in held.items()})

    # 6. simulation-based calibration of NUTS on this story
    engine = nuts_engine(num_samples=sizes["sbc_samples"], warmup_steps=sizes["sbc_warmup"], num_chains=1)
    calibration = sbc(poisson_story, engine, num_simulations=sizes["sims"], num_examples=len(train["x"]),
                      num_posterior_draws=sizes["sbc_draws"], context={"covariate": train["covariate"]},
                      seed=args.seed, plot=out / "sbc_ranks.png", progress=False)
    result["sbc"] = {**calibration.summary(), "figure": "sbc_ranks.png"}
    print(f"SBC: L={calibration.num_simulations}, S={calibration.num_posterior_draws}, p-values "
          f"{calibration.p_values()}, calibrated: {calibration.calibrated}")

    # 7. posterior predictive check
    az.plot_ppc(idata, num_pp_samples=100)
    result["ppc"] = {"figure": save(out / "ppc.png")}

    result["seconds"] = time.perf_counter() - began
    (out / "workflow.json").write_text(json.dumps(result, indent=2))
    print(f"workflow: slope {result['nuts']['mean']['slope']:.2f} (true {TRUE_SLOPE}), "
          f"max R-hat {result['nuts']['max_r_hat']:.3f}, LOO picks {result['loo']['chosen']}, "
          f"held-out {result['held_out']['poisson_nuts']['mean']:.3f} vs "
          f"{result['held_out']['intercept_only_nuts']['mean']:.3f} nats/count, "
          f"SBC min p {calibration.min_p_value:.2f}, {result['seconds']:.0f} s; figures in {out}")
    return result


if __name__ == "__main__":
    main()
