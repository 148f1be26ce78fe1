"""``ppl-dgm list``, ``evaluate`` and ``sample``: what is registered, and what a fitted run scores and draws."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ppl_dgm.cli.common import count, evaluate_split, load_model, run_data, save_samples, scored_split
from ppl_dgm.datasets import dataset_info, list_datasets
from ppl_dgm.models import get_model_class, list_models
from ppl_dgm.validation import check_device


def cmd_list(args: argparse.Namespace) -> None:
    """``ppl-dgm list``: the registered models and data sets."""
    print("models:")
    for name in list_models():
        paragraph = " ".join((get_model_class(name).__doc__ or "").strip().split("\n\n")[0].split())
        print(f"  {name:<20} {paragraph if len(paragraph) <= 100 else paragraph[:97] + '...'}")
    print("datasets:")
    for name in list_datasets():
        print(f"  {name:<20} {dataset_info(name).description}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    """``ppl-dgm evaluate``: the log-likelihood of a fitted model on one split."""
    directory = Path(args.dir)
    device = check_device(args.device)
    model = load_model(directory, device)
    data = run_data(directory, args.data)
    split = scored_split(data, args.split)
    summary = evaluate_split(model, data, split, args.num_samples, args.batch_size)
    if args.json:
        print(json.dumps(summary))
        return
    print(f"{data} {split}: NLL {summary['test_nll_nats']:.2f} ± {summary['test_nll_stderr']:.2f} "
          f"nats per example, {summary['bits_per_dim']:.3f} bits/dim ({summary['kind']}, "
          f"{summary['num_samples']} samples)")
    if summary["neg_elbo_nats"] is not None:
        print(f"one-sample ELBO beside it: -ELBO {summary['neg_elbo_nats']:.2f} nats per example")


def cmd_sample(args: argparse.Namespace) -> None:
    """``ppl-dgm sample``: draw samples of a fitted model into a PNG."""
    directory = Path(args.dir)
    model = load_model(directory, check_device(args.device))
    data = run_data(directory, args.data)
    print(f"wrote {save_samples(model, data, args.n, Path(args.output), args.seed)}")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The ``list``, ``evaluate`` and ``sample`` subcommands."""
    sub.add_parser("list", help="list models and datasets").set_defaults(func=cmd_list)

    p = sub.add_parser("evaluate", help="test log-likelihood of a fitted model")
    p.add_argument("dir", help="directory written by 'ppl-dgm fit'")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--num-samples", type=count(1), default=1000, help="importance samples per example")
    p.add_argument("--batch-size", type=count(1), default=None)
    p.add_argument("--split", choices=["train", "val", "test"], default=None,
                   help="split to score (default: test; train for a data file)")
    p.add_argument("--data", default=None, help="dataset name or .npy/.csv file (default: the one it was fitted on)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("sample", help="draw samples from a fitted model into a PNG")
    p.add_argument("dir", help="directory written by 'ppl-dgm fit'")
    p.add_argument("-n", type=count(1), default=64, help="number of samples")
    p.add_argument("-o", "--output", required=True, help="PNG file to write")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--data", default=None, help="dataset whose picture form to use (default: the fitted one)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_sample)
