"""Every digits result so far in one table: each model fitted by ``ppl-dgm fit`` on the train split
(early stopping on validation where it trains by SVI), scored on the 447 test digits in nats per
image and bits per dimension (exact, importance-weighted with 1000 samples, or the dequantization
bound, as the evaluation protocol says), the real size of the test split entropy-coded by each exact
discrete model (decoded and checked bit-exact), and the seconds to score the test split and to draw
1,000 images on each device asked for.

    python benchmarks/digits_table.py [--runs runs/digits_table] [--jobs 2] [--only vae,arm]
                                      [--devices cpu,cuda] [--refit] [--out benchmarks/results/digits_table.json]

Fits that finished in ``RUNS/<name>`` (``metrics.json`` written) are reused (``--refit`` fits them again),
so a second call only scores and times. Each fit runs with ``OMP_NUM_THREADS`` threads if that is set, else
with the cores divided by ``--jobs``. The table is printed as markdown and written beside the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch
from fitted_runs import Entry, fit_all, is_fitted

import ppl_dgm
from ppl_dgm.datasets import load_dataset
from ppl_dgm.evaluation.compression import is_codable
from ppl_dgm.evaluation.compression_report import baseline_sizes, compressed_size_report
from ppl_dgm.evaluation.timing import median_seconds

EM = ("--engine", "em")
FLOW_FIT = ("--patience", "30", "--weight-decay", "1e-4", "--max-grad-norm", "100")
FLOW = {"bounds": [0, 17], "dropout": 0.2}
ENTRIES = [
    Entry("GMM", "gmm", options={"n_components": 20, "covariance_type": "diag", "reg_covar": 0.001}, fit=EM),
    Entry("pPCA", "ppca", options={"n_components": 60}, fit=EM),
    Entry("HMM", "hmm", "digits_sequence", {"n_components": 16, "covariance_type": "diag", "min_covar": 0.001,
                                            "n_iter": 100}, EM),
    Entry("VAE", "vae"),
    Entry("NICE", "nice", options={**FLOW, "num_layers": 4, "hidden_dims": [256, 256]}, fit=FLOW_FIT),
    Entry("RealNVP", "realnvp", options={**FLOW, "num_layers": 6, "hidden_dims": [256, 256]}, fit=FLOW_FIT),
    Entry("MAF", "maf", options={**FLOW, "num_layers": 5, "hidden_dims": [256, 256]}, fit=FLOW_FIT),
    Entry("IAF", "iaf", options={**FLOW, "num_layers": 2, "hidden_dims": [128], "dropout": 0.1},
          fit=(*FLOW_FIT, "--epochs", "100")),  # its density takes D sequential passes per layer
    Entry("NSF", "nsf", options={**FLOW, "num_layers": 3, "bins": 8, "hidden_dims": [256, 256]}, fit=FLOW_FIT),
    Entry("NSF, variational dequantization", "nsf",
          options={**FLOW, "num_layers": 3, "bins": 8, "hidden_dims": [256, 256], "dequantization": "variational"},
          fit=FLOW_FIT),
    Entry("Glow", "glow", options={**FLOW, "num_steps": 8, "hidden_channels": 64}, fit=FLOW_FIT),
    Entry("IDF", "idf", fit=("--epochs", "600", "--patience", "30", "--batch-size", "64")),
    Entry("ARM", "arm", fit=("--epochs", "300", "--patience", "30", "--batch-size", "50")),
]
TIMING_REPEATS = 3
SLOW_SECONDS = 5.0
SAMPLES_TIMED = 1000


def _score(entry: Entry, run: Path, devices: list[torch.device]) -> dict[str, Any]:
    """Test NLL, compressed size (exact discrete models) and timings of one fitted run."""
    model = ppl_dgm.load(run, device=devices[0])
    x = load_dataset(entry.data, "test", device=devices[0]).x
    result = ppl_dgm.log_likelihood(model, x, num_samples=1000, seed=0)
    row: dict[str, Any] = {"label": entry.label, "model": entry.model, **result.summary(),
                           "median_nll_nats": float(-result.per_sample.median()),
                           "max_nll_nats": float(-result.per_sample.min())}
    if is_codable(model):
        report = compressed_size_report(model, x)
        row.update(compressed_bytes=report.total_bytes, header_bytes=report.header_bytes,
                   size_to_nll=report.ratio, decoded_exactly=report.decoded_equal,
                   encode_seconds=report.encode_seconds, decode_seconds=report.decode_seconds)
    for device in devices:
        model = model.to(device)
        x_device = x.to(device)
        with torch.no_grad():
            row[f"log_prob_seconds_{device.type}"] = median_seconds(
                lambda m=model, xd=x_device: ppl_dgm.log_likelihood(m, xd, num_samples=1000, seed=0), device,
                TIMING_REPEATS, SLOW_SECONDS)
            row[f"sample_{SAMPLES_TIMED}_seconds_{device.type}"] = median_seconds(
                lambda m=model: ppl_dgm.draw(m, SAMPLES_TIMED), device, TIMING_REPEATS, SLOW_SECONDS)
    return row


def _cell(value: Any, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def markdown(rows: list[dict[str, Any]], codecs: dict[str, int], devices: list[str]) -> str:
    """The table: one row per model, then the general-purpose codecs on the same bytes."""
    timing = "".join(f" | score 447 / draw 1000, {d} (s)" for d in devices)
    lines = [f"| model | test NLL (nats/image) | bits/dim | kind | compressed (bytes){timing} |",
             "| --- | --- | --- | --- | ---" + " | ---" * len(devices) + " |"]
    for row in rows:
        times = "".join(f" | {row[f'log_prob_seconds_{d}']:.3f} / {row[f'sample_{SAMPLES_TIMED}_seconds_{d}']:.3f}"
                        for d in devices)
        nll = f"{row['test_nll_nats']:.2f} ± {row['test_nll_stderr']:.2f}"
        lines.append(f"| {row['label']} | {nll} | {row['bits_per_dim']:.3f} | {row['kind']} | "
                     f"{_cell(row.get('compressed_bytes'), 'd')}{times} |")
    for name, size in codecs.items():
        lines.append(f"| {name} (on the uint8 bytes) | | {8 * size / (447 * 64):.3f} | | {size}"
                     + " | " * len(devices) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/digits_table", help="one fitted run directory per model")
    parser.add_argument("--jobs", type=int, default=2, help="fits at once (each gets cores / jobs threads)")
    parser.add_argument("--only", default=None, help="comma-separated run names, e.g. vae,nsf,arm (default: all)")
    parser.add_argument("--devices", default="cpu", help="comma-separated devices to time on, e.g. cpu,cuda")
    parser.add_argument("--refit", action="store_true", help="fit again even where a checkpoint exists")
    parser.add_argument("--out", default="benchmarks/results/digits_table.json")
    args = parser.parse_args(argv)
    runs, out = Path(args.runs), Path(args.out)
    entries = [e for e in ENTRIES if args.only is None or e.slug in args.only.lower().split(",")]
    devices = [torch.device(name) for name in args.devices.split(",")]
    fit_all([(e, runs / e.slug, ()) for e in entries], args.jobs, args.refit)
    torch.set_num_threads(os.cpu_count() or 1)
    rows = [_score(e, runs / e.slug, devices) for e in entries if is_fitted(runs / e.slug)]
    codecs = baseline_sizes(load_dataset("digits", "test").x.numpy().astype("int64"), (8, 8))
    table = markdown(rows, codecs, [d.type for d in devices])
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"rows": rows, "codecs": codecs, "devices": [str(d) for d in devices], "table": table}
    out.write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    best = min(rows, key=lambda r: r["test_nll_nats"])
    print(f"digits table: {len(rows)} models; best {best['label']} {best['test_nll_nats']:.2f} nats/image; "
          f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
