"""Strict YAML -> dataclass loading: defaults < YAML files < `--set section.key=value`.

Unknown keys, wrong types and missing required values fail with the full dotted key and where it
came from. Section dataclasses check their own values in `__post_init__` by raising `FieldError`.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from distgem.errors import ConfigError

INCLUDE_KEY = "include"


class FieldError(ValueError):
    """Raised by a section's __post_init__: `field` is the field's name within that section."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


def bounded(
    default: Any, *, ge: float | None = None, gt: float | None = None, lt: float | None = None, le: float | None = None
) -> Any:
    """A numeric field with its valid range (checked on loading, with the dotted key named; tests draw values
    outside it): `lr: float = bounded(1e-5, gt=0)`. None, where the type allows it, is always valid."""
    bounds = {name: value for name, value in (("ge", ge), ("gt", gt), ("lt", lt), ("le", le)) if value is not None}
    return dataclasses.field(default=default, metadata={"bounds": bounds})


BOUND_TEXT = {"ge": ">=", "gt": ">", "lt": "<", "le": "<="}
BOUND_HOLDS = {"ge": lambda v, b: v >= b, "gt": lambda v, b: v > b, "lt": lambda v, b: v < b, "le": lambda v, b: v <= b}


def out_of_bounds(value: Any, bounds: dict[str, float]) -> str | None:
    """Why `value` is outside `bounds` (`must be >= 1`), or None when it is inside (or None)."""
    if value is None or not bounds:
        return None
    failed = [f"{BOUND_TEXT[kind]} {limit:g}" for kind, limit in bounds.items() if not BOUND_HOLDS[kind](value, limit)]
    return f"must be {' and '.join(f'{BOUND_TEXT[k]} {v:g}' for k, v in bounds.items())}" if failed else None


def require(condition: bool, field: str, message: str) -> None:
    """Raise FieldError(field, message) unless condition holds (for __post_init__ checks)."""
    if not condition:
        raise FieldError(field, message)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config YAML` and `--set SECTION.KEY=VALUE`, for every command that reads a run config (into
    `args.config` and `args.overrides`, the two arguments of `load_config`)."""
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="YAML",
        help="run config (repeatable; later files win; each may `include:` others)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        dest="overrides",
        help="override one config value, parsed to the field's type (repeatable)",
    )


def load_config(cls: type, paths: list[str | os.PathLike] = (), overrides: list[str] = ()) -> Any:
    """Build `cls` from YAML files (later wins; each may `include:` others) and `key=value` overrides."""
    raw: dict = {}
    sources: dict[str, str] = {}
    for path in paths:
        data, where = _read_yaml(Path(path))
        _merge(raw, sources, data, "", os.fspath(path))
        sources.update(where)  # each value is reported against the file that set it, an included one too
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        _set_dotted(raw, sources, key.strip(), _OverrideValue(value), f"--set {key.strip()}")
    return build(cls, raw, sources)


def build(cls: type, raw: dict, sources: dict[str, str] | None = None, prefix: str = "") -> Any:
    """Build dataclass `cls` from a nested dict, checking keys, types and required values."""
    sources = sources or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{_where(sources, prefix.rstrip('.'))}: '{prefix.rstrip('.')}' must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in raw:
        if key not in fields:
            hint = difflib.get_close_matches(str(key), list(fields), n=1)
            suggestion = f" (did you mean '{prefix}{hint[0]}'?)" if hint else f" (known: {', '.join(fields)})"
            raise ConfigError(f"{_where(sources, prefix + str(key))}: unknown key '{prefix}{key}'{suggestion}")
    values = {}
    for name, field in fields.items():
        dotted = prefix + name
        if name in raw:
            values[name] = _convert(raw[name], hints[name], dotted, sources)
            problem = out_of_bounds(values[name], field.metadata.get("bounds", {}))
            if problem:
                raise ConfigError(f"{_where(sources, dotted)}: '{dotted}' {problem}, got {values[name]!r}")
        elif (
            dataclasses.is_dataclass(hints[name])
            and field.default is dataclasses.MISSING
            and field.default_factory is dataclasses.MISSING
        ):
            values[name] = build(hints[name], {}, sources, dotted + ".")
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required value '{dotted}' (set it in the YAML or with --set {dotted}=...)")
    try:
        return cls(**values)
    except FieldError as err:
        dotted = prefix + err.field
        raise ConfigError(f"{_where(sources, dotted)}: '{dotted}': {err}") from None


def to_dict(config: Any) -> dict:
    """The config as plain nested dicts and lists (for YAML, JSON and checkpoints)."""
    return dataclasses.asdict(config)


def dump_yaml(config: Any, path: str | os.PathLike | None = None) -> str:
    """Write the resolved config as YAML (and return the text); loading it back gives an equal config."""
    text = yaml.safe_dump(to_dict(config), sort_keys=False, allow_unicode=True)
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


class _OverrideValue(str):
    """A `--set` value: still text, parsed to the field's type when the field is known."""


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict, dict[str, str]]:
    """(the file's values with its includes merged under them, the file that set each dotted key)."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: include cycle ({' -> '.join(map(str, seen))})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: invalid YAML ({getattr(err, 'problem', err)})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    includes = data.pop(INCLUDE_KEY, [])
    merged: dict = {}
    sources: dict[str, str] = {}
    for include in [includes] if isinstance(includes, str) else includes:
        included, where = _read_yaml(path.parent / include, seen + (path.resolve(),))
        _merge(merged, sources, included, "", str(path.parent / include))
        sources.update(where)
    _merge(merged, sources, data, "", str(path))
    return merged, sources


def _merge(into: dict, sources: dict, new: dict, prefix: str, source: str) -> None:
    for key, value in new.items():
        dotted = prefix + str(key)
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], sources, value, dotted + ".", source)
        else:
            into[key] = value
        _mark(sources, dotted, value, source)


def _mark(sources: dict, dotted: str, value: Any, source: str) -> None:
    sources[dotted] = source
    if isinstance(value, dict):
        for key, sub in value.items():
            _mark(sources, f"{dotted}.{key}", sub, source)


def _set_dotted(raw: dict, sources: dict, dotted: str, value: Any, source: str) -> None:
    node = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: '{part}' is not a section")
    node[parts[-1]] = value
    sources[dotted] = source


def _where(sources: dict, dotted: str) -> str:
    children = [src for key, src in sources.items() if key.startswith(dotted + ".")]
    if dotted not in sources and children:  # a section known only through its keys (`--set trian.lr=1`)
        return children[-1]
    while dotted:
        if dotted in sources:
            return sources[dotted]
        dotted = dotted.rpartition(".")[0]
    return "config"


def _convert(value: Any, hint: Any, dotted: str, sources: dict) -> Any:
    """Check (and for --set text, parse) `value` against the type `hint`."""
    where = _where(sources, dotted)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, _OverrideValue):
            raise ConfigError(f"{where}: '{dotted}' is a section; set its keys, e.g. {dotted}.<key>=...")
        return build(hint, value, sources, dotted + ".")
    if origin in (Union, types.UnionType):
        if value is None or (isinstance(value, _OverrideValue) and value.strip().lower() in ("null", "none", "~")):
            if type(None) in args:
                return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, dotted, sources)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: '{dotted}': {value!r} matches none of {hint}")
    if origin is Literal:
        candidates = [value]
        if isinstance(value, _OverrideValue):  # `--set train.zero_stage=2` must match Literal[0, 1, 2, 3]
            candidates = [str(value), _yaml_scalar(value, dotted, where)]
        for candidate in candidates:
            if any(candidate == arg and type(candidate) is type(arg) for arg in args):
                return candidate
        raise ConfigError(f"{where}: '{dotted}' must be one of {', '.join(map(str, args))}, got {str(value)!r}")
    if origin in (list, tuple) or hint in (list, tuple):
        if isinstance(value, _OverrideValue):
            value = _yaml_scalar(value, dotted, where)
            value = value if isinstance(value, list) else [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: '{dotted}' must be a list, got {value!r}")
        item = args[0] if args else Any
        items = [
            _convert(
                _OverrideValue(v) if isinstance(v, str) and item is not str else v, item, f"{dotted}[{i}]", sources
            )
            for i, v in enumerate(value)
        ]
        return tuple(items) if origin is tuple or hint is tuple else items
    if origin is dict or hint is dict:
        if isinstance(value, _OverrideValue):
            value = _yaml_scalar(value, dotted, where)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{dotted}' must be a mapping, got {value!r}")
        vtype = args[1] if args else Any
        return {str(k): _convert(v, vtype, f"{dotted}.{k}", sources) for k, v in value.items()}
    return _scalar(value, hint, dotted, where)


def _scalar(value: Any, hint: Any, dotted: str, where: str) -> Any:
    if hint is Any:
        return _yaml_scalar(value, dotted, where) if isinstance(value, _OverrideValue) else value
    text = isinstance(value, _OverrideValue)
    if hint is str:
        if text or isinstance(value, str):
            return str(value)
    elif hint is bool:
        if text and value.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.strip().lower() in ("true", "yes", "on", "1")
        if isinstance(value, bool):
            return value
    elif hint is int:
        if text:
            try:
                return int(value.strip())
            except ValueError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        number = None
        if text or isinstance(value, str):  # YAML 1.1 reads `1e-5` (no dot) as a string
            try:
                number = float(value.strip())
            except ValueError:
                pass
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        if number is not None:
            if not math.isfinite(number):  # no setting of a training run means anything at inf or nan
                raise ConfigError(f"{where}: '{dotted}' must be a finite number, got {str(value)!r}")
            return number
    else:
        raise ConfigError(f"{where}: '{dotted}': unsupported field type {hint!r}")
    name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{where}: '{dotted}' must be {name}, got {str(value)!r}")


def _yaml_scalar(value: str, dotted: str, where: str) -> Any:
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        raise ConfigError(f"{where}: '{dotted}': cannot parse {value!r}") from None
