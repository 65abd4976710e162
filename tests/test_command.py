"""annotate/command.py: a command line generated from a typed config, checked against hand-written
expectations (precedence, words, switches, lists, errors, --print-config round trip)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from annotate.command import Command, dispatch
from annotate.config import ConfigError


@dataclass
class Inner:
    steps: int = 3  # inner steps


@dataclass
class Cfg:
    src: str  # input folder
    out: str = "out"  # output folder
    n: int = 4  # how many (100 % = all)
    mode: Literal["fast", "exact"] = "fast"  # the mode
    names: list[str] = field(default_factory=list)  # names
    progress: bool = True  # show progress
    inner: Inner = field(default_factory=Inner)


def _cmd(seen: list) -> Command:
    return Command(Cfg, lambda cfg, args: seen.append(cfg), "prog", "a test command", positionals=("src",),
                   flags={"--out": "out", "--n": "n", "--mode": "mode", "--names": "names",
                          "--progress": "progress", "--steps": "inner.steps"},
                   switches={"--quick": ("few fast steps", {"mode": "fast", "inner.steps": 1})})


def test_precedence_defaults_preset_options_overrides(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("n: 7\nout: from_preset\ninner: {steps: 9}\n")
    cfg, _ = _cmd([]).parse(["a", "--config", str(preset), "--n", "8", "n=11", "--steps", "5"])
    assert (cfg.src, cfg.out, cfg.n, cfg.inner.steps, cfg.mode) == ("a", "from_preset", 11, 5, "fast")
    cfg, _ = _cmd([]).parse(["--config", str(preset), "src=b"])
    assert (cfg.src, cfg.n, cfg.inner.steps) == ("b", 7, 9)


def test_words_switches_and_lists_between_options():
    cfg, _ = _cmd([]).parse(["--no-progress", "x", "--names", "p", "q", "inner.steps=2", "--mode", "exact"])
    assert (cfg.src, cfg.progress, cfg.names, cfg.inner.steps, cfg.mode) == ("x", False, ["p", "q"], 2, "exact")


def test_switch_sets_several_keys():
    cfg, _ = _cmd([]).parse(["s", "--mode", "exact", "--quick"])
    assert (cfg.mode, cfg.inner.steps) == ("fast", 1)
    assert _cmd([]).parse(["s", "--quick", "inner.steps=4"])[0].inner.steps == 4  # key=value still last


def test_override_like_words(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a=b").mkdir()  # an existing path that looks like key=value is a word
    assert _cmd([]).parse(["a=b"])[0].src == "a=b"
    assert _cmd([]).parse(["s", "--out", "n=3"])[0].out == "n=3"  # an option's value stays its value


def test_errors_name_the_key(capsys):
    with pytest.raises(ConfigError, match="missing SRC"):
        _cmd([]).parse(["--n", "2"])
    with pytest.raises(ConfigError, match="unknown config key 'stesp'.*inner.steps"):
        _cmd([]).parse(["s", "stesp=2"])
    with pytest.raises(ConfigError, match="n: expected an integer"):
        _cmd([]).parse(["s", "--n", "two"])
    assert _cmd([]).main(["s", "mode=slow"]) == 2
    assert "mode must be one of fast, exact" in capsys.readouterr().err


def test_main_runs_and_print_config_round_trips(tmp_path, capsys):
    seen: list = []
    assert _cmd(seen).main(["s", "--n", "6", "inner.steps=1"]) == 0
    assert seen[0] == Cfg(src="s", n=6, inner=Inner(1))
    assert _cmd(seen).main(["s", "--n", "6", "inner.steps=1", "--print-config"]) == 0
    assert len(seen) == 1  # printed, not run
    printed = tmp_path / "c.yaml"
    printed.write_text(capsys.readouterr().out)
    assert _cmd([]).parse(["--config", str(printed)])[0] == seen[0]


def test_command_line_gives_the_config_back():
    import shlex

    cfg, _ = _cmd([]).parse(["s p", "--n", "6", "--no-progress", "--names", "a", "b c", "inner.steps=9"])
    line = _cmd([]).command_line(cfg)
    assert line.startswith("prog 's p' ")
    assert _cmd([]).parse(shlex.split(line)[1:])[0] == cfg


def test_passthrough_collects_foreign_overrides():
    @dataclass
    class Wrap:
        steps: int = 2  # steps
        overrides: list[str] = field(default_factory=list)  # the wrapped stage's key=value words

    cmd = Command(Wrap, lambda cfg, args: None, "prog", passthrough="overrides")
    cfg, _ = cmd.parse(["steps=3", "optim.lr=1e-4", "run.x=1"])
    assert (cfg.steps, cfg.overrides) == (3, ["optim.lr=1e-4", "run.x=1"])
    with pytest.raises(ConfigError, match="unknown config key 'optim.lr'"):
        Command(Wrap, lambda cfg, args: None, "prog").parse(["optim.lr=1e-4"])


def test_help_lists_keys_with_types_defaults_and_help():
    text = " ".join(_cmd([]).parser().format_help().split())
    for needle in ("src (str, required) input folder", "n (int, default: 4) how many (100 % = all)",
                   "mode (choice, default: fast; choices: fast, exact)", "inner.steps (int, default: 3) inner steps",
                   "--steps STEPS inner steps (default: 3; sets inner.steps)",
                   "--n N how many (100 % = all) (default: 4)", "--progress, --no-progress"):
        assert needle in text, needle


def test_dispatch(capsys, monkeypatch):
    import sys
    import types

    calls = []
    mod = types.ModuleType("realcam_test_commands")  # a command module, imported by name when its command runs
    mod.cli = lambda argv: calls.append(("cli", argv)) or 0
    mod.other = lambda argv: calls.append(("other", argv)) or 3
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    cmds = {"go": (mod.__name__, "run it"), "alt": (f"{mod.__name__}:other", "the other")}
    assert dispatch(cmds, ["go", "x", "k=v"], "prog", "d") == 0
    assert dispatch(cmds, ["alt", "y"], "prog", "d") == 3
    assert calls == [("cli", ["x", "k=v"]), ("other", ["y"])]
    assert dispatch(cmds, ["nope"], "prog", "d") == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
