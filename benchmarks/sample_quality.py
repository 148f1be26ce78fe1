"""Sample quality of every family on the digits, with the real-data floor beside it: each model fitted by
``ppl-dgm fit`` with 3 seeds, 447 draws per fit (the test split's size; a conditional model draws the test
split's labels) mapped onto the digits' support (`draw_digit_images`) and compared with the 447 test digits
in the features of the package's digits classifier (`ppl_dgm.evaluation.sample_quality`); the test
log-likelihood beside it where the model has one. Mean and spread over the seeds; sample grids, the
training curves and the Frechet distance of every seed as PNG.

    python benchmarks/sample_quality.py [--runs runs/sample_quality] [--jobs 2] [--only gan,ddpm]
                                        [--seeds 0,1,2] [--refit] [--rescore]
                                        [--out benchmarks/results/sample_quality.json]
                                        [--figures docs/images/sample_quality]

Fits that finished in ``RUNS/<name>/seed<k>`` are reused (``--refit`` fits them again), and so are their
scores (``scores.json`` there; ``--rescore`` computes them again).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
from pathlib import Path
from typing import Any

import torch
from digits_table import ENTRIES as LIKELIHOOD_ENTRIES
from fitted_runs import Entry, fit_all, is_fitted

import ppl_dgm
from ppl_dgm import plots
from ppl_dgm.datasets import load_dataset
from ppl_dgm.evaluation.digits_classifier import digits_classifier
from ppl_dgm.evaluation.sample_quality import draw_digit_images, real_data_floor, sample_quality
from ppl_dgm.evaluation.timing import median_seconds


def _adversarial(epochs: int, lr: float) -> tuple[str, ...]:
    """A GAN's fit: batches of 64, and the best epoch by validation Frechet distance over all of them (their
    losses oscillate, so a patience shorter than the fit stops too early)."""
    return ("--epochs", str(epochs), "--patience", str(epochs), "--batch-size", "64", "--lr", str(lr))


CONTRASTIVE = ("--epochs", "100", "--patience", "30")
DENOISING = ("--epochs", "300", "--batch-size", "128", "--lr", "1e-3", "--patience", "50")
ENTRIES = [
    Entry("GAN", "gan", fit=_adversarial(800, 2e-4)),
    Entry("DCGAN", "dcgan", fit=_adversarial(300, 2e-4)),
    Entry("WGAN", "wgan", fit=_adversarial(800, 2e-4)),
    Entry("WGAN-GP", "wgangp", fit=_adversarial(500, 5e-4)),
    Entry("CGAN", "cgan", fit=_adversarial(600, 2e-4)),
    Entry("StyleGAN", "stylegan", fit=_adversarial(250, 2e-4)),
    Entry("DDPM (plain)", "ddpm", options={"schedule": "linear", "parameterization": "eps", "variance": "fixed",
                                           "loss": "simple"}, fit=DENOISING),
    Entry("DDPM (improved)", "ddpm", fit=DENOISING),  # the constructor's defaults
    Entry("EBM (replay buffer)", "ebm", fit=CONTRASTIVE),  # 95% of the chains from the buffer, as Du & Mordatch
    Entry("EBM (short-run)", "ebm", fit=(*CONTRASTIVE, "-E", "fresh=1.0")),  # every chain from noise, as draws start
    *[e for e in LIKELIHOOD_ENTRIES if e.slug in ("vae", "gmm", "hmm")],
]
METRICS = ("frechet_distance", "kid_mean", "precision", "recall", "c2st_accuracy", "confident_share",
           "class_entropy")
SAMPLES_TIMED = 1000
SCORES_FILE = "scores.json"


def score_run(entry: Entry, run: Path, seed: int, test: Any, classifier: Any, rescore: bool) -> dict[str, Any]:
    """Sample quality (and the test NLL where the model has a likelihood) of one fitted run, kept in
    ``RUN/scores.json`` and reused while it is newer than the fit (unless ``rescore``)."""
    cached = run / SCORES_FILE
    if not rescore and cached.is_file() and cached.stat().st_mtime > (run / "metrics.json").stat().st_mtime:
        return json.loads(cached.read_text())
    model = ppl_dgm.load(run)
    x = load_dataset(entry.data, "test").x
    conditional = model.capabilities.conditional  # draws the test split's labels
    torch.manual_seed(seed)
    images = draw_digit_images(model, x, **({"y": test.y} if conditional else {}))
    labels = {"y": test.y.repeat(SAMPLES_TIMED // len(test.y) + 1)[:SAMPLES_TIMED]} if conditional else {}
    seconds = median_seconds(lambda: ppl_dgm.draw(model, SAMPLES_TIMED, **labels), model.device, 3, 5.0)
    row: dict[str, Any] = {"label": entry.label, "seed": seed, "draw_seconds": seconds,
                           **sample_quality(images, test.x, classifier=classifier, seed=0).summary()}
    if model.capabilities.likelihood != "none":
        result = ppl_dgm.log_likelihood(model, x, seed=0)  # the model's evaluation_samples (1000; DDPM 4)
        row.update(test_nll_nats=result.nll, nll_kind=result.kind)
    metrics = json.loads((run / "metrics.json").read_text())
    row["fit_seconds"] = metrics.get("fit_seconds")
    row["samples"] = images[:16].tolist()
    cached.write_text(json.dumps(row))
    return row


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(rows: list[dict[str, Any]], floor: dict[str, Any]) -> list[dict[str, Any]]:
    """Mean and standard deviation over the seeds of each model, with the Frechet distance over the floor's."""
    out = []
    for label in dict.fromkeys(r["label"] for r in rows):
        mine = [r for r in rows if r["label"] == label]
        summary: dict[str, Any] = {"label": label, "seeds": [r["seed"] for r in mine]}
        for key in (*METRICS, "test_nll_nats", "draw_seconds", "fit_seconds"):
            values = [r[key] for r in mine if r.get(key) is not None]
            if values:
                summary[key], summary[f"{key}_sd"] = _mean_sd(values)
        summary["frechet_over_floor"] = summary["frechet_distance"] / floor["frechet_distance"]
        summary["largest_class_share"] = statistics.fmean(max(r["class_histogram"]) for r in mine)
        out.append(summary)
    return out


def _pm(row: dict[str, Any], key: str, fmt: str) -> str:
    if key not in row:
        return "—"
    return f"{format(row[key], fmt)} ± {format(row[key + '_sd'], fmt)}"


def markdown(summaries: list[dict[str, Any]], floor: dict[str, Any]) -> str:
    """The table: the real-data floor first, then one row per model (mean ± sd over the seeds)."""
    lines = ["| model | Fréchet distance | ÷ floor | KID | precision | recall | C2ST accuracy | confident "
             "| class entropy (nats) | test NLL (nats/image) | draw 1000 (s) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
             f"| real data (train vs test) | {_pm(floor, 'frechet_distance', '.2f')} | 1.00 "
             f"| {_pm(floor, 'kid_mean', '.2f')} | {_pm(floor, 'precision', '.3f')} | {_pm(floor, 'recall', '.3f')} "
             f"| {_pm(floor, 'c2st_accuracy', '.3f')} | {_pm(floor, 'confident_share', '.3f')} "
             f"| {_pm(floor, 'class_entropy', '.3f')} | | |"]
    for row in summaries:
        lines.append(
            f"| {row['label']} | {_pm(row, 'frechet_distance', '.2f')} | {row['frechet_over_floor']:.2f} "
            f"| {_pm(row, 'kid_mean', '.2f')} | {_pm(row, 'precision', '.3f')} | {_pm(row, 'recall', '.3f')} "
            f"| {_pm(row, 'c2st_accuracy', '.3f')} | {_pm(row, 'confident_share', '.3f')} "
            f"| {_pm(row, 'class_entropy', '.3f')} | {_pm(row, 'test_nll_nats', '.2f')} | {row['draw_seconds']:.2f} |")
    return "\n".join(lines)


def figures(rows: list[dict[str, Any]], summaries: list[dict[str, Any]], floor: dict[str, Any], test: Any,
            entries: list[Entry], runs: Path, out: Path) -> list[Path]:
    """Sample grids of every model (first seed) beside real digits, each model's training curve (first
    seed), and the Frechet distance of every seed against the floor."""
    out.mkdir(parents=True, exist_ok=True)
    first = {s["label"]: next(r for r in rows if r["label"] == s["label"]) for s in summaries}
    panels = {"real test digits": test.x[:16]}
    panels.update({label: torch.tensor(r["samples"]) for label, r in first.items()})
    written = [plots.image_panels(panels, (8, 8), out / "samples.png", vmax=16)]
    for entry in entries:
        if entry.label in first:
            curve = runs / entry.slug / f"seed{first[entry.label]['seed']}" / "curve.png"
            if curve.is_file():
                written.append(Path(shutil.copyfile(curve, out / f"{entry.slug}_curve.png")))
    written.append(plots.seed_spread({s["label"]: [r["frechet_distance"] for r in rows if r["label"] == s["label"]]
                                      for s in summaries}, floor["frechet_distance"], out / "frechet_by_seed.png",
                                     ylabel="Fréchet distance (classifier features)", floor_label="real data"))
    return written


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/sample_quality", help="one directory per model, one per seed inside")
    parser.add_argument("--jobs", type=int, default=2, help="fits at once (each gets cores / jobs threads)")
    parser.add_argument("--only", default=None, help="comma-separated run names, e.g. gan,ddpm (default: all)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds of the fits")
    parser.add_argument("--refit", action="store_true", help="fit again even where a finished fit exists")
    parser.add_argument("--rescore", action="store_true", help="score again even where a run's scores.json exists")
    parser.add_argument("--out", default="benchmarks/results/sample_quality.json")
    parser.add_argument("--figures", default="docs/images/sample_quality", help="directory for the PNG figures")
    args = parser.parse_args(argv)
    runs, out = Path(args.runs), Path(args.out)
    entries = [e for e in ENTRIES if args.only is None or e.slug in args.only.lower().split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(e, runs / e.slug / f"seed{s}", ("--seed", str(s))) for e in entries for s in seeds]
    fit_all(sorted(jobs, key=lambda job: job[0].fit != DENOISING), args.jobs, args.refit)  # the longest fits first
    torch.set_num_threads(os.cpu_count() or 1)
    test = load_dataset("digits", "test")
    classifier = digits_classifier()
    floors = [real_data_floor("test", classifier=classifier, seed=s).summary() for s in seeds]
    floor = {key: statistics.fmean(f[key] for f in floors) for key in METRICS}  # one train subset per seed
    floor.update({f"{key}_sd": _mean_sd([f[key] for f in floors])[1] for key in METRICS})
    rows = [score_run(entry, run, int(flags[1]), test, classifier, args.rescore)
            for entry, run, flags in jobs if is_fitted(run)]
    summaries = aggregate(rows, floor)
    table = markdown(summaries, floor)
    written = figures(rows, summaries, floor, test, entries, runs, Path(args.figures))
    out.parent.mkdir(parents=True, exist_ok=True)
    runs_without_images = [{k: v for k, v in r.items() if k != "samples"} for r in rows]
    report = {"floor": floor, "floors": floors, "models": summaries, "runs": runs_without_images, "seeds": seeds,
              "table": table}
    out.write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"figures: {', '.join(str(p) for p in written)}")
    ratios = ", ".join(f"{s['label']} {s['frechet_over_floor']:.2f}" for s in summaries)
    print(f"sample quality: {len(summaries)} models x {len(seeds)} seeds; Frechet distance / floor "
          f"({floor['frechet_distance']:.2f}): {ratios}; wrote {out}")
    return report


if __name__ == "__main__":
    main()
