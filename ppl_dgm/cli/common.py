"""What the ``ppl-dgm`` commands share: run-directory files, argument types, loading data and runs."""

from __future__ import annotations

import argparse
import inspect
import json
import site
import sysconfig
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

import torch

import ppl_dgm
from ppl_dgm import io, plots
from ppl_dgm.core import draw
from ppl_dgm.datasets import dataset_info, load_dataset
from ppl_dgm.evaluation import log_likelihood
from ppl_dgm.models import get_model_class
from ppl_dgm.user_code import is_data_file, is_story_spec, load_story_class, read_data_file

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
CURVE_FILE = "curve.png"
SAMPLES_FILE = "samples.png"
DIAGNOSTICS_DIR = "diagnostics"


class UsageError(ValueError):
    """A mistake in the command line, reported in one line with exit status 2."""


class NoPictureError(UsageError):
    """The data have no picture form (images or 2-D points), so samples cannot be drawn as a PNG."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def user_frame(error: BaseException) -> str:
    """`` (raised at FILE:LINE)`` when the error comes from the user's own code (a story file), not from
    ppl_dgm, Python or an installed package, so that a bare message such as ``'NoneType' object is not
    subscriptable`` says where to look."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return ""
    filename = Path(frames[-1].filename).resolve()
    library = (Path(ppl_dgm.__file__).resolve().parent, Path(sysconfig.get_paths()["stdlib"]).resolve(),
               *(Path(p).resolve() for p in site.getsitepackages()))
    if filename.name.startswith("<") or any(filename.is_relative_to(root) for root in library):
        return ""
    return f" (raised at {filename}:{frames[-1].lineno})"


def count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def positive_float(text: str) -> float:
    value = _float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text}")
    return value


def option(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def model_class_of(text: str) -> tuple[str, type, dict[str, Any]]:
    """The spec recorded in run.json (a registered name, or ``/abs/path/file.py:Name``), the class, and
    the constructor arguments the spec fixes (a plain model function's ``model_fn``)."""
    if is_story_spec(text):
        return load_story_class(text)
    return text.lower(), get_model_class(text), {}


def model_options(cls: type, name: str, options: list[tuple[str, Any]]) -> dict[str, Any]:
    known = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    kwargs = dict(options)
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise UsageError(f"unknown option(s) {', '.join(unknown)} for model {name}; options: {', '.join(known)}")
    return kwargs


def data_spec(text: str) -> str:
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


def load_split(data: str, split: str, device: torch.device | None = None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One split of a registered data set, or the whole of a data file (which has only a train split)."""
    if is_data_file(data):
        if split != "train":
            raise UsageError(f"the data file {data} has only a train split; use --split train")
        return torch.as_tensor(read_data_file(data), dtype=dtype, device=device)
    return load_dataset(data, split, device=device, dtype=dtype).x


def split_data(model: Any, data: str, split: str, device: torch.device | None = None,
               dtype: torch.dtype = torch.float32) -> Any:
    """A split's ``x``, with its labels as context ``y`` for a conditional model (``{"x": x, "y": labels}``)."""
    x = load_split(data, split, device, dtype)
    if not model.capabilities.conditional:
        return x
    labels = None if is_data_file(data) else load_dataset(data, split, device=device).y
    if labels is None:
        raise UsageError(f"{type(model).__name__} is conditional on labels, and {data} has none; pick a labelled "
                         "data set (e.g. digits)")
    return {"x": x, "y": labels}


NUM_DIGIT_CLASSES = 10
"""Labels a conditional model is asked for in sample grids (the digits' classes)."""


def save_samples(model: Any, data: str, n: int, path: Path, seed: int | None) -> Path:
    """Draw ``n`` samples into a PNG: an image grid for image data, a scatter plot for 2-D points."""
    info = None if is_data_file(data) else dataset_info(data)
    image = info is not None and info.image_shape is not None
    reference = None if image else load_split(data, "train" if info is None else "test")
    if reference is not None and reference.shape[1:] != (2,):  # known before drawing: a model may not draw alone
        raise NoPictureError(f"data {data} have no picture form (images or 2-D points); cannot draw samples")
    if seed is not None:
        torch.manual_seed(seed)
    context = {}
    if model.capabilities.conditional:  # a label-conditional model draws the labels in turn: 0, 1, ..., 9, 0, ...
        context["y"] = torch.arange(n, device=model.device) % NUM_DIGIT_CLASSES
    samples = draw(model, n, **context)
    if image:
        return plots.image_grid(samples, info.image_shape, path, vmax=(info.num_levels or 2) - 1)
    return plots.scatter(samples, path, reference=reference)


def read_run(directory: Path, what_to_do: str) -> dict[str, Any]:
    """The run.json of ``directory``; a `UsageError` ending in ``what_to_do`` when there is none."""
    path = directory / RUN_FILE
    if not path.is_file():
        raise UsageError(f"{directory} has no {RUN_FILE} (not written by 'ppl-dgm fit'); {what_to_do}")
    return json.loads(path.read_text())


def run_data(directory: Path, data: str | None) -> str:
    """What a command on the run in ``directory`` reads: ``--data`` when given (checked), else the data
    the run was fitted on."""
    return data_spec(data) if data else read_run(directory, "pass --data to name its data")["data"]


def scored_split(data: str, split: str | None) -> str:
    """``--split`` when given, else ``test`` (``train`` for a data file, which has no other split)."""
    return split or ("train" if is_data_file(data) else "test")


def check_run_dir(directory: Path) -> None:
    """Raise `UsageError` (one line, with what to do) unless ``directory`` holds a checkpoint: it is missing,
    is not a run, or holds a fit that stopped before its first checkpoint."""
    if not directory.is_dir():
        raise UsageError(f"no checkpoint directory {directory}; pass a directory written by 'ppl-dgm fit --out DIR' "
                         "(or by ppl_dgm.save)")
    if (directory / io.CONFIG_FILE).is_file():
        return
    if (directory / RUN_FILE).is_file():
        raise UsageError(f"{directory} holds a fit that stopped before its first checkpoint ({RUN_FILE} only, no "
                         f"{io.CONFIG_FILE}); fit it again with 'ppl-dgm fit ... --out {directory} --overwrite'")
    raise UsageError(f"{directory} is not a run (no {io.CONFIG_FILE} or {RUN_FILE}); pass a directory written by "
                     "'ppl-dgm fit --out DIR' (or by ppl_dgm.save)")


def load_model(directory: Path, device: torch.device) -> Any:
    """`io.load` of the checkpoint in ``directory`` (checked by `check_run_dir`), after importing the story
    file that run.json records for a user's own class (so that the checkpoint's ``class`` field resolves)."""
    check_run_dir(directory)
    run_path = directory / RUN_FILE
    spec = json.loads(run_path.read_text()).get("model", "") if run_path.is_file() else ""
    if is_story_spec(spec):
        try:
            load_story_class(spec)
        except FileNotFoundError:
            raise FileNotFoundError(f"{directory} was fitted with {spec}, which no longer exists; restore the "
                                    f"file (or correct 'model' in {run_path})") from None
    return io.load(directory, device=device)


def evaluate_split(model: Any, data: str, split: str, num_samples: int | None, batch_size: int | None
                   ) -> dict[str, Any]:
    x = split_data(model, data, split, device=model.device, dtype=model.dtype)
    start = time.perf_counter()
    result = log_likelihood(model, x, num_samples=num_samples, batch_size=batch_size)
    return {"data": data, "split": split, **result.summary(), "seconds": time.perf_counter() - start}
