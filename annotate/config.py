"""Typed configs: nested dataclasses filled from YAML presets and ``dotted.key=value`` overrides.

Shared by every stage's command line (annotate, train, eval). An unknown key is an error that names it
and lists the valid keys closest to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import io
import re
import sys
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    pass


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
        *path, leaf = key.split(".")
        obj = cfg
        for p in path:
            obj = getattr(obj, p)
        hints = typing.get_type_hints(type(obj))
        setattr(obj, leaf, _coerce(value, hints[leaf], key))
    return cfg


def read_yaml(path: str | Path) -> dict:
    """A YAML preset as a mapping, with errors that name the file."""
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


# ------------------------------------------------------------------------------------------------ command line
# Each config-driven command builds its --help from the dataclass: every dotted key with its type, default,
# choices (a ``Literal`` type) and help text. The help text has ONE source: the comment on the field's line
# in the dataclass's source (or, when that line has none, the comment lines directly above the field).


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description/epilog layout and adds "(default: ...)" to every option whose help does not
    already say its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if "default" in (action.help or "").lower() or action.required or action.default in (None, ""):
            return action.help or ""
        return super()._get_help_string(action)


def _source_comments(cls: type) -> dict[str, str]:
    """Field name -> its comment in the class source ({} when the source is not available)."""
    try:
        lines, _ = inspect.getsourcelines(cls)
    except (OSError, TypeError):
        return {}
    src = "".join(lines)
    comments: dict[int, str] = {}  # line (0-based) -> comment text
    trailing: set[int] = set()
    code_lines: set[int] = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(src).readline):
            row = tok.start[0] - 1
            if tok.type == tokenize.COMMENT:
                comments[row] = tok.string.lstrip("#").strip()
                if row in code_lines:
                    trailing.add(row)
            elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
                code_lines.add(row)
    except (tokenize.TokenError, SyntaxError):
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, str] = {}
    body_indent = None
    for i, line in enumerate(lines):
        m = re.match(r"^(\s+)(\w+)\s*:", line)
        if not m or m.group(2) not in names or m.group(2) in out:
            continue
        body_indent = body_indent or m.group(1)
        if m.group(1) != body_indent:
            continue
        if i in trailing:
            out[m.group(2)] = comments[i]
            continue
        above, j = [], i - 1
        while j >= 0 and j in comments and j not in code_lines:
            above.insert(0, comments[j])
            j -= 1
        if above:
            out[m.group(2)] = " ".join(above)
    return out


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return "choice"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp))


def _choices(tp: Any) -> tuple | None:
    if typing.get_origin(tp) is typing.Literal:
        return typing.get_args(tp)
    for a in typing.get_args(tp):
        if typing.get_origin(a) is typing.Literal:
            return typing.get_args(a)
    return None


@dataclasses.dataclass
class KeyDoc:
    key: str
    type: str
    default: Any
    help: str
    choices: tuple | None


def describe(obj: Any, prefix: str = "") -> list[KeyDoc]:
    """Every dotted leaf key of a config instance with its type, current value, help text and choices."""
    cls = type(obj)
    hints = typing.get_type_hints(cls, include_extras=False)
    notes = _source_comments(cls)
    out = []
    for f in dataclasses.fields(cls):
        value = getattr(obj, f.name)
        sub = _dataclass_type(hints[f.name])
        if sub is not None:
            out += describe(value if value is not None else sub(), f"{prefix}{f.name}.")
        else:
            out.append(KeyDoc(prefix + f.name, _type_name(hints[f.name]), value, notes.get(f.name, ""),
                              _choices(hints[f.name])))
    return out


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text[:-4].strip() if text.endswith("\n...") or text.endswith(" ...") else text.removesuffix("...")


def keys_help(obj: Any, title: str = "config keys") -> str:
    """The --help section listing every key: ``key (type, default X; choices ...)`` and its help text."""
    lines = [f"{title}; override any with key=value (values are YAML):"]
    for d in describe(obj):
        extra = f"; choices: {', '.join(map(str, d.choices))}" if d.choices else ""
        lines.append(f"  {d.key} ({d.type}, default: {_show(d.default)}{extra})")
        if d.help:
            lines += [f"      {t}" for t in textwrap.wrap(d.help, 96)]
    return "\n".join(lines)


def add_config_arguments(p: argparse.ArgumentParser, cls: type, config_help: str,
                         defaults: Any = None) -> None:
    """``--config``, ``--print-config`` and the ``key=value`` overrides, with every key in the epilog."""
    p.formatter_class = HelpFormatter
    p.add_argument("--config", default=None, help=config_help)
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (defaults, preset, overrides) as YAML and exit")
    p.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                   help="config overrides (see the keys below), e.g. a.b=1%(default).0s")
    p.epilog = keys_help(defaults if defaults is not None else cls(),
                         "config keys with their defaults before a preset (--print-config shows the resolved values)")


def print_config(cfg: Any, stream: typing.TextIO | None = None) -> None:
    """The resolved config as YAML (loadable as a preset: ``--config`` of the printed file gives ``cfg``)."""
    (stream or sys.stdout).write(dump_yaml(cfg))


def add_flags(p: argparse.ArgumentParser, cls: type, rename: dict[str, str] | None = None,
              negate: dict[str, str] | None = None, required: tuple[str, ...] = ()) -> None:
    """One ``--option`` per field of a flat dataclass config: type, default, choices and help from the class
    (help: the field's comment). ``rename``: field -> option name; ``negate``: bool field that defaults to true
    -> its ``--no-...`` switch. :func:`from_flags` turns the parsed namespace back into the config."""
    rename, negate = rename or {}, negate or {}
    hints = typing.get_type_hints(cls)
    notes = _source_comments(cls)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    p.formatter_class = HelpFormatter
    for f in dataclasses.fields(cls):
        tp, text = hints[f.name], notes.get(f.name, "")
        if f.name in negate:
            p.add_argument(negate[f.name], dest=f.name, action="store_false", help=f"not: {text or f.name}")
            continue
        flag = rename.get(f.name, "--" + f.name.replace("_", "-"))
        if tp is bool:
            p.add_argument(flag, dest=f.name, action="store_true", help=text)
            continue
        kw: dict[str, Any] = {"dest": f.name, "help": text, "metavar": flag.lstrip("-").replace("-", "_").upper()}
        if f.name in required:
            kw["required"] = True
        else:
            kw["default"] = defaults[f.name]
        choices = _choices(tp)
        if choices:
            kw["choices"] = choices
        base = next((a for a in (tp, *typing.get_args(tp)) if a in (int, float)), None)
        if base is not None:
            kw["type"] = base
        p.add_argument(flag, **kw)


def from_flags(cls: type[T], args: argparse.Namespace) -> T:
    """The config of :func:`add_flags`' options."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})
