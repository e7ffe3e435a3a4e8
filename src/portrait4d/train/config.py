"""Training configs: a preset dataclass, overlaid by a YAML file, overlaid by ``--set`` overrides.

A run's configuration is one nested config dataclass (STYLE habit 1). It is resolved in
three layers, each checked against the dataclass's type hints:

1. the preset (a function returning the dataclass, e.g. ``tiny()``);
2. an optional YAML file holding any subset of its fields (nested mappings);
3. command-line overrides ``KEY=VALUE`` with dotted keys, e.g. ``optim.lr=2e-4``.

Values are read as YAML (so ``true``, ``[0.9, 0.999]`` and ``null`` work), with floats
such as ``2e-4`` read as numbers (plain YAML 1.1 would make them strings). A key that is
not a field, a value of the wrong type, a value the config's own checks refuse or a NaN /
infinite number is a :class:`UserInputError` in one line naming the field. The
resolved config is written to ``RUN/config.yaml`` so a run documents itself.
"""

from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import math
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from portrait4d.checkpoints import config_from_json, config_to_json
from portrait4d.errors import UserInputError

T = TypeVar("T")


class _ConfigLoader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 floats: ``1e-4`` is a float, not the string ``"1e-4"``."""


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_value(text: str) -> Any:
    """One override value as YAML (``"2e-4"`` -> 2e-4, ``"[1, 2]"`` -> [1, 2], ``"abc"`` -> "abc")."""
    try:
        return yaml.load(text, Loader=_ConfigLoader)
    except yaml.YAMLError:
        return text  # not YAML: keep the raw text and let the type check judge it


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=2e-4"`` -> (["optim", "lr"], 2e-4)."""
    key, sep, value = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(part.strip() for part in parts):
        raise UserInputError(f"config override must look like KEY=VALUE with a dotted KEY, got {text!r}")
    return [part.strip() for part in parts], parse_value(value.strip())


def load_config(base: T, path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """``base`` (a config dataclass instance) overlaid by the YAML file at ``path`` and by ``overrides``."""
    if not dataclasses.is_dataclass(base) or isinstance(base, type):
        raise TypeError("load_config needs a config dataclass instance as its base")
    cls = type(base)
    document = config_to_json(base)
    if path is not None:
        document = _merge(cls, document, read_config_file(Path(path)), where=str(path), prefix=[])
    for override in overrides:
        keys, value = parse_override(override)
        document = _set(cls, document, keys, value)
    try:
        config = config_from_json(cls, document)
    except (TypeError, ValueError) as error:
        raise UserInputError(f"bad config value: {_dotted(str(error), cls)}") from None
    _check_finite(config_to_json(config), [])
    return config


def config_to_yaml(config: Any) -> str:
    """The YAML text of a config dataclass (field order kept), readable by :func:`load_config`."""
    return yaml.safe_dump(config_to_json(config), sort_keys=False, default_flow_style=None)


def config_from_arguments(base: T, args: argparse.Namespace) -> T:
    """The config that the options of :func:`portrait4d.commands.training_options.add_training_arguments` describe, on top of ``base``."""
    return load_config(base, args.config, args.overrides)


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping a YAML config file holds; a missing, unreadable or malformed file is one line."""
    try:
        data = yaml.load(path.read_text(), Loader=_ConfigLoader)
    except FileNotFoundError:
        raise UserInputError(f"config file not found: {path}") from None
    except UnicodeDecodeError:
        raise UserInputError(f"config file {path} is not UTF-8 text") from None
    except yaml.YAMLError as error:
        first = str(error).strip().splitlines()[0]
        raise UserInputError(f"config file {path} is not valid YAML: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserInputError(f"config file {path} must hold a mapping of fields, not a {type(data).__name__}")
    return data


# --------------------------------------------------------------------------- internals


def _merge(
    root: type, current: dict[str, Any], update: dict[str, Any], where: str, prefix: list[str]
) -> dict[str, Any]:
    """Overlay a YAML mapping on the JSON form of the group at ``prefix`` below ``root``.

    Groups of fields (dataclasses) merge key by key; any other value, a mapping-typed
    field included, is replaced whole.
    """
    merged = dict(current)
    for key, value in update.items():
        keys = [*prefix, str(key)]
        child = _unwrap_optional(_child_type(root, keys, where))
        if isinstance(value, dict) and dataclasses.is_dataclass(child) and isinstance(current.get(key), dict):
            merged[key] = _merge(root, current[key], value, where, keys)
        else:
            merged[key] = value
    return merged


def _set(cls: type, document: dict[str, Any], keys: list[str], value: Any) -> dict[str, Any]:
    """A copy of ``document`` with the field at dotted ``keys`` replaced by ``value``."""
    _child_type(cls, keys, "override")
    document = dict(document)
    node = document
    for depth, key in enumerate(keys[:-1]):
        inner = node.get(key)
        if not isinstance(inner, dict):
            group = ".".join(keys[: depth + 1])
            raise UserInputError(f"config key {group!r} is not a group of fields; cannot set {'.'.join(keys)!r}")
        node[key] = dict(inner)
        node = node[key]
    node[keys[-1]] = value
    return document


def _child_type(root: type, keys: list[str], where: str) -> Any:
    """The type hint at dotted ``keys`` below ``root``; an unknown key is a one-line error."""
    tp: Any = root
    for depth, key in enumerate(keys):
        tp = _unwrap_optional(tp)
        if dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)
            names = [field.name for field in dataclasses.fields(tp) if field.init]
            if key not in names:
                group = ".".join(keys[:depth]) or "the config"
                raise UserInputError(
                    f"unknown config key {'.'.join(keys)!r} ({where}); {group} has: {', '.join(names)}"
                )
            tp = hints[key]
        elif typing.get_origin(tp) in (dict, collections.abc.Mapping):
            args = typing.get_args(tp)
            tp = args[1] if args else Any
        else:
            parent = ".".join(keys[:depth])
            raise UserInputError(f"config key {'.'.join(keys)!r} ({where}) goes below {parent!r}, which is a single value")
    return tp


def _check_finite(value: Any, keys: list[str]) -> None:
    """Refuse NaN and ±inf anywhere in a resolved config (JSON form): no training setting
    means anything at those values, and a NaN learning rate or weight would only show up
    as a run of NaN losses much later."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UserInputError(f"bad config value: {_dotted_keys(keys)} must be a finite number, got {value}")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        _check_finite(item, [*keys, f"[{key}]" if isinstance(key, int) else str(key)])


def _dotted_keys(keys: list[str]) -> str:
    return ".".join(keys).replace(".[", "[")


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        if len(options) == 1:
            return options[0]
    return tp


def _dotted(message: str, cls: type) -> str:
    """``"Stage1Config.optim.lr: expected float ..."`` -> ``"optim.lr: expected float ..."``."""
    prefix = f"{cls.__name__}."
    return message[len(prefix) :] if message.startswith(prefix) else message
