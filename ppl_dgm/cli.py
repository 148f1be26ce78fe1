"""The ``ppl-dgm`` command line: list, fit, evaluate, sample, diagnose, demo."""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any, NoReturn

import pyro
import torch

from ppl_dgm import io, plots
from ppl_dgm.core import DATA, X, draw
from ppl_dgm.datasets import dataset_info, list_datasets, load_dataset
from ppl_dgm.diagnostics.report import KHAT_THRESHOLD, quiet_arviz, write_report
from ppl_dgm.evaluation import log_likelihood
from ppl_dgm.evaluation.dequantization import needs_dequantization
from ppl_dgm.evaluation.posterior import global_latent_sites
from ppl_dgm.infer import NonFiniteLossError, fit
from ppl_dgm.models import get_model_class, list_models
from ppl_dgm.models.estimator import Estimator
from ppl_dgm.user_code import is_data_file, is_story_spec, load_story_class, read_data_file
from ppl_dgm.validation import check_device

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
CURVE_FILE = "curve.png"
SAMPLES_FILE = "samples.png"
DIAGNOSTICS_DIR = "diagnostics"


class UsageError(ValueError):
    """A mistake in the command line, reported in one line with exit status 2."""


class NoPictureError(UsageError):
    """The data have no picture form (images or 2-D points), so samples cannot be drawn as a PNG."""


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


def _model_class(text: str) -> tuple[str, type, dict[str, Any]]:
    """The spec recorded in run.json (a registered name, or ``/abs/path/file.py:Name``), the class, and
    the constructor arguments the spec fixes (a plain model function's ``model_fn``)."""
    if is_story_spec(text):
        return load_story_class(text)
    return text.lower(), get_model_class(text), {}


def _model_options(cls: type, name: str, options: list[tuple[str, Any]]) -> dict[str, Any]:
    known = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    kwargs = dict(options)
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise UsageError(f"unknown option(s) {', '.join(unknown)} for model {name}; options: {', '.join(known)}")
    return kwargs


def _data_spec(text: str) -> str:
    """What run.json records for ``--data``: a registered data set name (checked), or the absolute
    path of a ``.npy``/``.csv`` file (checked to exist)."""
    if is_data_file(text):
        path = Path(text).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"no data file {path}; pass a registered data set name or an existing "
                                    ".npy/.csv file")
        return str(path)
    dataset_info(text)  # fail early on an unknown name
    return text


def _load_split(data: str, split: str, device: torch.device | None = None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One split of a registered data set, or the whole of a data file (which has only a train split)."""
    if is_data_file(data):
        if split != "train":
            raise UsageError(f"the data file {data} has only a train split; use --split train")
        return torch.as_tensor(read_data_file(data), dtype=dtype, device=device)
    return load_dataset(data, split, device=device, dtype=dtype).x


def _save_samples(model: Any, data: str, n: int, path: Path, seed: int | None) -> Path:
    """Draw ``n`` samples into a PNG: an image grid for image data, a scatter plot for 2-D points."""
    if seed is not None:
        torch.manual_seed(seed)
    samples = draw(model, n)
    info = None if is_data_file(data) else dataset_info(data)
    if info is not None and info.image_shape is not None:
        return plots.image_grid(samples, info.image_shape, path, vmax=(info.num_levels or 2) - 1)
    if samples.shape[1:] == (2,):
        reference = _load_split(data, "train" if info is None else "test")
        return plots.scatter(samples, path, reference=reference)
    raise NoPictureError(f"data {data} have no picture form (images or 2-D points); cannot draw samples")


def _read_run(directory: Path) -> dict[str, Any]:
    path = directory / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory} has no {RUN_FILE}; was it written by 'ppl-dgm fit'?")
    return json.loads(path.read_text())


def _load_model(directory: Path, device: torch.device) -> Any:
    """`io.load` of the checkpoint in ``directory``, after importing the story file that run.json
    records for a user's own class (so that the checkpoint's ``class`` field resolves)."""
    run_path = directory / RUN_FILE
    spec = json.loads(run_path.read_text()).get("model", "") if run_path.is_file() else ""
    if is_story_spec(spec):
        try:
            load_story_class(spec)
        except FileNotFoundError:
            raise FileNotFoundError(f"{directory} was fitted with {spec}, which no longer exists; restore the "
                                    f"file (or correct 'model' in {run_path})") from None
    return io.load(directory, device=device)


def _evaluate(model: Any, data: str, split: str, num_samples: int, batch_size: int | None) -> dict[str, Any]:
    x = _load_split(data, split, device=model.device, dtype=model.dtype)
    start = time.perf_counter()
    result = log_likelihood(model, x, num_samples=num_samples, batch_size=batch_size)
    return {"data": data, "split": split, **result.summary(), "seconds": time.perf_counter() - start}


def cmd_list(args: argparse.Namespace) -> None:
    """``ppl-dgm list``: the registered models and data sets."""
    print("models:")
    for name in list_models():
        paragraph = " ".join((get_model_class(name).__doc__ or "").strip().split("\n\n")[0].split())
        print(f"  {name:<20} {paragraph if len(paragraph) <= 100 else paragraph[:97] + '...'}")
    print("datasets:")
    for name in list_datasets():
        print(f"  {name:<20} {dataset_info(name).description}")


def cmd_fit(args: argparse.Namespace) -> dict[str, Any]:
    """``ppl-dgm fit``: fit a registered model or a story file's class; write checkpoint, metrics, figures."""
    out = Path(args.out)
    device = check_device(args.device)
    data = _data_spec(args.data)
    model_spec, model_class, fixed = _model_class(args.model)
    pyro.set_rng_seed(args.seed)  # the initial weights depend on the seed too
    if args.resume:
        if args.option:
            raise UsageError("--option cannot change a model that is resumed")
        saved = _read_run(out)
        if saved["model"] != model_spec or saved["data"] != data:
            raise UsageError(f"{out} holds a fit of {saved['model']} on {saved['data']}, "
                             f"not {args.model} on {args.data}")
        model = _load_model(out, device)
        options = saved["options"]
    else:
        options = {**_model_options(model_class, args.model, args.option), **fixed}
        if "random_state" in inspect.signature(model_class.__init__).parameters:
            options.setdefault("random_state", args.seed)
        model = model_class(**options).to(device)
    engine = args.engine if args.engine != "auto" else ("em" if isinstance(model, Estimator) else "svi")
    if engine == "em" and not isinstance(model, Estimator):
        raise UsageError(f"model {args.model} has no EM/closed-form fit; use --engine svi")
    train = _load_split(data, "train", device)
    val = None if is_data_file(data) else _load_split(data, "val", device)  # a data file is all training data
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(args, k) for k in ("engine", "epochs", "batch_size", "lr", "objective", "num_particles",
                                               "patience", "seed")}
    run = {"model": model_spec, "data": data, "options": options, "fit": {**settings, "engine": engine},
           "device": str(device)}
    io.atomic_write(out / RUN_FILE, json.dumps(run, indent=2).encode())
    fit_with = _fit_em if engine == "em" else _fit_svi
    metrics = fit_with(model, train, val, args, out)
    scored = "test" if val is not None else "train"  # a data file is scored on its training data, labelled so
    if args.eval_samples:
        metrics[scored] = _evaluate(model, data, scored, args.eval_samples, None)
    io.atomic_write(out / METRICS_FILE, json.dumps(metrics, indent=2).encode())
    try:
        figures = [CURVE_FILE, _save_samples(model, data, 64, out / SAMPLES_FILE, args.seed).name]
    except NoPictureError as error:
        figures = [CURVE_FILE]
        print(f"no {SAMPLES_FILE}: {error}")
    no_val = ", no validation split: no early stopping" if val is None else ""
    line = f"fitted {args.model} on {args.data} ({engine}{no_val}): {metrics['summary']}"
    if scored in metrics:
        score = metrics[scored]
        line += f"; {scored} NLL {score['test_nll_nats']:.2f} ± {score['test_nll_stderr']:.2f} nats ({score['kind']}"
        line += ", on the training data: a data file has no held-out split)" if val is None else ")"
    print(line)
    resumable = f"{io.TRAINER_FILE} (to resume), " if engine == "svi" else ""
    print(f"results in {out}: {io.CONFIG_FILE} + {io.WEIGHTS_FILE} (checkpoint), {resumable}"
          f"{RUN_FILE}, {METRICS_FILE}, {', '.join(figures)}")
    return metrics


def _fit_svi(model: Any, train: torch.Tensor, val: torch.Tensor | None, args: argparse.Namespace, out: Path
             ) -> dict[str, Any]:
    result = fit(model, train, val=val, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                 objective=args.objective, num_particles=args.num_particles,
                 patience=args.patience if val is not None else None, seed=args.seed, device=model.device,
                 progress=not args.no_progress, checkpoint_dir=out, resume=args.resume)
    plots.training_curve(result.train_loss, result.val_loss, out / CURVE_FILE,
                         result.best_epoch if val is not None else None)
    if val is not None:
        summary = (f"best validation loss {result.best_val_loss:.2f} nats at epoch {result.best_epoch} "
                   f"({result.epochs_run} epochs, {result.seconds:.0f} s)")
    else:
        summary = (f"final training loss {result.train_loss[-1]:.2f} nats ({result.epochs_run} epochs, "
                   f"{result.seconds:.0f} s)")
    return {
        "engine": "svi", "train_loss": result.train_loss, "val_loss": result.val_loss,
        "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss, "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early, "fit_seconds": result.seconds, "unit": "nats per example",
        "summary": summary,
    }


def _fit_em(model: Any, train: torch.Tensor, val: torch.Tensor | None, args: argparse.Namespace, out: Path
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
    val_nll = log_likelihood(model, val, num_samples=1).nll if val is not None else None
    plots.training_curve(history, [], out / CURVE_FILE, unit="negative log-likelihood per example (nats)",
                         xlabel="EM iteration")
    summary = f"{len(history)} iterations in {seconds:.1f} s; "
    if val_nll is not None:
        summary += f"validation NLL {val_nll:.2f} nats"
    else:
        summary += f"final training NLL {history[-1]:.2f} nats" if history else "no validation split"
    return {
        "engine": "em", "train_nll_per_iteration": history, "val_nll": val_nll, "fit_seconds": seconds,
        "unit": "nats per example", "summary": summary,
    }


def cmd_evaluate(args: argparse.Namespace) -> None:
    """``ppl-dgm evaluate``: the log-likelihood of a fitted model on one split."""
    directory = Path(args.dir)
    device = check_device(args.device)
    model = _load_model(directory, device)
    data = _data_spec(args.data) if args.data else _read_run(directory)["data"]
    split = args.split or ("train" if is_data_file(data) else "test")
    summary = _evaluate(model, data, split, args.num_samples, args.batch_size)
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
    model = _load_model(directory, check_device(args.device))
    data = _data_spec(args.data) if args.data else _read_run(directory)["data"]
    print(f"wrote {_save_samples(model, data, args.n, Path(args.output), args.seed)}")


def cmd_diagnose(args: argparse.Namespace) -> dict[str, Any]:
    """``ppl-dgm diagnose``: ArviZ diagnostics of a run's global latents (guide draws or NUTS) into
    RUN_DIR/diagnostics/."""
    directory = Path(args.dir)
    target = directory / DIAGNOSTICS_DIR
    if target.exists() and not args.overwrite:
        raise UsageError(f"{target} exists (an earlier diagnose); pass --overwrite to replace it, or move it away")
    device = check_device(args.device)
    model = _load_model(directory, device)
    data = _data_spec(args.data) if args.data else _read_run(directory)["data"]
    x = _load_split(data, args.split, device, model.dtype)
    if not global_latent_sites(model, {X: x}):
        raise UsageError(f"diagnose needs global latent sites (sample sites outside plate '{DATA}', e.g. weights "
                         f"or a rate), and {type(model).__name__} has none; score it with 'ppl-dgm evaluate' instead")
    from ppl_dgm.diagnostics import to_inference_data
    from ppl_dgm.infer.mcmc import nuts

    pyro.set_rng_seed(args.seed)
    if args.nuts:
        result = nuts(model, x, num_samples=args.num_samples, warmup_steps=args.warmup, num_chains=args.chains,
                      seed=args.seed, progress=not args.no_progress)
        with quiet_arviz(python_warnings=False):
            idata = to_inference_data(model, x, result, seed=args.seed)
        source = {"posterior": "nuts", "num_chains": result.num_chains, "num_draws": result.num_draws,
                  "divergences": result.divergences}
    else:
        with quiet_arviz(python_warnings=False):
            idata = to_inference_data(model, x, None, num_draws=args.num_draws, seed=args.seed)
        source = {"posterior": "guide", "num_chains": 1, "num_draws": args.num_draws}
    source.update(data=data, split=args.split)
    staging = directory / f".{DIAGNOSTICS_DIR}.{uuid.uuid4().hex}"  # written whole, then renamed into place
    staging.mkdir()
    try:
        written, report = write_report(idata, staging, source)
        if target.exists():  # --overwrite: replace the earlier folder only now that the new one is complete
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for name in written:
        print(f"wrote {target / name}")
    if args.nuts:
        parts = [f"NUTS, {result.num_chains} chains x {result.num_draws} draws, divergences {sum(result.divergences)}"]
        rhat = report["max_r_hat"]
        parts.append(f"max R-hat {rhat:.3f}" if rhat is not None else "max R-hat n/a (one chain)")
    else:
        parts = [f"guide, {args.num_draws} draws"]
    loo = report.get("loo")
    if loo is not None:
        elpd, se = loo["elpd_loo"], loo["se"]
        parts.insert(0, f"elpd_loo {elpd:.2f} ± {se:.2f}" if elpd is not None and se is not None
                     else "elpd_loo not finite")
        parts.append(f"Pareto k-hat > {KHAT_THRESHOLD} for {loo[f'share_pareto_k_above_{KHAT_THRESHOLD}']:.1%} "
                     f"of {loo['n_data_points']} points")
    else:
        parts.insert(0, "no log-likelihood group: no LOO")
    if report["point_mass"] and not args.nuts:
        parts.append("every guide draw is the same (a point estimate), so LOO and k-hat say little: try --nuts")
    print(f"diagnosed {data} {args.split} ({'; '.join(parts)})")
    return report


def cmd_demo(args: argparse.Namespace) -> None:
    """``ppl-dgm demo``: fit a VAE on the digits and say what to run next."""
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
    p.add_argument("model", help="model name (see 'ppl-dgm list'), or path/to/file.py:ClassName for your own "
                                 "GenerativeModel subclass")
    p.add_argument("--data", required=True, help="dataset name (see 'ppl-dgm list'), or a .npy/.csv file of shape "
                                                 "(N, ...) (all training data: no validation, no early stopping)")
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
                   help="importance samples for the test evaluation written to metrics.json (0: skip; a data "
                        "file is scored on its training data)")
    p.add_argument("--resume", action="store_true", help="continue the fit saved in --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("evaluate", help="test log-likelihood of a fitted model")
    p.add_argument("dir", help="directory written by 'ppl-dgm fit'")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--num-samples", type=_count(1), default=1000, help="importance samples per example")
    p.add_argument("--batch-size", type=_count(1), default=None)
    p.add_argument("--split", choices=["train", "val", "test"], default=None,
                   help="split to score (default: test; train for a data file)")
    p.add_argument("--data", default=None, help="dataset name or .npy/.csv file (default: the one it was fitted on)")
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

    p = sub.add_parser("diagnose", help="ArviZ diagnostics of a fitted model's global latents into DIR/diagnostics")
    p.add_argument("dir", help="directory written by 'ppl-dgm fit'")
    p.add_argument("--nuts", action="store_true", help="sample the posterior with NUTS (default: draws from the "
                                                       "fitted guide)")
    p.add_argument("--num-draws", type=_count(1), default=500, help="guide draws without --nuts (default 500)")
    p.add_argument("--num-samples", type=_count(4), default=500,
                   help="NUTS draws per chain, at least 4 (default 500)")
    p.add_argument("--warmup", type=_count(0), default=500, help="NUTS warm-up steps per chain (default 500)")
    p.add_argument("--chains", type=_count(1), default=2, help="NUTS chains, one after another (default 2)")
    p.add_argument("--data", default=None, help="dataset name or .npy/.csv file (default: the one it was fitted on)")
    p.add_argument("--split", choices=["train", "val", "test"], default="train", help="split (default train)")
    p.add_argument("--seed", type=int, default=0, help="seed of the NUTS chains (seed, seed + 1, ...), the guide "
                                                       "draws and the replicated data (default 0)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier DIR/diagnostics folder")
    p.add_argument("--no-progress", action="store_true", help="hide NUTS's progress bar")
    p.set_defaults(func=cmd_diagnose)

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
