"""``ppl-dgm fit`` and ``ppl-dgm demo``: fit a model, write its run directory."""

from __future__ import annotations

import argparse
import inspect
import json
from pathlib import Path
from typing import Any

import pyro

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
    model_class_of,
    model_options,
    non_negative_float,
    option,
    positive_float,
    read_run,
    save_samples,
    split_data,
)
from ppl_dgm.infer import fit, get_engine_class, list_engines
from ppl_dgm.infer.fitting import engine_options
from ppl_dgm.infer.objectives import OBJECTIVES
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
        model_settings = saved["options"]
    else:
        earlier = [name for name in (RUN_FILE, io.CONFIG_FILE) if (out / name).exists()]
        if earlier and not args.overwrite:
            raise UsageError(f"{out} holds an earlier fit ({', '.join(earlier)}); pass --resume to continue it, "
                             "--overwrite to replace it, or another --out")
        model_settings = {**model_options(model_class, args.model, args.option), **fixed}
        if "random_state" in inspect.signature(model_class.__init__).parameters:
            model_settings.setdefault("random_state", args.seed)
        model = model_class(**model_settings).to(device)
    engine = model.default_engine if args.engine == "auto" else args.engine
    engine_class = get_engine_class(engine)
    train = split_data(model, data, "train", device)
    val = None if is_data_file(data) else split_data(model, data, "val", device)  # a data file: all training data
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(args, k)
                for k in ("epochs", "batch_size", "lr", "weight_decay", "max_grad_norm", "patience")}
    options = {**_svi_shorthands(args, engine), **dict(args.engine_option)}
    run = {"model": model_spec, "data": data, "options": model_settings,
           "fit": {**settings, "engine": engine, "engine_options": options, "seed": args.seed}, "device": str(device)}
    io.atomic_write(out / RUN_FILE, json.dumps(run, indent=2).encode())
    if not engine_class.minibatches:
        settings = {}
    elif val is None:
        settings["patience"] = None
    result = fit(model, train, val=val, engine=engine, seed=args.seed, device=model.device,
                 progress=not args.no_progress, checkpoint_dir=out, resume=args.resume, **settings, **options)
    metrics = _metrics(result)
    plots.training_curve(result.train_loss, result.val_loss, out / CURVE_FILE,
                         result.best_epoch if result.val_loss else None, unit=result.unit or "loss",
                         xlabel="epoch" if engine_class.minibatches else "iteration", extra=_extra_curves(result))
    scored = "test" if val is not None else "train"  # a data file is scored on its training data, labelled so
    if args.eval_samples != 0 and model.capabilities.likelihood != "none":
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
    elif model.capabilities.likelihood == "none":
        line += f"; no likelihood: 'ppl-dgm evaluate {out}' reports sample-quality metrics"
    print(line)
    resumable = f"{io.TRAINER_FILE} (to resume), " if engine_class.minibatches else ""
    print(f"results in {out}: {io.CONFIG_FILE} + {io.WEIGHTS_FILE} (checkpoint), {resumable}"
          f"{RUN_FILE}, {METRICS_FILE}, {', '.join(figures)}")
    return metrics


def _svi_shorthands(args: argparse.Namespace, engine: str) -> dict[str, Any]:
    """``--objective`` and ``--num-particles``, for the engines that take them (SVI and its kin)."""
    given = {k: getattr(args, k) for k in ("objective", "num_particles") if getattr(args, k) is not None}
    if given and not set(given) <= set(engine_options(get_engine_class(engine))):
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise UsageError(f"{flags} set(s) the SVI objective; the {engine!r} engine takes its options as -E KEY=VALUE")
    return given


def _metrics(result: Any) -> dict[str, Any]:
    """metrics.json's record of a fit, with a one-line summary."""
    if result.best_val_loss is not None:
        summary = (f"best validation figure {result.best_val_loss:.4g} ({result.validation_unit}) at epoch "
                   f"{result.best_epoch} "
                   f"({result.epochs_run} epochs, {result.seconds:.0f} s)")
    elif "val_nll" in result.history:
        iterations = "1 iteration" if result.epochs_run == 1 else f"{result.epochs_run} iterations"
        summary = (f"{iterations} in {result.seconds:.1f} s; validation NLL "
                   f"{result.history['val_nll'][-1]:.2f} nats")
    else:
        summary = (f"final training loss {result.train_loss[-1]:.4g} {result.unit} ({result.epochs_run} epochs, "
                   f"{result.seconds:.0f} s)")
    return {
        "engine": result.engine, "unit": result.unit, "validation_unit": result.validation_unit,
        "train_loss": result.train_loss, "val_loss": result.val_loss,
        "history": result.history, "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
        "epochs_run": result.epochs_run, "stopped_early": result.stopped_early, "fit_seconds": result.seconds,
        "summary": summary,
    }


def _extra_curves(result: Any) -> dict[str, list[float]]:
    """The engine's other per-epoch figures (a GAN's two losses, ...), besides the training loss."""
    first = next(iter(result.history), None)
    return {name: values for name, values in result.history.items()
            if name != first and len(values) == len(result.train_loss)}


def cmd_demo(args: argparse.Namespace) -> None:
    """``ppl-dgm demo``: fit a VAE on the digits and say what to run next."""
    print(f"demo: fitting a VAE to the digits (train 1000 / val 350 / test 447) into {args.out}")
    parser = Parser(prog="ppl-dgm")
    add_parsers(parser.add_subparsers(dest="command", parser_class=Parser))
    fit_args = parser.parse_args(["fit", "vae", "--data", "digits", "--out", args.out,
                                          "--device", args.device, *(["--no-progress"] if args.no_progress else []),
                                          *(["--overwrite"] if args.overwrite else [])])
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
    p.add_argument("--engine", choices=["auto", *list_engines()], default="auto",
                   help="fitting engine (default auto: the one the model names, e.g. em for the classical "
                        "estimators, svi for latent-variable stories, adversarial for GANs)")
    p.add_argument("--engine-option", "-E", type=option, action="append", default=[], metavar="KEY=VALUE",
                   help="engine option, e.g. -E n_critic=5 (value parsed as JSON)")
    p.add_argument("--epochs", type=count(1), default=1000, help="maximum number of epochs (default 1000)")
    p.add_argument("--batch-size", type=count(1), default=100)
    p.add_argument("--lr", type=positive_float, default=1e-3, help="learning rate of the engine's optimizer(s)")
    p.add_argument("--weight-decay", type=non_negative_float, default=0.0, help="decoupled weight decay (AdamW)")
    p.add_argument("--max-grad-norm", type=positive_float, default=None, help="clip each step's gradient norm")
    p.add_argument("--objective", choices=list(OBJECTIVES), default=None, help="SVI objective (default elbo)")
    p.add_argument("--num-particles", type=count(1), default=None, help="SVI: samples per example in the objective")
    p.add_argument("--patience", type=count(1), default=50, help="epochs without validation improvement (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--option", "-O", type=option, action="append", default=[], metavar="KEY=VALUE",
                   help="model constructor argument, e.g. -O latent_dim=32 (value parsed as JSON)")
    p.add_argument("--eval-samples", type=count(0), default=None,
                   help="importance samples for the test evaluation written to metrics.json (default: the "
                        "model's evaluation_samples, 1000 for most; 0: skip; a data file is scored on its "
                        "training data)")
    p.add_argument("--resume", action="store_true", help="continue the fit saved in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier fit in --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("demo", help="fit a VAE on the bundled digits and print where the results are")
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --out")
    p.set_defaults(func=cmd_demo)
