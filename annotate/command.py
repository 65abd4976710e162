"""Every stage's command line, generated from its typed config.

A stage is a dataclass config plus ``main(cfg)`` (callable from Python). Its :class:`Command` builds the
command line from the config: the positional words and ``--options`` named in the command map onto config keys
(type, default, choices and help all come from the dataclass; help is the field's comment), and every command
takes ``--config PRESET.yaml``, ``key=value`` overrides of any dotted key (values are YAML), ``--print-config``
(the resolved config as YAML, loadable again with ``--config``), and ``-v``/``-vv`` for logging.

Precedence: the dataclass defaults, then ``--config``, then the options and positional words, then the
``key=value`` overrides. ``--help`` lists every key with its type and default.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import inspect
import io
import logging
import os
import re
import sys
import textwrap
import tokenize
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from annotate.config import (
    ConfigError,
    MissingConfigError,
    _dataclass_type,
    all_keys,
    apply_overrides,
    dump_yaml,
    from_dict,
    read_yaml,
    set_key,
)

OVERRIDE = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)*=")  # a ``dotted.key=value`` word
_PREFIX = "cfg:"  # argparse dest of an option that sets a config key: "cfg:<dotted key>"


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the description/epilog layout and adds "(default: ...)" to every option whose help does not
    already say its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if ("default" in (action.help or "").lower() or action.required
                or action.default in (None, "", argparse.SUPPRESS)):
            return action.help or ""
        return super()._get_help_string(action)


# ------------------------------------------------------------------------------------------------ key docs
# The help text of a key has ONE source: the comment on the field's line in the dataclass's source (or, when
# that line has none, the comment lines directly above the field).


@functools.cache
def _source_comments(cls: type) -> dict[str, str]:
    """Field name -> its comment in the class source ({} when the source is not available); read once per class
    (tokenizing a class's source takes milliseconds, and every command line asks for each class)."""
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


@dataclass
class KeyDoc:
    key: str
    type: Any  # the annotation
    default: Any
    help: str
    required: bool = False

    @property
    def type_name(self) -> str:
        return _type_name(self.type)

    @property
    def choices(self) -> tuple | None:
        return _choices(self.type)


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
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            out.append(KeyDoc(prefix + f.name, hints[f.name], value, notes.get(f.name, ""), required))
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
        default = "required" if d.required else f"default: {_show(d.default)}"
        lines.append(f"  {d.key} ({d.type_name}, {default}{extra})")
        if d.help:
            lines += [f"      {t}" for t in textwrap.wrap(d.help, 96)]
    return "\n".join(lines)


def print_config(cfg: Any, stream: typing.TextIO | None = None) -> None:
    """The resolved config as YAML (loadable as a preset: ``--config`` of the printed file gives ``cfg``)."""
    (stream or sys.stdout).write(dump_yaml(cfg))


# ------------------------------------------------------------------------------------------------ the command


class _SetKeys(argparse.Action):
    """A switch that sets several config keys to fixed values (``Command.switches``)."""

    def __init__(self, option_strings, dest, sets: dict[str, Any], **kw):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)
        self.sets = sets

    def __call__(self, parser, namespace, values, option_string=None):
        for key, value in self.sets.items():
            setattr(namespace, _PREFIX + key, value)


def _blank(cls: type) -> Any:
    """The class defaults, with None in the fields that have none (required keys)."""
    return cls(**{f.name: None for f in dataclasses.fields(cls)
                  if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING})


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _literal(text: str) -> str:
    """Help text as argparse prints it literally (it %-formats help: "18 % smaller" would break --help)."""
    return text.replace("%", "%%")


def _sequence(tp: Any) -> bool:
    return any(typing.get_origin(a) in (list, tuple) for a in (tp, *typing.get_args(tp)))


@dataclass
class Command:
    """A stage's command line: ``config`` (a dataclass) and ``run(cfg, args)``, which does the work (usually
    ``main(cfg)``) and returns the exit code, or a dict/list that is printed as JSON, or anything else (exit 0)."""

    config: type  # the stage's config dataclass
    run: Callable[[Any, argparse.Namespace], Any]
    prog: str  # e.g. "python -m annotate index"
    description: str = ""
    positionals: tuple[str, ...] = ()  # keys given as words, in this order (a list key takes the rest)
    flags: dict[str, str] | None = None  # --option -> key; None: every top-level leaf field as --field-name
    switches: dict[str, tuple[str, dict[str, Any]]] | None = None  # --option -> (help, {key: value, ...})
    presets: str = "YAML preset of the config (keys as below)"  # help of --config
    options: Callable[[argparse.ArgumentParser], None] | None = None  # options outside the config (e.g. --check)
    print_result: bool = True  # print a dict/list result of run() as JSON on stdout (NaN/inf as null)
    log_level: int = logging.WARNING  # logging level without -v (-v: INFO, -vv: DEBUG)
    errors: tuple[type[BaseException], ...] = ()  # raised by run: reported in one ``error:`` line, exit 2
    passthrough: str = ""  # a list[str] key that takes the key=value words of keys not in the config (a wrapped
    # stage's overrides, e.g. a benchmark's training run); "" = such a word is an unknown-key error
    load_preset: Callable[[str], dict] = read_yaml  # --config's file as a mapping
    check: Callable[[Any], Any] | None = None  # validates (and may complete) the resolved config

    # -------------------------------------------------------------------------------- parser
    def _flags(self) -> dict[str, str]:
        if self.flags is not None:
            return dict(self.flags)
        hints = typing.get_type_hints(self.config)
        return {"--" + f.name.replace("_", "-"): f.name for f in dataclasses.fields(self.config)
                if f.name not in self.positionals and _dataclass_type(hints[f.name]) is None}

    def parser(self) -> argparse.ArgumentParser:
        shown = _blank(self.config)
        docs = {d.key: d for d in describe(shown)}
        p = argparse.ArgumentParser(prog=self.prog, description=self.description, formatter_class=HelpFormatter)
        for key in self.positionals:
            d = docs[key]
            p.add_argument(f"{_PREFIX}{key}", metavar=key.rsplit(".", 1)[-1].upper(),
                           nargs="*" if _sequence(d.type) else "?", default=argparse.SUPPRESS,
                           help=_literal(d.help + ("" if d.required or d.default in ("", None)
                                                       else f" (default: {_show(d.default)})")))
        p.add_argument("--config", default=None, metavar="YAML", help=_literal(self.presets))
        p.add_argument("--print-config", action="store_true",
                       help="print the resolved config (defaults, preset, options, overrides) as YAML and exit")
        for opt, key in self._flags().items():
            d = docs[key]
            text = d.help or key
            sets = "" if opt == "--" + key.replace("_", "-") else f"; sets {key}"
            if d.type is bool:
                p.add_argument(opt, dest=_PREFIX + key, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=_literal(f"{text} (default: {_show(d.default)}{sets})"))
                continue
            kw: dict[str, Any] = {"dest": _PREFIX + key, "default": argparse.SUPPRESS}
            choices = d.choices
            if choices and all(isinstance(c, str) for c in choices):
                kw["choices"] = choices
            else:
                kw["metavar"] = opt.lstrip("-").replace("-", "_").upper()
            if _sequence(d.type):
                kw["nargs"] = "+"
            default = "required" if d.required else f"default: {_show(d.default)}"
            kw["help"] = _literal(f"{text} ({default}{sets})")
            p.add_argument(opt, **kw)
        for opt, (text, sets) in (self.switches or {}).items():
            shown_sets = ", ".join(f"{k}={_show(v)}" for k, v in sets.items())
            p.add_argument(opt, action=_SetKeys, sets=sets, help=_literal(f"{text} (sets {shown_sets})"))
        p.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug logging")
        if self.options:
            self.options(p)
        p.epilog = keys_help(shown, "config keys (--print-config shows the resolved values)")
        return p

    def command_line(self, cfg: Any) -> str:
        """A command line that gives ``cfg``: the program, the words, and the options and ``key=value`` overrides
        of every value that differs from the defaults (what a run records to be rerun)."""
        import shlex

        words = [self.prog] + [shlex.quote(str(_get(cfg, k))) for k in self.positionals]
        options = {k: o for o, k in self._flags().items()}
        for d in describe(_blank(self.config)):
            if d.key in self.positionals or _get(cfg, d.key) == d.default:
                continue
            value, opt = _get(cfg, d.key), options.get(d.key)
            if opt is None or value is None:
                words.append(shlex.quote(f"{d.key}={_show(value)}"))
            elif isinstance(value, bool):
                words.append(opt if value else "--no-" + opt[2:])
            elif isinstance(value, list | tuple):
                words += [opt, *(shlex.quote(str(v)) for v in value)]
            else:
                words += [opt, shlex.quote(str(value))]
        return " ".join(words)

    # -------------------------------------------------------------------------------- resolve
    def split(self, p: argparse.ArgumentParser, argv: list[str]) -> tuple[list[str], list[str]]:
        """(argv for argparse, the ``key=value`` overrides): a word is an override when it looks like
        ``dotted.key=...``, is not an existing path and is not the value of the option before it."""
        words, overrides = [], []
        takes_value = {s for a in p._actions for s in a.option_strings if a.nargs != 0}
        prev = None
        for w in argv:
            if OVERRIDE.match(w) and not os.path.exists(w) and prev not in takes_value:
                overrides.append(w)
            else:
                words.append(w)
            prev = w
        return words, overrides

    def resolve(self, args: argparse.Namespace, overrides: list[str] = ()) -> Any:
        """The config of parsed arguments: defaults < --config < options/words < key=value."""
        cfg = _blank(self.config)
        if args.config:
            try:
                data = self.load_preset(args.config)
            except MissingConfigError as e:
                raise ConfigError(f"{e} (--config: {self.presets})") from None
            cfg = from_dict(self.config, data, base=cfg)
        for dest, value in vars(args).items():
            if dest.startswith(_PREFIX):
                set_key(cfg, dest[len(_PREFIX):], value)
        if self.passthrough:  # words of keys this config does not have belong to the wrapped stage
            own = set(all_keys(cfg))
            foreign = [o for o in overrides if o.split("=", 1)[0].strip() not in own]
            overrides = [o for o in overrides if o not in foreign]
            set_key(cfg, self.passthrough, [*_get(cfg, self.passthrough), *foreign])
        apply_overrides(cfg, list(overrides))
        missing = [f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) is None
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if not getattr(args, "print_config", False):  # a word left empty (a default of "") is missing too
            missing += [k for k in self.positionals if k not in missing and _get(cfg, k) in ("", None, [], ())]
        if missing:
            names = {k: o for o, k in self._flags().items()}
            how = [names.get(k) or (k.upper() if k in self.positionals else f"{k}=...") for k in missing]
            raise ConfigError(f"{self.prog}: missing {', '.join(how)}")
        return self.check(cfg) if self.check else cfg

    def parse(self, argv: list[str] | None = None) -> tuple[Any, argparse.Namespace]:
        """(config, namespace) of a command line; ConfigError for a bad value or key."""
        p = self.parser()
        words, overrides = self.split(p, list(sys.argv[1:] if argv is None else argv))
        args = p.parse_intermixed_args(words)  # words may come between options
        args.overrides = overrides
        return self.resolve(args, overrides), args

    def main(self, argv: list[str] | None = None) -> int:
        """Parse, then ``--print-config`` or ``run``; config errors and failed preflights exit 2 in one line."""
        from annotate.log import setup_logging
        from annotate.preflight import PreflightError, report

        try:
            cfg, args = self.parse(argv)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if args.print_config:
            print_config(cfg)
            return 0
        setup_logging(args.verbose, default=self.log_level)
        try:
            result = self.run(cfg, args)
        except PreflightError as e:
            return report(e)
        except (ConfigError, *self.errors) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if isinstance(result, dict | list):
            if self.print_result:
                from annotate.files import json_text

                print(json_text(result, nonfinite_as_null=True))
            return 0
        return result if type(result) is int else 0  # None or a result object the stage printed itself


def dispatch(commands: dict[str, tuple[str, str]], argv: list[str] | None, prog: str, description: str) -> int:
    """``prog NAME ...``: runs command NAME (name -> ("module" or "module:function", one line of help)); the
    function (default ``cli``) takes the remaining words, and its module is imported only when NAME runs."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        width = max(map(len, commands))
        lines = [f"usage: {prog} {{{','.join(commands)}}} ...", "", description, "", "commands:"]
        lines += [f"  {n:<{width}}  {h}" for n, (_, h) in commands.items()]
        lines.append(f"\n{prog} NAME --help shows a command's options and config keys.")
        text = "\n".join(lines)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"{text}\n\nerror: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        print(text, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    module, _, function = commands[argv[0]][0].partition(":")
    return getattr(importlib.import_module(module), function or "cli")(argv[1:])


