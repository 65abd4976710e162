"""Preflight checks shared by every entry point: does each input exist and have the expected kind?

An entry point collects every problem in one :class:`Problems` before it starts a model, Ray, DeepSpeed or a
process group and before it writes anything, then reports them all in one message (exit code 2), each with
its fix. The checks here know the annotation data contract (manifests, annotation folders); the trainer's and
evaluator's own checks (checkpoints, launch, trajectories) live beside their entry points and use these.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

EXIT_CODE = 2  # the exit code of a failed preflight (the same as a config error)


class PreflightError(ValueError):
    """Every problem a preflight found, in one message."""

    def __init__(self, message: str, problems: list[tuple[str, str]]):
        super().__init__(message)
        self.problems = problems


@dataclass
class Problems:
    """What is wrong and how to fix it, collected over all checks of one command."""

    command: str
    items: list[tuple[str, str]] = field(default_factory=list)  # (problem, fix)

    def add(self, problem: str, fix: str = "") -> None:
        self.items.append((problem, fix))

    def __bool__(self) -> bool:
        return bool(self.items)

    def message(self) -> str:
        n = len(self.items)
        if n == 1:  # one line, as every other error of the project
            problem, fix = self.items[0]
            return f"{problem}; {fix}" if fix else problem
        lines = [f"{self.command}: {n} problem{'s' if n != 1 else ''} found before starting (nothing was written):"]
        for problem, fix in self.items:
            lines.append(f"  - {problem}")
            if fix:
                lines.append(f"    fix: {fix}")
        return "\n".join(lines)

    def raise_if_any(self) -> None:
        if self.items:
            raise PreflightError(self.message(), list(self.items))


def report(err: PreflightError) -> int:
    """Print a failed preflight to stderr; the exit code to return."""
    print(f"error: {err}", file=sys.stderr)
    return EXIT_CODE


def _what(key: str, path: str | os.PathLike) -> str:
    return f"{key} {str(path)!r}" if key else repr(str(path))


def need_file(problems: Problems, path: str | os.PathLike, key: str, fix: str = "",
              suffixes: tuple[str, ...] = ()) -> bool:
    """``path`` is an existing file (with one of ``suffixes``, when given)."""
    p = Path(path)
    if not str(path):
        problems.add(f"{key} is empty", fix)
        return False
    if not p.exists():
        problems.add(f"{_what(key, path)}: no such file", fix)
        return False
    if not p.is_file():
        problems.add(f"{_what(key, path)} is a folder, expected a file", fix)
        return False
    if suffixes and p.suffix.lower() not in suffixes:
        problems.add(f"{_what(key, path)}: expected a {' / '.join(suffixes)} file", fix)
        return False
    if not os.access(p, os.R_OK):
        problems.add(f"{_what(key, path)}: not readable", fix or "fix its permissions")
        return False
    return True


def need_folder(problems: Problems, path: str | os.PathLike, key: str, fix: str = "",
                contains: tuple[str, ...] = ()) -> bool:
    """``path`` is an existing folder holding every name in ``contains``."""
    p = Path(path)
    if not str(path):
        problems.add(f"{key} is empty", fix)
        return False
    if not p.exists():
        problems.add(f"{_what(key, path)}: no such folder", fix)
        return False
    if not p.is_dir():
        problems.add(f"{_what(key, path)} is a file, expected a folder", fix)
        return False
    missing = [c for c in contains if not (p / c).exists()]
    if missing:
        problems.add(f"{_what(key, path)} has no {', '.join(missing)}", fix)
        return False
    return True


def need_manifest(problems: Problems, path: str | os.PathLike, key: str, fix: str = "") -> list[dict] | None:
    """A clip manifest (CSV or Parquet) that reads and validates; its rows, or None."""
    from annotate.manifest import ManifestError, load

    if not need_file(problems, path, key, fix or "give the clip manifest (python -m annotate index or synth "
                     "writes one; see data_manifests/README.md)", (".csv", ".parquet")):
        return None
    try:
        return load(path)
    except ManifestError as e:
        problems.add(f"{key}: {e}", "fix the manifest rows listed")
        return None


def need_annotation_dir(problems: Problems, path: str | os.PathLike, key: str, fix: str = "") -> bool:
    """An annotation job's output folder: clips/ with at least one Parquet shard."""
    fix = fix or ("give the output folder of `python -m annotate run MANIFEST OUT` (it holds clips/*.parquet); "
                  "`make annotate` writes the sample's to outputs/sample_annotation")
    if not need_folder(problems, path, key, fix, contains=("clips",)):
        return False
    if not any(Path(path, "clips").glob("*.parquet")):
        problems.add(f"{_what(key, path)}: clips/ holds no *.parquet shard", fix)
        return False
    return True


def need_depth_model(problems: Problems, spec: str | None, key: str) -> bool:
    """A Depth Anything V2 model given as a local folder holds its ``config.json``; a hub id (org/name) is left to
    the loader (it may be in the local cache, and nothing is downloaded here)."""
    if not spec or not (spec.startswith(("/", "./", "../", "~")) or Path(spec).exists()):
        return True
    return need_folder(problems, spec, key, "a Depth Anything V2 metric folder (train/assets.md) or a hub id",
                       contains=("config.json",))


def need_tokenizer(problems: Problems, path: str | os.PathLike, key: str) -> bool:
    """A local CLIP tokenizer folder (what transformers.CLIPTokenizer reads offline)."""
    return need_folder(problems, path, key, "download it (train/assets.md, 'CLIP tokenizer'): huggingface-cli "
                       "download laion/CLIP-ViT-H-14-laion2B-s32B-b79K vocab.json merges.txt --local-dir "
                       f"{path or 'pretrained/open_clip_tokenizer'}", contains=("vocab.json", "merges.txt"))


def need_output_folder(problems: Problems, path: str | os.PathLike, key: str) -> bool:
    """An output folder that exists as a writable folder or can be created (nothing is created here)."""
    out = Path(path)
    if not str(path):
        problems.add(f"{key} is empty", "give an output folder")
        return False
    if out.exists() and not out.is_dir():
        problems.add(f"{_what(key, path)} exists and is not a folder", "give a new or an existing output folder")
        return False
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        problems.add(f"cannot create the output folder {out}: {probe} is not a folder", "give another path")
        return False
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "is read-only" if probe == out else f"cannot be created ({probe} is read-only)"
        problems.add(f"the output folder {out} {what}", "give a folder you can write to")
        return False
    return True
