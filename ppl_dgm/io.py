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
    weights = _dump(_tensors(state_dict or model.state_dict()), {"config_sha256": _sha256(config_bytes)})
    atomic_write(path / CONFIG_FILE, config_bytes)
    atomic_write(path / WEIGHTS_FILE, weights)
    return path


def _resolve_class(config: dict[str, Any], path: Path) -> type:
    """The class named by a checkpoint's configuration: from the registry or an already imported module; a
    module named there is never imported (that would run code chosen by whoever wrote the file)."""
    module_name, _, qualname = str(config.get("class", "")).partition(":")
    if config.get("model"):
        try:
            return get_model_class(config["model"])
        except ValueError as error:
            if module_name in sys.modules or not module_name:
                raise ValueError(f"{path / CONFIG_FILE}: {error}") from None
            raise ValueError(f"{path / CONFIG_FILE} names model {config['model']!r}, which is not registered in "
                             f"this program; import {module_name!r} (the module that registers it) before "
                             "loading") from None
    module = sys.modules.get(module_name)
    if module is None:
        raise ValueError(
            f"{path / CONFIG_FILE} holds {config.get('class')!r}, which is not registered; import {module_name!r} "
            "(or decorate the class with @ppl_dgm.register_model) before loading"
        )
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if obj is None:
        raise ValueError(f"{qualname!r} is not defined in module {module_name!r}; register the class with "
                         "@ppl_dgm.register_model to load it from any program")
    if not (isinstance(obj, type) and issubclass(obj, GenerativeModel)):
        raise ValueError(f"{path / CONFIG_FILE}: {config.get('class')!r} is not a GenerativeModel; point at a "
                         "ppl_dgm checkpoint")
    return obj


def _dump(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """``tensors`` (on the CPU) as safetensors bytes whose metadata also holds their `_digest` (checked at load)."""
    return dump_safetensors(tensors, metadata={**metadata, "data_sha256": _digest(tensors)})


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of the tensors by name: each one's name, dtype, shape and raw bytes."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _header_size(data: bytes) -> int:
    return int.from_bytes(data[:8], "little")


_PICKLE_HINT = ("it is a pickle (torch.save) file, which ppl_dgm never loads because unpickling runs code; re-save "
                "the model with ppl_dgm.save from the program that made it")


def _parse(path: Path, data: bytes) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The metadata and the tensors of the safetensors file ``path`` (its bytes ``data``), or a ValueError
    naming the file: a pickle, a truncated, garbled or tampered file is refused before any tensor is used."""
    looks_like_pickle = data[:2] in (b"PK", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
    if looks_like_pickle and data[8:9] != b"{":  # a safetensors header (its JSON at byte 8) may begin 80 02 too
        raise ValueError(f"{path} is not a safetensors file: {_PICKLE_HINT}")
    size = _header_size(data) if len(data) >= 8 else -1
    try:
        if not 0 < size <= len(data) - 8:
            raise ValueError("its header is cut short")
        metadata = json.loads(data[8 : 8 + size].decode("utf-8")).get("__metadata__") or {}
        tensors = load_safetensors(data)
    except Exception as error:  # json's, utf-8's and safetensors' own SafetensorError
        raise ValueError(f"{path} is truncated or garbled ({type(error).__name__}: {str(error)[:80]}); re-save the "
                         "checkpoint or restore it from a copy") from None
    checksum = metadata.get("data_sha256")
    if checksum is not None and checksum != _digest(tensors):
        raise ValueError(f"{path}: the tensor data does not match the checksum saved with it (the file was changed "
                         "after it was written); re-save the checkpoint or restore it from a copy")
    return metadata, tensors


def _read_safetensors(path: Path, what: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    if not path.is_file():
        strays = sorted(p.name for p in path.parent.glob("*") if p.suffix in (".pt", ".pth", ".pkl", ".bin", ".ckpt"))
        if strays:
            raise FileNotFoundError(f"no {what} at {path}; {', '.join(strays)} cannot stand in for it: "
                                    f"{_PICKLE_HINT}")
        raise FileNotFoundError(f"no {what} at {path}")
    return _parse(path, path.read_bytes())


def _read_weights(path: Path, config_bytes: bytes) -> dict[str, torch.Tensor]:
    metadata, tensors = _read_safetensors(path / WEIGHTS_FILE, "weights file")
    if metadata.get("config_sha256") != _sha256(config_bytes):
        raise ValueError(f"{path / WEIGHTS_FILE} was not saved with this {CONFIG_FILE}; save the model again with "
                         "ppl_dgm.save")
    return tensors


def _read_config(path: Path) -> tuple[bytes, dict[str, Any]]:
    data = _read(path / CONFIG_FILE, "checkpoint configuration")
    try:
        config = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path / CONFIG_FILE} is not valid JSON ({str(error)[:80]}); re-save the checkpoint or "
                         "restore the file from a copy") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT or not isinstance(config.get("config"), dict):
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"{path / CONFIG_FILE} is not a ppl_dgm checkpoint configuration (format {found!r}); "
                         "point at a directory written by ppl_dgm.save or ppl-dgm fit")
    return data, config


def load_config(path: str | Path) -> dict[str, Any]:
    """The JSON configuration of the checkpoint in directory ``path``."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint directory at {path}")
    return _read_config(path)[1]


def load(path: str | Path, *, device: str | torch.device | None = None) -> GenerativeModel:
    """Rebuild the model saved in directory ``path`` (by `save` or ``ppl-dgm fit``).

    The class comes from the model registry (or, for unregistered classes, from a module
    already imported); its outputs are identical to the saved model's. Nothing is unpickled.
    """
    config = load_config(path)
    model = _resolve_class(config, Path(path))(**config["config"])
    load_weights(model, path)
    model.eval()
    return model.to(device) if device is not None else model


def load_weights(model: GenerativeModel, path: str | Path) -> None:
    """Load the weights saved in directory ``path`` into ``model`` (same configuration)."""
    path = Path(path)
    config_bytes, config = _read_config(path)
    saved, current = config["config"], json.loads(json.dumps(model.config))
    # arguments added to the class since the checkpoint was written (at their defaults) are not a mismatch
    if {key: current.get(key) for key in saved} != saved:
        raise ValueError(f"{path} holds a model built with {saved}, not {model.config}; build the model with the "
                         "checkpoint's arguments (or use ppl_dgm.load)")
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


def save_training_state(path: str | Path, engine: str, state: dict[str, Any], history: dict[str, Any],
                        weights: dict[str, torch.Tensor] | None = None) -> None:
    """Save an engine's ``state_dict()`` (as is: optimizers, EMA weights, a replay buffer, ...) and the
    fit's history in ``path``/trainer.safetensors.

    With ``weights`` (the model's state dict of the same snapshot) the file is a whole resume point on its
    own: one atomic write, so a kill at any moment leaves the previous or the next snapshot, never a mix.
    Without, it is tied by hash to the model.safetensors already in ``path``.
    """
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"engine": engine, "state": _encode(state, tensors), "history": history}
    if weights is None:
        meta["weights_sha256"] = _sha256(_read(path / WEIGHTS_FILE, "weights file"))
    else:
        meta["weights"] = _encode(dict(weights), tensors)
    atomic_write(path / TRAINER_FILE, _dump(_tensors(tensors), {"json": json.dumps(meta)}))


def load_training_state(path: str | Path, engine: str, model: torch.nn.Module | None = None
                        ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The engine state and the history saved in ``path`` by `save_training_state`; with ``model``, the
    weights of the same snapshot are loaded into it (from the trainer file if it holds them, else from
    model.safetensors).

    Raises:
        ValueError: the file is damaged, or the state belongs to other weights or to another engine.
    """
    path = Path(path)
    file = path / TRAINER_FILE
    metadata, tensors = _read_safetensors(file, "training state (was the run saved by fit with a checkpoint_dir?)")
    try:
        meta = json.loads(metadata["json"])
    except (KeyError, ValueError):
        raise ValueError(f"{file} holds no training state; start a new fit instead of resuming") from None
    if meta.get("engine") != engine:
        raise ValueError(f"{path} holds the state of the {meta.get('engine')!r} engine, not {engine!r}; resume with "
                         f"engine={meta.get('engine')!r} or start a new fit")
    if "weights" in meta:
        if model is not None:
            model.load_state_dict(_decode(meta["weights"], tensors))
    else:
        if meta.get("weights_sha256") != _sha256(_read(path / WEIGHTS_FILE, "weights file")):
            raise ValueError(f"{path}: the training state belongs to other weights; start a new fit instead of "
                             "resuming")
        if model is not None:
            load_weights(model, path)
    return _decode(meta["state"], tensors), meta["history"]
