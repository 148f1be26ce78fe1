"""``ppl-dgm list``, ``evaluate`` and ``sample``: what is registered, and what a fitted run scores and draws."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from ppl_dgm.cli.common import count, evaluate_split, load_model, run_data, save_samples, scored_split
from ppl_dgm.datasets import dataset_info, list_datasets, load_dataset
from ppl_dgm.io import atomic_write
from ppl_dgm.models import get_model_class, list_models
from ppl_dgm.user_code import is_data_file
from ppl_dgm.validation import check_device

QUALITY_FILE = "quality.json"
QUALITY_ROWS = ("frechet_distance", "kid_mean", "kid_std", "precision", "recall", "c2st_accuracy",
                "confident_share", "class_entropy")
"""The sample-quality figures ``evaluate`` prints, one a line, beside the real-data floor."""


def one_line(docstring: str, width: int = 100) -> str:
    """The first paragraph of a docstring as plain text (RST literals unmarked), cut at a word to ``width``."""
    text = " ".join(docstring.strip().split("\n\n")[0].split()).replace("``", "")
    if len(text) <= width:
        return text
    return text[: text.rfind(" ", 0, width - 3)].rstrip(",;:.") + "..."


def cmd_list(args: argparse.Namespace) -> None:
    """``ppl-dgm list``: the registered models and data sets."""
    print("models:")
    for name in list_models():
        print(f"  {name:<20} {one_line(get_model_class(name).__doc__ or '')}")
    print("datasets:")
    for name in list_datasets():
        print(f"  {name:<20} {dataset_info(name).description}")


def _scores_digits(data: str) -> bool:
    """Whether the digits classifier can score draws for ``data`` (8x8 images with levels 0..16)."""
    if is_data_file(data):
        return False
    info = dataset_info(data)
    return info.image_shape == (8, 8) and info.num_levels == 17


def quality_report(model: Any, data: str, split: str, seed: int) -> dict[str, Any] | None:
    """Sample-quality metrics of ``model`` against the digits ``split`` and the real-data floor beside them.

    Draws as many samples as the split has (``torch.manual_seed(seed)`` first; a conditional model draws with
    the split's labels as ``y``) mapped onto the digits' support by `draw_digit_images`, and scores them with
    `sample_quality`. ``None`` when ``data`` are not 8x8 digits (the classifier cannot read them).
    """
    if not _scores_digits(data):
        return None
    # imported here: torchmetrics adds about 2 s to every other command's start
    from ppl_dgm.evaluation.digits_classifier import digits_classifier
    from ppl_dgm.evaluation.sample_quality import (
        draw_digit_images,
        is_dequantized_density,
        real_data_floor,
        sample_quality,
    )

    real = load_dataset(data, split, device=model.device, dtype=model.dtype)
    context = {"y": real.y} if model.capabilities.conditional else {}
    torch.manual_seed(seed)
    samples = draw_digit_images(model, real.x, **context)
    classifier = digits_classifier(model.device)
    quality = sample_quality(samples, real.x, classifier=classifier, seed=seed)
    floor = None if split == "train" else real_data_floor(split, classifier=classifier, seed=seed)
    return {"data": data, "split": split, "seed": seed, "num_samples": len(samples),
            "mapping": "floor" if is_dequantized_density(model, real.x, context) else "round",
            "model": quality.summary(), "floor": None if floor is None else floor.summary()}


def _print_quality(report: dict[str, Any]) -> None:
    floor = report["floor"]
    print(f"sample quality: {report['num_samples']} draws (seed {report['seed']}; {report['mapping']}ed and clamped to "
          f"0..16) vs {report['data']} {report['split']}" + ("; floor: as many train rows" if floor else ""))
    print(f"  {'metric':<18} {'model':>10} {'floor':>10}" if floor else f"  {'metric':<18} {'model':>10}")
    for key in QUALITY_ROWS:
        line = f"  {key:<18} {report['model'][key]:>10.4g}"
        print(line + (f" {floor[key]:>10.4g}" if floor else ""))
    histogram = " ".join(f"{share:.2f}" for share in report["model"]["class_histogram"])
    print(f"  class shares 0..9: {histogram}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    """``ppl-dgm evaluate``: the log-likelihood of a fitted model on one split (where it has one), and the
    sample-quality metrics of its draws beside the real-data floor (digits; written to quality.json too)."""
    directory = Path(args.dir)
    device = check_device(args.device)
    model = load_model(directory, device)
    data = run_data(directory, args.data)
    split = scored_split(data, args.split)
    summary = None
    if model.capabilities.likelihood != "none":
        summary = evaluate_split(model, data, split, args.num_samples, args.batch_size)
    quality = None if args.no_quality else quality_report(model, data, split, args.seed)
    if quality is not None:
        atomic_write(directory / QUALITY_FILE, (json.dumps({**quality, "log_likelihood": summary}, indent=1)
                                                + "\n").encode())
    if args.json:
        print(json.dumps({**(summary or {"data": data, "split": split}), "quality": quality}))
        return
    if summary is None:
        print(f"{data} {split}: {type(model).__name__} has no likelihood (capabilities.likelihood='none')")
    else:
        print(f"{data} {split}: NLL {summary['test_nll_nats']:.2f} ± {summary['test_nll_stderr']:.2f} "
              f"nats per example, {summary['bits_per_dim']:.3f} bits/dim ({summary['kind']}, "
              f"{summary['num_samples']} sample{'' if summary['num_samples'] == 1 else 's'})")
        if summary["neg_elbo_nats"] is not None:
            print(f"one-sample ELBO beside it: -ELBO {summary['neg_elbo_nats']:.2f} nats per example")
    if quality is not None:
        _print_quality(quality)
    elif not args.no_quality:
        print(f"no sample-quality metrics: the digits classifier reads 8x8 digits, not {data}")


def cmd_sample(args: argparse.Namespace) -> None:
    """``ppl-dgm sample``: draw samples of a fitted model into a PNG."""
    directory = Path(args.dir)
    model = load_model(directory, check_device(args.device))
    data = run_data(directory, args.data)
    print(f"wrote {save_samples(model, data, args.n, Path(args.output), args.seed)}")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The ``list``, ``evaluate`` and ``sample`` subcommands."""
    sub.add_parser("list", help="list models and datasets").set_defaults(func=cmd_list)

    p = sub.add_parser("evaluate", help="test log-likelihood and sample quality of a fitted model")
    p.add_argument("dir", help="directory written by 'ppl-dgm fit'")
    p.add_argument("--json", action="store_true", help="print one JSON object (the summary with data, split, "
                                                          "seconds and quality)")
    p.add_argument("--num-samples", type=count(1), default=None,
                   help="importance samples per example (default: the model's evaluation_samples, 1000 for most)")
    p.add_argument("--batch-size", type=count(1), default=None, help="examples per pass (default: automatic)")
    p.add_argument("--split", choices=["train", "val", "test"], default=None,
                   help="split to score (default: test; train for a data file)")
    p.add_argument("--data", default=None, help="data set name or .npy/.csv file to score (default: the one it was "
                                                "fitted on)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws scored for sample quality (default 0)")
    p.add_argument("--no-quality", action="store_true", help="skip the sample-quality metrics")
    p.add_argument("--device", default="cpu", help="where to evaluate (default cpu)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("sample", help="draw samples from a fitted model into a PNG")
    p.add_argument("dir", help="directory written by 'ppl-dgm fit'")
    p.add_argument("-n", type=count(1), default=64, help="number of samples (default 64)")
    p.add_argument("-o", "--output", required=True, help="PNG file to write")
    p.add_argument("--seed", type=int, default=None, help="seed of the draws (default: none)")
    p.add_argument("--data", default=None, help="data set whose picture form to use (default: the fitted one)")
    p.add_argument("--device", default="cpu", help="where to sample (default cpu)")
    p.set_defaults(func=cmd_sample)
