"""Our checkpoint format: weights without code (safetensors) plus a readable JSON config.

A checkpoint is a directory::

    CHECKPOINT/
      model.safetensors   every network's tensors under "<network>.<state_dict name>"
      config.json         format tag, kind, preset name, resolved configs, camera
                          constants, training step, and each network's tensor names in
                          state_dict order (safetensors itself does not keep the order)

Several networks live in one checkpoint (``G``, ``G_ema``, ``D``, …). ``kind`` says what
the checkpoint is for (for example ``"synthesizer"``) so that a command handed the wrong
file can say so in one line. Loading reads JSON and safetensors only and never touches
``pickle``; official ``.pkl`` files go through :mod:`portrait4d.official_import` instead.

Saving is atomic: everything is written into a hidden temporary directory next to the
destination and renamed into place, so a failure part-way leaves nothing at the
destination (and an existing checkpoint there stays intact until the new one is complete).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import json
import os
import shutil
import types
import typing
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from portrait4d import __version__, camera
from portrait4d.errors import UserInputError

FORMAT = "portrait4d-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

T = TypeVar("T")


@dataclass(frozen=True)
class Checkpoint:
    """What :func:`load_checkpoint` returns.

    ``configs`` keeps the saved configs as plain JSON; turn one back into its dataclass
    with :func:`config_from_json`, because only the caller knows which class it is.
    """

    kind: str
    networks: dict[str, dict[str, torch.Tensor]]
    preset: str | None = None
    configs: dict[str, Any] = field(default_factory=dict)
    step: int = 0
    camera: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def camera_constants() -> dict[str, float]:
    """The camera convention every checkpoint is trained under (spec §15)."""
    return {"focal": camera.FOCAL, "principal_point": camera.PRINCIPAL_POINT, "label_size": camera.LABEL_SIZE}


def save_checkpoint(
    path: str | os.PathLike,
    networks: Mapping[str, torch.nn.Module | Mapping[str, torch.Tensor]],
    *,
    kind: str,
    preset: str | None = None,
    configs: Mapping[str, Any] | None = None,
    step: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``networks`` (modules or state dicts) and their configs as one checkpoint directory.

    ``configs`` values may be config dataclasses or JSON-ready values. An existing
    directory at ``path`` is replaced only if it is itself a checkpoint (or empty).
    """
    destination = Path(path)
    check_destination(destination)
    tensors: dict[str, torch.Tensor] = {}
    order: dict[str, list[str]] = {}
    for network, source in networks.items():
        if not network or "." in network:
            raise ValueError(f"network name {network!r} must be non-empty and contain no '.'")
        state = source.state_dict() if isinstance(source, torch.nn.Module) else dict(source)
        order[network] = list(state)
        tensors.update({f"{network}.{name}": tensor for name, tensor in state.items()})
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "portrait4d_version": __version__,
        "kind": kind,
        "preset": preset,
        "step": int(step),
        "camera": camera_constants(),
        "configs": {name: config_to_json(value) for name, value in (configs or {}).items()},
        "extra": _jsonable(dict(extra or {}), "extra"),
        "networks": order,
    }
    text = json.dumps(document, indent=2)  # before any file exists: bad configs fail early

    staging = destination.parent / f".{destination.name}.tmp-{uuid.uuid4().hex[:8]}"
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging.mkdir()
    try:
        save_file(_unshared(tensors), str(staging / WEIGHTS_FILE), metadata={"format": FORMAT})
        _write_synced(staging / CONFIG_FILE, text.encode())
        # safetensors creates its file owner-only; give it the same permissions as config.json
        os.chmod(staging / WEIGHTS_FILE, (staging / CONFIG_FILE).stat().st_mode & 0o777)
        _swap_into_place(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination


def read_checkpoint_config(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON document of a checkpoint, without reading any tensor."""
    directory = _checkpoint_directory(Path(path))
    config_path = directory / CONFIG_FILE
    try:
        document = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise UserInputError(f"{directory} is not a portrait4d checkpoint: {CONFIG_FILE} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserInputError(f"{config_path} is not valid JSON ({error})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise UserInputError(f"{config_path} is not a portrait4d checkpoint config (no format tag {FORMAT!r})")
    version = document.get("format_version", 0)
    if not _is_whole(version):
        raise UserInputError(f"{config_path}: format_version must be a whole number, got {version!r}")
    if version > FORMAT_VERSION:
        raise UserInputError(
            f"{directory} uses checkpoint format version {version}; "
            f"this portrait4d reads up to version {FORMAT_VERSION}"
        )
    _check_document(document, config_path)
    return document


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_document(document: dict[str, Any], config_path: Path) -> None:
    """The fields loading relies on have the types :func:`save_checkpoint` writes."""
    networks = document.get("networks")
    if not isinstance(networks, dict) or not all(
        isinstance(names, list) and all(isinstance(name, str) for name in names) for names in networks.values()
    ):
        found = "nothing" if networks is None else f"a {type(networks).__name__}"
        raise UserInputError(
            f"{config_path}: 'networks' must map each network to its list of tensor names, found {found}"
        )
    if not isinstance(document.get("kind"), str):
        raise UserInputError(f"{config_path}: 'kind' must be a string, got {document.get('kind')!r}")
    if not _is_whole(document.get("step", 0)):
        raise UserInputError(f"{config_path}: 'step' must be a whole number, got {document.get('step')!r}")
    for key in ("configs", "camera", "extra"):
        if not isinstance(document.get(key, {}), dict):
            raise UserInputError(f"{config_path}: {key!r} must be a JSON object, got {type(document[key]).__name__}")


def load_checkpoint(
    path: str | os.PathLike,
    *,
    kind: str | None = None,
    networks: Sequence[str] | None = None,
    map_location: str | torch.device = "cpu",
    finite: bool = True,
) -> Checkpoint:
    """Read a checkpoint directory (or its ``model.safetensors``); no pickle involved.

    ``kind``, when given, must match the saved kind: a mismatch is a one-line
    :class:`UserInputError` naming both. ``networks`` selects which networks' tensors
    are read (default: all); the others are not loaded at all. With ``finite`` (the
    default for weights) a floating-point tensor holding NaN or ±inf is refused, naming it;
    the format itself stores any value.
    """
    directory = _checkpoint_directory(Path(path))
    document = read_checkpoint_config(directory)
    if kind is not None and document.get("kind") != kind:
        raise UserInputError(
            f"{directory} is a {document.get('kind')!r} checkpoint, but a {kind!r} checkpoint is needed here"
        )
    saved: dict[str, list[str]] = document["networks"]
    wanted = list(saved) if networks is None else list(networks)
    for network in wanted:
        if network not in saved:
            raise UserInputError(f"{directory} has no network {network!r}; it holds {', '.join(saved) or 'none'}")
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise UserInputError(f"{directory} is incomplete: {WEIGHTS_FILE} is missing")
    try:
        with safe_open(str(weights), framework="pt", device=str(map_location)) as reader:
            stored = set(reader.keys())
            listed = {f"{network}.{name}" for network, names in saved.items() for name in names}
            if stored != listed:
                raise UserInputError(
                    f"{directory} is inconsistent: {len(listed - stored)} tensors listed in {CONFIG_FILE} are missing "
                    f"and {len(stored - listed)} stored tensors are not listed"
                )
            tensors = {
                network: {name: reader.get_tensor(f"{network}.{name}") for name in saved[network]} for network in wanted
            }
    except SafetensorError as error:
        raise UserInputError(f"{weights} is not a readable safetensors file ({error})") from None
    if finite:
        named = {f"{network}.{name}": tensor for network, state in tensors.items() for name, tensor in state.items()}
        refuse_nonfinite(named, weights)
    return Checkpoint(
        kind=document["kind"],
        networks=tensors,
        preset=document.get("preset"),
        configs=document.get("configs", {}),
        step=int(document.get("step", 0)),
        camera=document.get("camera", {}),
        extra=document.get("extra", {}),
    )


def refuse_nonfinite(tensors: Mapping[str, torch.Tensor], where: str | os.PathLike) -> None:
    """Raise a :class:`UserInputError` naming the tensors that hold NaN or infinite values.

    Such weights (a diverged run, a damaged file) would otherwise run and produce NaN images
    or fail far away, e.g. in a metric's matrix square root.
    """
    bad = [name for name, tensor in tensors.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        shown = ", ".join(bad[:5]) + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
        raise UserInputError(f"{where} holds NaN or infinite values in {len(bad)} tensor(s): {shown}")


# --------------------------------------------------------------------------- configs <-> JSON


def config_to_json(config: Any) -> Any:
    """Plain JSON value of a (nested, frozen) config dataclass: tuples become lists, enums values."""
    return _jsonable(config, type(config).__name__)


def config_from_json(cls: type[T], data: Any) -> T:
    """Rebuild ``cls`` from :func:`config_to_json` output, guided by its type hints.

    Fields absent from ``data`` keep their defaults (older checkpoints); unknown fields are
    an error, since silently dropping a setting would change the model.
    """
    return _from_json(cls, data, cls.__name__)


def _jsonable(value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name), f"{where}.{f.name}") for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (tuple, list)):
        return [_jsonable(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise TypeError(f"{where}: only string keys can be written to JSON")
        return {key: _jsonable(item, f"{where}.{key}") for key, item in value.items()}
    raise TypeError(f"{where}: a {type(value).__name__} cannot be written to a JSON config")


def _from_json(tp: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _dataclass_from_json(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (arg for arg in args if arg is not type(None)):
            try:
                return _from_json(option, value, where)
            except (TypeError, ValueError) as error:
                errors.append(str(error))
        raise ValueError(f"{where}: {value!r} matches none of {tp} ({'; '.join(errors)})")
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"{where}: {value!r} is not one of {args}")
        return value
    if origin is tuple:
        items = _expect(list, value, where)
        if not args:
            return tuple(items)
        if len(args) == 2 and args[1] is Ellipsis:
            item_types = [args[0]] * len(items)
        elif len(args) == len(items):
            item_types = list(args)
        else:
            raise ValueError(f"{where}: expected {len(args)} items, got {len(items)}")
        return tuple(_from_json(kind, item, f"{where}[{i}]") for i, (kind, item) in enumerate(zip(item_types, items)))
    if origin in (list, collections.abc.Sequence):
        items = _expect(list, value, where)
        return [_from_json(args[0] if args else Any, item, f"{where}[{i}]") for i, item in enumerate(items)]
    if origin in (dict, collections.abc.Mapping):
        value_type = args[1] if args else Any
        items = _expect(dict, value, where)
        return {key: _from_json(value_type, item, f"{where}.{key}") for key, item in items.items()}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is type(None):
        if value is not None:
            raise TypeError(f"{where}: expected null, got {value!r}")
        return None
    if tp in (int, str, bool, float):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise TypeError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
        return value
    if tp is Path:
        return Path(_expect(str, value, where))
    raise TypeError(f"{where}: config fields of type {tp} are not supported")


def _dataclass_from_json(cls: type, value: Any, where: str) -> Any:
    data = _expect(dict, value, where)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}")
    values = {name: _from_json(hints[name], data[name], f"{where}.{name}") for name in fields if name in data}
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:  # the class's own checks: name the group (and field)
        message = str(error)
        names_field = message.split(" ", 1)[0].split(".", 1)[0] in fields
        raise ValueError(f"{where}{'.' if names_field else ': '}{message}") from None


def _expect(kind: type, value: Any, where: str) -> Any:
    if not isinstance(value, kind):
        raise TypeError(f"{where}: expected a JSON {kind.__name__}, got {type(value).__name__}")
    return value


# --------------------------------------------------------------------------- file helpers


def _checkpoint_directory(path: Path) -> Path:
    if path.suffix == ".pkl":
        raise UserInputError(
            f"{path} is an official pickle; import it first with `portrait4d convert {path} OUT_DIR`"
        )
    if path.is_file() and path.name == WEIGHTS_FILE:
        return path.parent
    if not path.exists():
        raise UserInputError(f"checkpoint not found: {path}")
    if not path.is_dir():
        raise UserInputError(
            f"{path} is not a portrait4d checkpoint (expected a directory holding {CONFIG_FILE} and {WEIGHTS_FILE})"
        )
    return path


def check_destination(destination: Path) -> None:
    """Refuse (UserInputError) unless a save may write ``destination``: it must be absent, an
    empty directory or one of our own checkpoints."""
    if not destination.exists():
        return
    if destination.is_dir() and (not any(destination.iterdir()) or _is_checkpoint(destination)):
        return
    raise UserInputError(f"refusing to overwrite {destination}: it exists and is not a portrait4d checkpoint")


def _is_checkpoint(directory: Path) -> bool:
    try:
        read_checkpoint_config(directory)
    except UserInputError:
        return False
    return True


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors with no two sharing memory (safetensors stores each one alone)."""
    seen: set[int] = set()
    out = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().to("cpu").contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen and tensor.numel() > 0:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        out[name] = tensor
    return out


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _swap_into_place(staging: Path, destination: Path) -> None:
    """Rename the finished staging directory to ``destination``, replacing an old one."""
    with open(staging / WEIGHTS_FILE, "rb") as handle:
        os.fsync(handle.fileno())
    if not destination.exists():
        os.rename(staging, destination)
        return
    retired = destination.parent / f".{destination.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(destination, retired)
    try:
        os.rename(staging, destination)
    except BaseException:
        os.rename(retired, destination)
        raise
    shutil.rmtree(retired, ignore_errors=True)
