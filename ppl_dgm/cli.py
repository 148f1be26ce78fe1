"""The ``ppl-dgm`` command line: list, fit, evaluate, sample, demo."""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import pyro
import torch

from ppl_dgm import io, plots
from ppl_dgm.core import draw
from ppl_dgm.datasets import dataset_info, list_datasets, load_dataset
from ppl_dgm.evaluation import log_likelihood
from ppl_dgm.evaluation.dequantization import needs_dequantization
from ppl_dgm.infer import NonFiniteLossError, fit
from ppl_dgm.models import get_model_class, list_models
from ppl_dgm.models.estimator import Estimator
from ppl_dgm.validation import check_device

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
CURVE_FILE = "curve.png"
SAMPLES_FILE = "samples.png"


class UsageError(ValueError):
    """A mistake in the command line, reported in one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _option(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def _model_options(name: str, options: list[tuple[str, Any]]) -> dict[str, Any]:
    cls = get_model_class(name)
    known = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    kwargs = dict(options)
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise UsageError(f"unknown option(s) {', '.join(unknown)} for model {name}; options: {', '.join(known)}")
    return kwargs


def _save_samples(model: Any, data_name: str, n: int, path: Path, seed: int | None) -> Path:
    if seed is not None:
        torch.manual_seed(seed)
    samples = draw(model, n)
    info = dataset_info(data_name)
    if info.image_shape is not None:
        return plots.image_grid(samples, info.image_shape, path, vmax=(info.num_levels or 2) - 1)
    if samples.shape[1:] == (2,):
        reference = load_dataset(data_name, "test").x
        return plots.scatter(samples, path, reference=reference)
    raise UsageError(f"dataset {data_name} has no picture form; cannot draw samples")


def _read_run(directory: Path) -> dict[str, Any]:
    path = directory / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory} has no {RUN_FILE}; was it written by 'ppl-dgm fit'?")
    return json.loads(path.read_text())


def _evaluate(model: Any, data_name: str, split: str, num_samples: int, batch_size: int | None) -> dict[str, Any]:
    data = load_dataset(data_name, split, device=model.device, dtype=model.dtype)
    start = time.perf_counter()
    result = log_likelihood(model, data.x, num_samples=num_samples, batch_size=batch_size)
    return {"data": data_name, "split": split, **result.summary(), "seconds": time.perf_counter() - start}


def cmd_list(args: argparse.Namespace) -> None:
    print("models:")
    for name in list_models():
        paragraph = " ".join((get_model_class(name).__doc__ or "").strip().split("\n\n")[0].split())
        print(f"  {name:<20} {paragraph if len(paragraph) <= 100 else paragraph[:97] + '...'}")
    print("datasets:")
    for name in list_datasets():
        print(f"  {name:<20} {dataset_info(name).description}")


def cmd_fit(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    device = check_device(args.device)
    dataset_info(args.data)  # fail early on an unknown name
    pyro.set_rng_seed(args.seed)  # the initial weights depend on the seed too
    if args.resume:
        if args.option:
            raise UsageError("--option cannot change a model that is resumed")
        saved = _read_run(out)
        if saved["model"] != args.model.lower() or saved["data"] != args.data:
            raise UsageError(f"{out} holds a fit of {saved['model']} on {saved['data']}, "
                             f"not {args.model} on {args.data}")
        model = io.load(out, device=device)
        options = saved["options"]
    else:
        options = _model_options(args.model, args.option)
        model_class = get_model_class(args.model)
        if "random_state" in inspect.signature(model_class.__init__).parameters:
            options.setdefault("random_state", args.seed)
        model = model_class(**options).to(device)
    engine = args.engine if args.engine != "auto" else ("em" if isinstance(model, Estimator) else "svi")
    if engine == "em" and not isinstance(model, Estimator):
        raise UsageError(f"model {args.model} has no EM/closed-form fit; use --engine svi")
    train = load_dataset(args.data, "train", device=device)
    val = load_dataset(args.data, "val", device=device)
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(args, k) for k in ("engine", "epochs", "batch_size", "lr", "objective", "num_particles",
                                               "patience", "seed")}
    run = {"model": args.model.lower(), "data": args.data, "options": options, "fit": {**settings, "engine": engine},
           "device": str(device)}
    io.atomic_write(out / RUN_FILE, json.dumps(run, indent=2).encode())
    fit_with = _fit_em if engine == "em" else _fit_svi
    metrics = fit_with(model, train.x, val.x, args, out)
    if args.eval_samples:
        metrics["test"] = _evaluate(model, args.data, "test", args.eval_samples, None)
    io.atomic_write(out / METRICS_FILE, json.dumps(metrics, indent=2).encode())
    _save_samples(model, args.data, 64, out / SAMPLES_FILE, args.seed)
    line = f"fitted {args.model} on {args.data} ({engine}): {metrics['summary']}"
    if "test" in metrics:
        test = metrics["test"]
        line += f"; test NLL {test['test_nll_nats']:.2f} ± {test['test_nll_stderr']:.2f} nats ({test['kind']})"
    print(line)
    resumable = f"{io.TRAINER_FILE} (to resume), " if engine == "svi" else ""
    print(f"results in {out}: {io.CONFIG_FILE} + {io.WEIGHTS_FILE} (checkpoint), {resumable}"
          f"{RUN_FILE}, {METRICS_FILE}, {CURVE_FILE}, {SAMPLES_FILE}")
    return metrics


def _fit_svi(model: Any, train: torch.Tensor, val: torch.Tensor, args: argparse.Namespace, out: Path
             ) -> dict[str, Any]:
    result = fit(model, train, val=val, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                 objective=args.objective, num_particles=args.num_particles, patience=args.patience,
                 seed=args.seed, device=model.device, progress=not args.no_progress, checkpoint_dir=out,
                 resume=args.resume)
    plots.training_curve(result.train_loss, result.val_loss, out / CURVE_FILE, result.best_epoch)
    return {
        "engine": "svi", "train_loss": result.train_loss, "val_loss": result.val_loss,
        "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss, "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early, "fit_seconds": result.seconds, "unit": "nats per example",
        "summary": f"best validation loss {result.best_val_loss:.2f} nats at epoch {result.best_epoch} "
                   f"({result.epochs_run} epochs, {result.seconds:.0f} s)",
    }


def _fit_em(model: Any, train: torch.Tensor, val: torch.Tensor, args: argparse.Namespace, out: Path
            ) -> dict[str, Any]:
    """The estimator's own fit (EM or closed form), on dequantized data where the model is a density."""
    if args.resume:
        raise UsageError("--resume continues SVI fits; an EM fit starts again from its initialization")
    if needs_dequantization(model, train):
        generator = torch.Generator(device=train.device).manual_seed(args.seed)
        train = train + torch.rand(train.shape, generator=generator, device=train.device, dtype=train.dtype)
    start = time.perf_counter()
    model.fit_data(train)
    seconds = time.perf_counter() - start
    io.save(model, out)
    history = [-value for value in model.fit_history()]
    val_nll = log_likelihood(model, val, num_samples=1).nll
    plots.training_curve(history, [], out / CURVE_FILE, unit="negative log-likelihood per example (nats)",
                         xlabel="EM iteration")
    return {
        "engine": "em", "train_nll_per_iteration": history, "val_nll": val_nll, "fit_seconds": seconds,
        "unit": "nats per example",
        "summary": f"{len(history)} iterations in {seconds:.1f} s; validation NLL {val_nll:.2f} nats",
    }


def cmd_evaluate(args: argparse.Namespace) -> None:
    directory = Path(args.dir)
    device = check_device(args.device)
    model = io.load(directory, device=device)
    data_name = args.data or _read_run(directory)["data"]
    summary = _evaluate(model, data_name, args.split, args.num_samples, args.batch_size)
    if args.json:
        print(json.dumps(summary))
        return
    print(f"{data_name} {args.split}: NLL {summary['test_nll_nats']:.2f} ± {summary['test_nll_stderr']:.2f} "
          f"nats per example, {summary['bits_per_dim']:.3f} bits/dim ({summary['kind']}, "
          f"{summary['num_samples']} samples)")
    if summary["neg_elbo_nats"] is not None:
        print(f"one-sample ELBO beside it: -ELBO {summary['neg_elbo_nats']:.2f} nats per example")


def cmd_sample(args: argparse.Namespace) -> None:
    directory = Path(args.dir)
    model = io.load(directory, device=check_device(args.device))
    data_name = args.data or _read_run(directory)["data"]
    print(f"wrote {_save_samples(model, data_name, args.n, Path(args.output), args.seed)}")


def cmd_demo(args: argparse.Namespace) -> None:
    print(f"demo: fitting a VAE to the digits (train 1000 / val 350 / test 447) into {args.out}")
    fit_args = build_parser().parse_args(["fit", "vae", "--data", "digits", "--out", args.out,
                                          "--device", args.device, *(["--no-progress"] if args.no_progress else [])])
    cmd_fit(fit_args)
    print(f"next: ppl-dgm evaluate {args.out}   |   ppl-dgm sample {args.out} -n 64 -o more_samples.png")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ppl-dgm`` (every subcommand has ``--help``)."""
    parser = _Parser(prog="ppl-dgm", description="Fit, evaluate and sample deep generative models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("list", help="list models and datasets").set_defaults(func=cmd_list)

    p = sub.add_parser("fit", help="fit a model to a dataset and write results into a directory")
    p.add_argument("model", help="model name (see 'ppl-dgm list')")
    p.add_argument("--data", required=True, help="dataset name (see 'ppl-dgm list')")
    p.add_argument("--out", required=True, help="directory for checkpoint, metrics and figures")
    p.add_argument("--engine", choices=["auto", "em", "svi"], default="auto",
                   help="em: the estimator's own EM/closed-form fit; svi: ppl_dgm.fit (default: em where the "
                        "model has one)")
    p.add_argument("--epochs", type=_count(1), default=1000, help="maximum number of epochs (default 1000)")
    p.add_argument("--batch-size", type=_count(1), default=100)
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam learning rate")
    p.add_argument("--objective", choices=["elbo", "iwae", "renyi"], default="elbo")
    p.add_argument("--num-particles", type=_count(1), default=None, help="samples per example in the objective")
    p.add_argument("--patience", type=_count(1), default=50, help="epochs without validation improvement (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--option", "-O", type=_option, action="append", default=[], metavar="KEY=VALUE",
                   help="model constructor argument, e.g. -O latent_dim=32 (value parsed as JSON)")
    p.add_argument("--eval-samples", type=_count(0), default=1000,
                   help="importance samples for the test evaluation written to metrics.json (0: skip)")
    p.add_argument("--resume", action="store_true", help="continue the fit saved in --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("evaluate", help="test log-likelihood of a fitted model")
    p.add_argument("dir", help="directory written by 'ppl-dgm fit'")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--num-samples", type=_count(1), default=1000, help="importance samples per example")
    p.add_argument("--batch-size", type=_count(1), default=None)
    p.add_argument("--split", choices=["train", "val", "test"], default="test")
    p.add_argument("--data", default=None, help="dataset (default: the one it was fitted on)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("sample", help="draw samples from a fitted model into a PNG")
    p.add_argument("dir", help="directory written by 'ppl-dgm fit'")
    p.add_argument("-n", type=_count(1), default=64, help="number of samples")
    p.add_argument("-o", "--output", required=True, help="PNG file to write")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--data", default=None, help="dataset whose picture form to use (default: the fitted one)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("demo", help="fit a VAE on the bundled digits and print where the results are")
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ppl-dgm``; returns the exit status (2 for a user error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"ppl-dgm: error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"ppl-dgm: fit failed: {error}; the last good checkpoint is kept", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ppl-dgm: interrupted; the last good checkpoint is kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
