"""``ppl-dgm fit`` and ``ppl-dgm demo``: fit a model, write its run directory."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
from collections.abc import Iterator
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
from ppl_dgm.infer import distributed, fit, get_engine_class, list_engines
from ppl_dgm.infer.fitting import engine_options
from ppl_dgm.infer.objectives import OBJECTIVES
from ppl_dgm.user_code import is_data_file
from ppl_dgm.validation import check_device


def cmd_fit(args: argparse.Namespace) -> dict[str, Any]:
    """``ppl-dgm fit``: fit a registered model or a story file's class; write checkpoint, metrics, figures."""
    out = Path(args.out)
    device = distributed.init_from_env(check_device(args.device))  # under torchrun: this rank's device
    data = data_spec(args.data)
    model_spec, model_class, fixed = model_class_of(args.model)
    pyro.set_rng_seed(args.seed)  # the initial weights depend on the seed too
    if args.resume:
        if args.option:
            raise UsageError("--option cannot change a model that is resumed")
        saved = read_run(out, "nothing to resume: drop --resume to start a fit there")
        if saved["model"] != model_spec or saved["data"] != data:
            raise UsageError(f"{out} holds a fit of {saved['model']} on {saved['data']}, "
                             f"not {args.model} on {args.data}")
        model = load_model(out, device)
        model_settings = saved["options"]
    else:
        earlier = [name for name in (RUN_FILE, io.CONFIG_FILE) if (out / name).exists()]
        if earlier == [RUN_FILE] and not args.overwrite:
            raise UsageError(f"{out} holds a fit that stopped before its first checkpoint ({RUN_FILE} only); pass "
                             "--overwrite to start it again, or another --out")
        if earlier and not args.overwrite:
            raise UsageError(f"{out} holds an earlier fit ({', '.join(earlier)}); pass --resume to continue it, "
                             "--overwrite to replace it, or another --out")
        model_settings = {**model_options(model_class, args.model, args.option), **fixed}
        if "random_state" in inspect.signature(model_class.__init__).parameters:
            model_settings.setdefault("random_state", args.seed)
        model = model_class(**model_settings).to(device)
    engine = model.default_engine if args.engine == "auto" else args.engine
    train = split_data(model, data, "train", device)
    val = None if is_data_file(data) else split_data(model, data, "val", device)  # a data file: all training data
    distributed.barrier()  # under torchrun every rank checks --out before rank 0 writes into it
    with _undone_unless_saved(out, args.resume):
        return _fit_into(args, out, model, data, train, val, engine, model_spec, model_settings, device)


@contextlib.contextmanager
def _undone_unless_saved(out: Path, resume: bool) -> Iterator[None]:
    """Run a fit into ``out``; if it fails (an exception, Ctrl-C) before writing a checkpoint, remove what it
    created (run.json, the directory), put back an earlier run's run.json, and say so on the exception
    (``error.outcome``, which `ppl_dgm.cli.main` prints). A fit that wrote a checkpoint stays resumable."""
    missing = [d for d in (out, *out.parents) if not d.exists()]  # the folders the fit will create, innermost first
    run_path, config_path = out / RUN_FILE, out / io.CONFIG_FILE
    earlier_run = run_path.read_bytes() if run_path.is_file() else None
    earlier_checkpoint = _stamp(config_path)
    try:
        yield
    except BaseException as error:
        if not distributed.is_main_process():  # rank 0 alone writes, so it alone cleans up
            raise
        if resume or _stamp(config_path) != earlier_checkpoint:
            error.outcome = f"the last checkpoint in {out} is kept; continue with 'ppl-dgm fit ... --resume'"
            raise
        if earlier_run is not None:
            io.atomic_write(run_path, earlier_run)
        elif run_path.exists():
            run_path.unlink()
        for folder in missing:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        left = "removed again" if missing else "left as it was before the fit"
        error.outcome = f"no checkpoint was written, so {out} is {left}"
        raise


def _stamp(path: Path) -> tuple[int, int] | None:
    """Identity of a file version (inode, modification time); ``None`` when absent. A checkpoint is written
    by atomic replacement, so a new one has a new stamp."""
    if not path.exists():
        return None
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


def _fit_into(args: argparse.Namespace, out: Path, model: Any, data: str, train: Any, val: Any, engine: str,
              model_spec: str, model_settings: dict[str, Any], device: Any) -> dict[str, Any]:
    """The fit proper of `cmd_fit`: run.json, the engine's loop with checkpoints, metrics and figures."""
    engine_class = get_engine_class(engine)
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(args, k)
                for k in ("epochs", "batch_size", "lr", "weight_decay", "max_grad_norm", "patience")}
    options = {**_svi_shorthands(args, engine), **dict(args.engine_option)}
    run = {"model": model_spec, "data": data, "options": model_settings,
           "fit": {**settings, "engine": engine, "engine_options": options, "seed": args.seed}, "device": str(device)}
    if distributed.is_main_process():
        io.atomic_write(out / RUN_FILE, json.dumps(run, indent=2).encode())
    if not engine_class.minibatches:
        ignored = [f"--{k.replace('_', '-')}" for k, v in settings.items() if v != MINIBATCH_DEFAULTS[k]]
        if ignored:
            print(f"note: {', '.join(ignored)} set(s) minibatch fitting, which the {engine} engine does not do; it "
                  "runs until it converges, within the model's own iteration options (e.g. -O max_iter=..., "
                  "-O n_iter=...)")
        settings = {}
    elif val is None:
        settings["patience"] = None
    result = fit(model, train, val=val, engine=engine, seed=args.seed, device=model.device,
                 progress=not args.no_progress, checkpoint_dir=out, checkpoint_every=args.checkpoint_every,
                 resume=args.resume, **settings, **options)
    metrics = _metrics(result)
    if not distributed.is_main_process():  # rank 0 alone writes the metrics and figures and prints the summary
        return metrics
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


MINIBATCH_DEFAULTS = {"epochs": 1000, "batch_size": 100, "lr": 1e-3, "weight_decay": 0.0, "max_grad_norm": None,
                      "patience": 50}
"""The defaults of fit's options for minibatch engines (an engine that does not minibatch ignores them)."""


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
                   f"{result.best_epoch + 1} "  # 1-based, as the progress bar counts
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
        "compile_reason": result.compile_reason, "summary": summary,
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
    p.add_argument("model", help="model name (see 'ppl-dgm list'), or path/to/file.py:Name for your own "
                                 "GenerativeModel subclass or Pyro model function")
    p.add_argument("--data", required=True, help="data set name (see 'ppl-dgm list'), or a .npy/.csv file of shape "
                                                 "(N, ...): all training data, no validation, no early stopping")
    p.add_argument("--out", required=True, help="directory for checkpoint, metrics and figures")
    p.add_argument("--engine", choices=["auto", *list_engines()], default="auto",
                   help="fitting engine; auto: the one the model names (em for gmm, hmm, ppca; adversarial "
                        "for the GANs; denoising for ddpm; contrastive for ebm; svi otherwise) (default auto)")
    p.add_argument("--engine-option", "-E", type=option, action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the engine, e.g. -E n_critic=5; the value is parsed as JSON; unknown "
                        "options are an error that lists the engine's; may be repeated")
    p.add_argument("--epochs", type=count(1), default=MINIBATCH_DEFAULTS["epochs"],
                   help="maximum number of epochs, resumed epochs included (default 1000)")
    p.add_argument("--batch-size", type=count(1), default=MINIBATCH_DEFAULTS["batch_size"],
                   help="rows per step (default 100)")
    p.add_argument("--lr", type=positive_float, default=MINIBATCH_DEFAULTS["lr"],
                   help="learning rate of the engine's optimizer(s) (default 1e-3)")
    p.add_argument("--weight-decay", type=non_negative_float, default=MINIBATCH_DEFAULTS["weight_decay"],
                   help="decoupled weight decay of AdamW (default 0)")
    p.add_argument("--max-grad-norm", type=positive_float, default=MINIBATCH_DEFAULTS["max_grad_norm"],
                   help="clip each step's gradient norm to this (default: no clipping)")
    p.add_argument("--objective", choices=list(OBJECTIVES), default=None,
                   help="SVI's training objective; shorthand for -E objective=... (default elbo)")
    p.add_argument("--num-particles", type=count(1), default=None,
                   help="SVI: samples per example in the objective (default 1 for elbo, 5 otherwise)")
    p.add_argument("--patience", type=count(1), default=MINIBATCH_DEFAULTS["patience"],
                   help="epochs without validation improvement before stopping (default 50)")
    p.add_argument("--checkpoint-every", type=positive_float, default=30.0,
                   help="seconds between checkpoints into --out; one is always written at the end (default 30)")
    p.add_argument("--seed", type=int, default=0, help="seed of everything random in the fit (initial weights, "
                   "shuffling, the guide's draws) and of the sample grid (default 0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    p.add_argument("--option", "-O", type=option, action="append", default=[], metavar="KEY=VALUE",
                   help="model constructor argument, e.g. -O latent_dim=32; the value is parsed as JSON, "
                        "or kept as a string; may be repeated")
    p.add_argument("--eval-samples", type=count(0), default=None,
                   help="importance samples for the test evaluation written to metrics.json; 0 skips it; a "
                        "data file is scored on its training data (default: the model's evaluation_samples, "
                        "1000 for most)")
    p.add_argument("--resume", action="store_true",
                   help="continue the fit saved in --out (weights, the engine's state and the "
                        "history)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier fit in --out; without it, fit refuses to write "
                        "over one")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("demo", help="fit a VAE on the bundled digits and print where the results are")
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo in --out")
    p.set_defaults(func=cmd_demo)
