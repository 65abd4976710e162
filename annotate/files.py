"""Atomic file writes shared by every stage: a temporary file beside the target, then a rename."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:  # a failed write (disk full, target is a directory) leaves no temporary file behind
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Pretty JSON (benchmarks, reports), written atomically; returns the path."""
    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")
    return Path(path)
