"""``ppl-dgm fit`` and ``ppl-dgm demo``: fit a model, write its run directory."""

from __future__ import annotations

import argparse
import inspect
import json
import time
from pathlib import Path
from typing import Any

import pyro
import torch

from ppl_dgm import io, plots
from ppl_dgm.cli.common import (
    CURVE_FILE,
    METRICS_FILE,
    RUN_FILE,
    SAMPLES_FILE,
    NoPictureError,
    Parser,
    UsageError,
    count,
    data_spec,
    evaluate_split,
    load_model,
    load_split,
    model_class_of,
    model_options,
    non_negative_float,
    option,
    positive_float,
    read_run,
    save_samples,
)
from ppl_dgm.evaluation import log_likelihood
from ppl_dgm.evaluation.dequantization import needs_dequantization
from ppl_dgm.infer import fit
from ppl_dgm.user_code import is_data_file
from ppl_dgm.validation import check_device


def cmd_fit(args: argparse.Namespace) -> dict[str, Any]:
    """``ppl-dgm fit``: fit a registered model or a story file's class; write checkpoint, metrics, figures."""
    out = Path(args.out)
    device = check_device(args.device)
    data = data_spec(args.data)
    model_spec, model_class, fixed = model_class_of(args.model)
    pyro.set_rng_seed(args.seed)  # the initial weights depend on the seed too
    if args.resume:
        if args.option:
            raise UsageError("--option cannot change a model that is resumed")
        saved = read_run(out)
        if saved["model"] != model_spec or saved["data"] != data:
            raise UsageError(f"{out} holds a fit of {saved['model']} on {saved['data']}, "
                             f"not {args.model} on {args.data}")
        model = load_model(out, device)
        options = saved["options"]
    else:
        options = {**model_options(model_class, args.model, args.option), **fixed}
        if "random_state" in inspect.signature(model_class.__init__).parameters:
            options.setdefault("random_state", args.seed)
        model = model_class(**options).to(device)
    has_own_fit = callable(getattr(model, "fit_data", None))  # an estimator's EM or closed-form fit
    engine = args.engine if args.engine != "auto" else ("em" if has_own_fit else "svi")
    if engine == "em" and not has_own_fit:
        raise UsageError(f"model {args.model} has no EM/closed-form fit; use --engine svi")
    train = load_split(data, "train", device)
    val = None if is_data_file(data) else load_split(data, "val", device)  # a data file is all training data
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(args, k) for k in ("engine", "epochs", "batch_size", "lr", "weight_decay",
                                               "max_grad_norm", "objective", "num_particles", "patience", "seed")}
    run = {"model": model_spec, "data": data, "options": options, "fit": {**settings, "engine": engine},
           "device": str(device)}
    io.atomic_write(out / RUN_FILE, json.dumps(run, indent=2).encode())
    fit_with = _fit_em if engine == "em" else _fit_svi
    metrics = fit_with(model, train, val, args, out)
    scored = "test" if val is not None else "train"  # a data file is scored on its training data, labelled so
    if args.eval_samples:
        metrics[scored] = evaluate_split(model, data, scored, args.eval_samples, None)
    io.atomic_write(out / METRICS_FILE, json.dumps(metrics, indent=2).encode())
    try:
        figures = [CURVE_FILE, save_samples(model, data, 64, out / SAMPLES_FILE, args.seed).name]
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
                 weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm,
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


def cmd_demo(args: argparse.Namespace) -> None:
    """``ppl-dgm demo``: fit a VAE on the digits and say what to run next."""
    print(f"demo: fitting a VAE to the digits (train 1000 / val 350 / test 447) into {args.out}")
    parser = Parser(prog="ppl-dgm")
    add_parsers(parser.add_subparsers(dest="command", parser_class=Parser))
    fit_args = parser.parse_args(["fit", "vae", "--data", "digits", "--out", args.out,
                                          "--device", args.device, *(["--no-progress"] if args.no_progress else [])])
    cmd_fit(fit_args)
    print(f"next: ppl-dgm evaluate {args.out}   |   ppl-dgm sample {args.out} -n 64 -o more_samples.png")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The ``fit`` and ``demo`` subcommands."""
    p = sub.add_parser("fit", help="fit a model to a dataset and write results into a directory")
    p.add_argument("model", help="model name (see 'ppl-dgm list'), or path/to/file.py:ClassName for your own "
                                 "GenerativeModel subclass")
    p.add_argument("--data", required=True, help="dataset name (see 'ppl-dgm list'), or a .npy/.csv file of shape "
                                                 "(N, ...) (all training data: no validation, no early stopping)")
    p.add_argument("--out", required=True, help="directory for checkpoint, metrics and figures")
    p.add_argument("--engine", choices=["auto", "em", "svi"], default="auto",
                   help="em: the estimator's own EM/closed-form fit; svi: ppl_dgm.fit (default: em where the "
                        "model has one)")
    p.add_argument("--epochs", type=count(1), default=1000, help="maximum number of epochs (default 1000)")
    p.add_argument("--batch-size", type=count(1), default=100)
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate")
    p.add_argument("--weight-decay", type=non_negative_float, default=0.0, help="decoupled weight decay (AdamW)")
    p.add_argument("--max-grad-norm", type=positive_float, default=None, help="clip each step's gradient norm")
    p.add_argument("--objective", choices=["elbo", "iwae", "renyi"], default="elbo")
    p.add_argument("--num-particles", type=count(1), default=None, help="samples per example in the objective")
    p.add_argument("--patience", type=count(1), default=50, help="epochs without validation improvement (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--option", "-O", type=option, action="append", default=[], metavar="KEY=VALUE",
                   help="model constructor argument, e.g. -O latent_dim=32 (value parsed as JSON)")
    p.add_argument("--eval-samples", type=count(0), default=1000,
                   help="importance samples for the test evaluation written to metrics.json (0: skip; a data "
                        "file is scored on its training data)")
    p.add_argument("--resume", action="store_true", help="continue the fit saved in --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("demo", help="fit a VAE on the bundled digits and print where the results are")
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)
