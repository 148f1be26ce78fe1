"""Checkpoints: safetensors weights + JSON configuration, written atomically, loaded without pickle."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as dump_safetensors

from ppl_dgm.core import GenerativeModel
from ppl_dgm.lazy import check_recreatable
from ppl_dgm.models.registry import get_model_class

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TRAINER_FILE = "trainer.safetensors"
FORMAT = "ppl_dgm.checkpoint/1"


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: never half-written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as open() would create it (mkstemp makes it private)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    return path.read_bytes()


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save(model: GenerativeModel, path: str | Path, *, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Save ``model`` into directory ``path`` (created): ``config.json`` + ``model.safetensors``.

    ``state_dict`` saves those weights instead of the model's current ones. The weights
    record the hash of the configuration they belong to; `load` checks it.
    """
    if not isinstance(model, GenerativeModel):
        raise TypeError(f"save needs a GenerativeModel, got {type(model).__name__}")
    check_recreatable(model)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cls = type(model)
    config = {
        "format": FORMAT,
        "model": getattr(cls, "registry_name", None),
        "class": f"{cls.__module__}:{cls.__qualname__}",
        "config": model.config,
    }
    try:
        config_bytes = json.dumps(config, indent=2, sort_keys=True).encode()
    except TypeError as error:
        raise TypeError(f"the constructor arguments of {cls.__name__} must be JSON-serializable: {error}") from None
    weights = dump_safetensors(_tensors(state_dict or model.state_dict()),
                               metadata={"config_sha256": _sha256(config_bytes)})
    atomic_write(path / CONFIG_FILE, config_bytes)
    atomic_write(path / WEIGHTS_FILE, weights)
    return path


def _resolve_class(config: dict[str, Any]) -> type:
    if config.get("model"):
        return get_model_class(config["model"])
    module_name, _, qualname = str(config.get("class", "")).partition(":")
    module = sys.modules.get(module_name)
    if module is None:
        raise ValueError(
            f"the checkpoint holds {config.get('class')!r}, which is not registered; import its "
            "module (or decorate the class with @ppl_dgm.register_model) before loading"
        )
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if obj is None:
        raise ValueError(f"{qualname!r} is not defined in module {module_name!r}; register the class with "
                         "@ppl_dgm.register_model to load it from any program")
    if not (isinstance(obj, type) and issubclass(obj, GenerativeModel)):
        raise ValueError(f"{config.get('class')!r} is not a GenerativeModel")
    return obj


def _metadata(data: bytes) -> dict[str, str]:
    """The string metadata in the header of a serialized safetensors file."""
    header_size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + header_size]).get("__metadata__", {})


def _read_weights(path: Path, config_bytes: bytes) -> dict[str, torch.Tensor]:
    data = _read(path / WEIGHTS_FILE, "weights file")
    if _metadata(data).get("config_sha256") != _sha256(config_bytes):
        raise ValueError(f"{path}: {WEIGHTS_FILE} was not saved with this {CONFIG_FILE}")
    return load_safetensors(data)


def load_config(path: str | Path) -> dict[str, Any]:
    """The JSON configuration of the checkpoint in directory ``path``."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint directory at {path}")
    config = json.loads(_read(path / CONFIG_FILE, "checkpoint configuration"))
    if config.get("format") != FORMAT:
        raise ValueError(f"{path / CONFIG_FILE} is not a ppl_dgm checkpoint (format {config.get('format')!r})")
    return config


def load(path: str | Path, *, device: str | torch.device | None = None) -> GenerativeModel:
    """Rebuild the model saved in directory ``path`` (by `save` or ``ppl-dgm fit``).

    The class comes from the model registry (or, for unregistered classes, from a module
    already imported); its outputs are identical to the saved model's. Nothing is unpickled.
    """
    config = load_config(path)
    model = _resolve_class(config)(**config["config"])
    load_weights(model, path)
    model.eval()
    return model.to(device) if device is not None else model


def load_weights(model: GenerativeModel, path: str | Path) -> None:
    """Load the weights saved in directory ``path`` into ``model`` (same configuration)."""
    path = Path(path)
    config_bytes = _read(path / CONFIG_FILE, "checkpoint configuration")
    saved = json.loads(config_bytes)["config"]
    if json.loads(json.dumps(model.config)) != saved:
        raise ValueError(f"{path} holds a model built with {saved}, not {model.config}")
    weights = _read_weights(path, config_bytes)
    floating = [t.dtype for t in weights.values() if t.is_floating_point()]
    if floating and model.dtype != floating[0]:
        model.to(floating[0])  # a model saved in float64 comes back in float64
    model.load_state_dict(weights)


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` as JSON, its tensors moved into ``tensors`` (under their path) and referenced by name.
    Dicts are kept as lists of (key, value) pairs, so integer keys (an optimizer's) come back as integers."""
    if isinstance(value, torch.Tensor):
        name = str(len(tensors))
        tensors[name] = value
        return {"tensor": name}
    if isinstance(value, dict):
        return {"dict": [[key, _encode(item, tensors)] for key, item in value.items()]}
    if isinstance(value, (list, tuple)):
        return {"list": [_encode(item, tensors) for item in value], "tuple": isinstance(value, tuple)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise TypeError(f"an engine's state may hold tensors, numbers, strings, None, lists and dicts, not "
                    f"{type(value).__name__}")


def _decode(value: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Any:
    if "tensor" in value:
        return tensors[value["tensor"]]
    if "dict" in value:
        return {key: _decode(item, tensors) for key, item in value["dict"]}
    if "list" in value:
        items = [_decode(item, tensors) for item in value["list"]]
        return tuple(items) if value["tuple"] else items
    return value["value"]


def save_training_state(path: str | Path, engine: str, state: dict[str, Any], history: dict[str, Any]) -> None:
    """Save an engine's ``state_dict()`` (as is: optimizers, EMA weights, a replay buffer, ...) and the
    fit's history beside the weights in ``path``."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    meta = {
        "engine": engine,
        "state": _encode(state, tensors),
        "history": history,
        "weights_sha256": _sha256(_read(path / WEIGHTS_FILE, "weights file")),
    }
    atomic_write(path / TRAINER_FILE, dump_safetensors(_tensors(tensors), metadata={"json": json.dumps(meta)}))


def load_training_state(path: str | Path, engine: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The engine state and the history saved in ``path`` by `save_training_state`.

    Raises:
        ValueError: the state belongs to other weights or to another engine.
    """
    path = Path(path)
    data = _read(path / TRAINER_FILE, "training state (was the run saved by fit with a checkpoint_dir?)")
    meta = json.loads(_metadata(data)["json"])
    if meta["weights_sha256"] != _sha256(_read(path / WEIGHTS_FILE, "weights file")):
        raise ValueError(f"{path}: the training state belongs to other weights; start a new fit instead of resuming")
    if meta.get("engine") != engine:
        raise ValueError(f"{path} holds the state of the {meta.get('engine')!r} engine, not {engine!r}; resume with "
                         f"engine={meta.get('engine')!r} or start a new fit")
    return _decode(meta["state"], load_safetensors(data)), meta["history"]
