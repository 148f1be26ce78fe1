"""A user's own story and data named on the command line: ``path/to/file.py:ClassName`` and ``.npy``/``.csv`` files."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import re
import sys
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np

from ppl_dgm.core import GenerativeModel
from ppl_dgm.story import Story

MODULE_PREFIX = "ppl_dgm_story_"
"""Prefix of the module name a story file is imported under (see `module_name`)."""
DATA_SUFFIXES = (".npy", ".csv")
"""Suffixes that make ``--data`` a file rather than a registered data set name."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# ----------------------------------------------------------------------------- stories


def is_story_spec(text: str) -> bool:
    """True when ``text`` names a file (``path/to/file.py:ClassName``) rather than a registered model.

    Registered model names contain neither a colon nor a ``.py`` suffix.
    """
    return ":" in text or text.lower().endswith(".py")


def parse_story_spec(text: str) -> tuple[Path, str]:
    """Split ``path/to/file.py:ClassName`` into the file's absolute, resolved path and the class name.

    Raises:
        ValueError: ``text`` is not of that form.
    """
    path_text, sep, qualname = text.rpartition(":")
    if not sep:
        raise ValueError(f"name the class after the file: {text}:ClassName")
    if not path_text.lower().endswith(".py"):
        raise ValueError(f"expected path/to/file.py:ClassName, got {text!r}")
    if not qualname or not all(part.isidentifier() for part in qualname.split(".")):
        raise ValueError(f"{qualname!r} is not a class name; expected path/to/file.py:ClassName, got {text!r}")
    return Path(path_text).expanduser().resolve(), qualname


def module_name(path: str | Path) -> str:
    """The module name a story file is imported under: the same for the same absolute path in every
    process, so that a checkpoint's ``class`` field (``module:qualname``) resolves after `import_story_file`."""
    path = Path(path).expanduser().resolve()
    stem = re.sub(r"\W", "_", path.stem)
    return f"{MODULE_PREFIX}{stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"


def import_story_file(path: str | Path) -> ModuleType:
    """Import the Python file ``path`` (and nothing else; ``sys.path`` is left alone) as `module_name`.

    A file already imported under that name in this process is not executed again.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file raised while being imported (syntax error, failed import, ...); the
            message names the file and the error in one line.
    """
    path = Path(path).expanduser().resolve()
    name = module_name(path)
    if name in sys.modules:
        return sys.modules[name]
    if not path.is_file():
        raise FileNotFoundError(f"no story file {path}; pass an existing path/to/file.py:ClassName")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {path}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses, typing and pickle look the module up while it runs
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as error:
        sys.modules.pop(name, None)
        raise ValueError(f"cannot import {path}: {type(error).__name__}: {_one_line(error)} "
                         f"(run 'python {path}' to see the traceback)") from None
    return module


def load_story_class(spec: str) -> tuple[str, type[GenerativeModel], dict[str, str]]:
    """Import the file of ``spec`` (``path/to/file.py:Name``) and return the canonical spec (absolute
    path), the class, and the constructor arguments the spec fixes.

    ``Name`` is a `GenerativeModel` subclass, or a plain Pyro model function, which is wrapped by
    `ppl_dgm.story` (the class `Story`, with ``model_fn`` fixed; its other arguments come as options).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: bad spec, the file fails to import, or it has no such class.
        TypeError: the object is not a `GenerativeModel` subclass.
    """
    path, qualname = parse_story_spec(spec)
    module = import_story_file(path)
    obj: object = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if obj is None:
        found = sorted(key for key, value in vars(module).items() if isinstance(value, type)
                       and issubclass(value, GenerativeModel) and value is not GenerativeModel)
        hint = f"GenerativeModel classes there: {', '.join(found)}" if found else "it defines no GenerativeModel class"
        raise ValueError(f"{path} has no class {qualname!r}; {hint}")
    if inspect.isfunction(obj):
        return f"{path}:{qualname}", Story, {"model_fn": f"{module.__name__}:{qualname}"}
    if not (isinstance(obj, type) and issubclass(obj, GenerativeModel)) or obj is GenerativeModel:
        raise TypeError(f"{path}:{qualname} is neither a subclass of ppl_dgm.GenerativeModel nor a Pyro model "
                        "function; write the story as class MyStory(GenerativeModel) with a model() method, or as "
                        "a function")
    return f"{path}:{qualname}", obj, {}


# ----------------------------------------------------------------------------- data files


def is_data_file(text: str) -> bool:
    """True when ``text`` names a data file (suffix ``.npy`` or ``.csv``) rather than a registered data set."""
    return Path(text).suffix.lower() in DATA_SUFFIXES


def read_data_file(path: str | Path) -> np.ndarray:
    """The examples in a ``.npy`` file (any numeric array ``(N, ...)``, no pickles) or a ``.csv``
    file (comma-separated numbers, one example per row, an optional header line): float64 ``(N, ...)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not numeric, no rows, or NaN/inf values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no data file {path}; pass a registered data set name or an existing .npy/.csv file")
    if path.suffix.lower() == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise ValueError(f"cannot read {path} as a NumPy array: {_one_line(error)}") from None
        if not isinstance(array, np.ndarray) or not (np.issubdtype(array.dtype, np.number)
                                                     or array.dtype == np.bool_):
            raise ValueError(f"{path} must hold a numeric array of shape (N, ...), got dtype {array.dtype}")
    else:
        array = _read_csv(path)
    if array.ndim == 0 or array.shape[0] == 0:
        raise ValueError(f"{path} holds no examples (shape {array.shape}); expected shape (N, ...)")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{path} holds {int((~np.isfinite(array)).sum())} NaN or infinite values; remove them")
    return array


def _read_csv(path: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns on an empty file; the caller says it has no rows
        for skip in (0, 1):  # an optional header line
            try:
                return np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2, skiprows=skip)
            except ValueError:
                continue
    raise ValueError(f"cannot read {path}: expected comma-separated numbers, one example per row "
                     "(an optional header line)")
