"""The VAE family on the digits: each variant fitted by ``ppl-dgm fit`` (early stopping on the validation
bound), then on the 447 test digits its negative log-likelihood by importance weighting with 5,000 guide
samples per image and its standard error over the images, the -ELBO (the mean log-weight of the same
samples), the KL per latent dimension and the active units (Burda et al., 2016), and the Pareto k-hat of the
guide's importance weights (1,000 per image; the share of images with k-hat > 0.7 says where the estimate
is not to be trusted). One table, printed and written beside the JSON and into the family's docs page; the
KL per dimension and the NLL against k-hat as PNG.

    python benchmarks/vae_family.py [--runs runs/vae_family] [--jobs 2] [--only vae,vampprior]
                                    [--refit] [--rescore] [--out benchmarks/results/vae_family.json]
                                    [--figures docs/images/vae_family] [--page docs/models/vae-family/index.md]

Fits that finished in ``RUNS/<name>`` are reused (``--refit`` fits them again), and so are their scores
(``scores.json`` there, while newer than the fit; ``--rescore`` computes them again). A run's NLL is what
``ppl-dgm evaluate RUNS/<name> --num-samples 5000`` prints (both seed 0).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from doc_blocks import replace_block  # noqa: E402
from fitted_runs import Entry, fit_all, is_fitted  # noqa: E402

import ppl_dgm  # noqa: E402
from ppl_dgm.datasets import load_dataset  # noqa: E402
from ppl_dgm.diagnostics import psis_diagnostic  # noqa: E402
from ppl_dgm.evaluation.latents import latent_usage  # noqa: E402

NUM_SAMPLES = 5000
PSIS_SAMPLES = 1000
IWAE = ("--objective", "iwae", "--num-particles", "5")
ENTRIES = [
    Entry("VAE", "vae"),
    Entry("VAE (IWAE, K=5)", "vae", fit=IWAE, name="vae_iwae"),
    Entry("VAE (discretized logistic)", "vae", options={"likelihood": "discretized_logistic"}, name="vae_dl"),
    Entry("VAE (discretized logistic, IWAE K=5)", "vae", options={"likelihood": "discretized_logistic"}, fit=IWAE,
          name="vae_dl_iwae"),
    Entry("β-VAE (β=4)", "betavae", options={"beta": 4.0}, name="betavae"),
    Entry("β-TCVAE (β=6)", "betatcvae", name="betatcvae"),
    Entry("CVAE (scored as p(x ∣ y))", "cvae", name="cvae"),
    Entry("VampPrior (discretized logistic, IWAE K=5)", "vampprior", options={"likelihood": "discretized_logistic"},
          fit=IWAE, name="vampprior"),
    *[Entry(f"{label} posterior (IWAE, K=5)", "flowvae", options={"flow": flow}, fit=IWAE, name=f"flow_{flow}")
      for flow, label in (("planar", "Planar flow"), ("householder", "Householder flow"),
                          ("sylvester", "Sylvester flow"), ("iaf", "IAF"))],
    Entry("Hierarchical (ladder)", "hvae", name="hvae"),
    Entry("Hierarchical (ladder, IWAE K=5)", "hvae", fit=IWAE, name="hvae_iwae"),
    Entry("VQ-VAE", "vqvae", name="vqvae"),
    Entry("S-VAE (vMF, m=10)", "svae", name="svae"),
]
SCORES_FILE = "scores.json"


def score_run(entry: Entry, run: Path, rescore: bool) -> dict[str, Any]:
    """The figures of one fitted run, kept in ``RUN/scores.json`` and reused while newer than the fit."""
    cached = run / SCORES_FILE
    if not rescore and cached.is_file() and cached.stat().st_mtime > (run / "metrics.json").stat().st_mtime:
        return {**json.loads(cached.read_text()), "label": entry.label}  # the figures, under today's label
    model = ppl_dgm.load(run)
    test = load_dataset(entry.data, "test")
    data = {"x": test.x, "y": test.y} if model.capabilities.conditional else test.x
    ll = ppl_dgm.log_likelihood(model, data, num_samples=NUM_SAMPLES, seed=0)
    psis = psis_diagnostic(model, data, num_samples=PSIS_SAMPLES, seed=0)
    try:
        usage = latent_usage(model, data).summary()
    except TypeError:  # no code space to measure (a model without posterior_mean)
        usage = {}
    metrics = json.loads((run / "metrics.json").read_text())
    row = {"label": entry.label, "slug": entry.slug, "model": entry.model, "options": entry.options,
           "fit": list(entry.fit), "test_nll_nats": ll.nll, "test_nll_stderr": ll.stderr, "kind": ll.kind,
           "num_samples": ll.num_samples, "neg_elbo_nats": -ll.elbo_mean, "bits_per_dim": ll.bits_per_dim,
           "khat_share_above_0.7": psis.share_above(0.7), "khat_share_above_0.5": psis.share_above(0.5),
           "khat_max": float(np.max(psis.khat)), "psis_samples": PSIS_SAMPLES, **usage,
           "fit_seconds": metrics.get("fit_seconds"), "best_epoch": metrics.get("best_epoch")}
    cached.write_text(json.dumps(row, indent=1))
    return row


def _cell(value: Any, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def markdown(rows: list[dict[str, Any]], baseline: float | None) -> str:
    """One row per variant: NLL ± standard error, its difference from the plain VAE, -ELBO, KL, active units,
    the k-hat shares and the fit time."""
    lines = ["| variant | test NLL (nats/image) | vs VAE | −ELBO | KL (nats) | active units | k̂ > 0.7 | k̂ > 0.5 "
             "| fit (s) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        delta = "—" if baseline is None else f"{r['test_nll_nats'] - baseline:+.2f}"
        units = f"{r['active_units']} / {r['latent_dims']}" if "active_units" in r else "—"
        lines.append(f"| {r['label']} | {r['test_nll_nats']:.2f} ± {r['test_nll_stderr']:.2f} | {delta} "
                     f"| {r['neg_elbo_nats']:.2f} | {_cell(r.get('kl_nats'), '.2f')} | {units} "
                     f"| {r['khat_share_above_0.7']:.1%} | {r['khat_share_above_0.5']:.1%} "
                     f"| {_cell(r.get('fit_seconds'), '.0f')} |")
    return "\n".join(lines)


def figures(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """KL per latent dimension of each variant (sorted, largest first) and test NLL against the share of
    images whose k-hat exceeds 0.7."""
    out.mkdir(parents=True, exist_ok=True)
    with_kl = [r for r in rows if r.get("kl_per_dim_nats")]
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in with_kl:
        ax.plot(sorted(r["kl_per_dim_nats"], reverse=True), marker="o", ms=3, label=r["label"])
    ax.axhline(0.01, color="grey", lw=0.8, ls=":")
    ax.set(yscale="log", xlabel="latent dimension (sorted by KL)", ylabel="KL(q(z_j|x) || p(z_j)) (nats)",
           title="KL per latent dimension, digits test split")
    ax.legend(fontsize=7)
    kl_path = out / "kl_per_dim.png"
    fig.tight_layout()
    fig.savefig(kl_path, dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(10, 5))
    for i, r in enumerate(rows):  # one marker and color per variant, named in the legend (labels would overlap)
        ax.errorbar(100 * r["khat_share_above_0.7"], r["test_nll_nats"], yerr=r["test_nll_stderr"], ms=6,
                    fmt="osD^vP*X"[i % 8], color=plt.cm.tab20(i % 20), label=r["label"])
    ax.set(xlabel="test images with Pareto k̂ > 0.7 (%)", ylabel="test NLL, IW 5000 (nats/image)",
           title="Which guides make the estimate trustworthy")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    khat_path = out / "nll_vs_khat.png"
    fig.tight_layout()
    fig.savefig(khat_path, dpi=120)
    plt.close(fig)
    return [kl_path, khat_path]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/vae_family", help="one directory per variant")
    parser.add_argument("--jobs", type=int, default=2, help="fits at once (each gets cores / jobs threads)")
    parser.add_argument("--only", default=None, help="comma-separated run names, e.g. vae,vampprior (default: all)")
    parser.add_argument("--refit", action="store_true", help="fit again even where a finished fit exists")
    parser.add_argument("--rescore", action="store_true", help="score again even where a run's scores.json exists")
    parser.add_argument("--out", default="benchmarks/results/vae_family.json")
    parser.add_argument("--figures", default="docs/images/vae_family", help="directory for the PNG figures")
    parser.add_argument("--page", default="docs/models/vae-family/index.md", help="docs page with the results block")
    args = parser.parse_args(argv)
    runs, out = Path(args.runs), Path(args.out)
    only = None if args.only is None else set(args.only.lower().split(","))
    entries = [e for e in ENTRIES if only is None or e.slug in only]
    jobs = [(e, runs / e.slug, ()) for e in entries]
    fit_all(jobs, args.jobs, args.refit)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 0)) or os.cpu_count() or 1)
    rows = [score_run(entry, run, args.rescore) for entry, run, _ in jobs if is_fitted(run)]
    if only is not None:  # a partial run reports its rows and leaves the table of all variants alone
        for r in rows:
            print(f"{r['label']}: test NLL {r['test_nll_nats']:.2f} ± {r['test_nll_stderr']:.2f}, "
                  f"-ELBO {r['neg_elbo_nats']:.2f}, k-hat > 0.7 {r['khat_share_above_0.7']:.1%}")
        return {"runs": rows}
    baseline = next((r["test_nll_nats"] for r in rows if r["slug"] == "vae"), None)
    table = markdown(rows, baseline)
    written = figures(rows, Path(args.figures))
    best = min(rows, key=lambda r: r["test_nll_nats"])
    report = {"num_samples": NUM_SAMPLES, "psis_samples": PSIS_SAMPLES, "runs": rows, "table": table,
              "best": {"label": best["label"], "run": str(runs / best["slug"]), "test_nll_nats": best["test_nll_nats"]}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(table + "\n")
    in_page = replace_block(args.page, "results", table)
    print(table)
    where = f"written into {args.page}" if in_page else f"not written into the docs ({args.page} has no results block)"
    print(f"figures: {', '.join(str(p) for p in written)}; table {where}")
    print(f"VAE family: {len(rows)} variants; best {best['label']} {best['test_nll_nats']:.2f} nats/image "
          f"(IW {NUM_SAMPLES}; plain VAE {baseline if baseline is None else format(baseline, '.2f')}); "
          f"reproduce: ppl-dgm evaluate {runs / best['slug']} --num-samples {NUM_SAMPLES}; wrote {out}")
    return report


if __name__ == "__main__":
    main()
