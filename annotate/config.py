"""Typed configs: nested dataclasses filled from YAML presets and ``dotted.key=value`` overrides.

Shared by every stage (annotate, train, eval); annotate/command.py makes their command lines from them. An
unknown key is an error that names it and lists the valid keys closest to it.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    pass


class MissingConfigError(ConfigError):
    """A config file that does not exist (a command adds which presets it takes)."""


def all_keys(cls_or_obj: Any, prefix: str = "") -> list[str]:
    """Every dotted leaf key of a dataclass (type or instance)."""
    cls = cls_or_obj if isinstance(cls_or_obj, type) else type(cls_or_obj)
    hints = typing.get_type_hints(cls)
    keys = []
    for f in dataclasses.fields(cls):
        t = _dataclass_type(hints[f.name])
        keys += all_keys(t, f"{prefix}{f.name}.") if t else [f"{prefix}{f.name}"]
    return keys


def _dataclass_type(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp
    for arg in typing.get_args(tp):  # Optional[SomeConfig]
        if dataclasses.is_dataclass(arg) and isinstance(arg, type):
            return arg
    return None


def _unknown(key: str, valid: list[str]) -> ConfigError:
    near = difflib.get_close_matches(key, valid, n=5, cutoff=0.4)
    leaf = key.rsplit(".", 1)[-1]
    near += [k for k in valid if k.rsplit(".", 1)[-1] == leaf and k not in near]
    hint = f"; did you mean {', '.join(near[:6])}?" if near else f"; valid keys: {', '.join(valid[:30])}"
    return ConfigError(f"unknown config key {key!r}{hint}")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Turn YAML/CLI values into the annotated type (strings from the command line are parsed as YAML)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Literal:  # fixed choices; "no" stays a string (YAML 1.1 would read false)
        if value in args:
            return value
        if isinstance(value, str) and not any(isinstance(a, str) for a in args):
            parsed = yaml.safe_load(value) if value.strip() else None
            if parsed in args:
                return parsed
        raise ConfigError(f"{key} must be one of {', '.join(map(str, args))}; got {value!r}")
    if isinstance(value, str) and tp is not str and str not in args:
        value = yaml.safe_load(value) if value.strip() else None
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except (ConfigError, TypeError, ValueError) as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: cannot use {value!r} as {tp}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            value = [value]
        inner = args[0] if args else Any
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
            return tuple(_coerce(v, a, key) for v, a in zip(value, args))
        out = [_coerce(v, inner, key) for v in value]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 5e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        return "" if value is None else str(value)
    return value


def from_dict(cls: type[T], data: dict | None, prefix: str = "", base: T | None = None) -> T:
    """Build ``cls`` from a (nested) mapping on top of ``base`` (default: the class defaults)."""
    obj = base if base is not None else cls()
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for k, v in data.items():
        if k not in names:
            raise _unknown(prefix + k, all_keys(cls, ""))
        sub = _dataclass_type(hints[k])
        if sub is not None and isinstance(v, dict):
            cur = getattr(obj, k)
            setattr(obj, k, from_dict(sub, v, f"{prefix}{k}.", cur if cur is not None else sub()))
        else:
            setattr(obj, k, _coerce(v, hints[k], prefix + k))
    return obj


def apply_overrides(cfg: T, overrides: list[str]) -> T:
    """Apply ``a.b.c=value`` strings (values parsed as YAML) to a config in place."""
    valid = all_keys(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        key = key.strip()
        if key not in valid:
            raise _unknown(key, valid)
        set_key(cfg, key, value)
    return cfg


def set_key(cfg: Any, key: str, value: Any) -> None:
    """Set a dotted key of a config in place, the value coerced to the field's type (strings parsed as YAML)."""
    *path, leaf = key.split(".")
    obj = cfg
    for p in path:
        obj = getattr(obj, p)
    setattr(obj, leaf, _coerce(value, typing.get_type_hints(type(obj))[leaf], key))


def read_yaml(path: str | Path) -> dict:
    """A YAML preset as a mapping, with errors that name the file."""
    if not Path(path).exists():
        raise MissingConfigError(f"config file {str(path)!r}: no such file")
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults, then the YAML preset (if any), then overrides."""
    cfg = from_dict(cls, read_yaml(path) if path else {})
    return apply_overrides(cfg, list(overrides or []))


def to_dict(cfg: Any) -> dict:
    def conv(v):
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(dataclasses.asdict(cfg))


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
