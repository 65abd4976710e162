"""The one atomic writer every stage uses, and the one JSON sanitiser.

A file is written to a temporary file in the target's folder (named ``.tmp-*``, so globs for the real names
such as ``*.parquet`` never see it), flushed to disk (fsync), then renamed over the target (``os.replace``,
atomic on one file system): readers see the old file or the new one, never half of one. A failed write
removes its temporary file; one left by a killed process is removed by :func:`clean_temp`.

Forms: :func:`atomic_write_bytes`, :func:`atomic_write_text`, :func:`write_json`, and :func:`atomic_path` for
writers that need a file name (pyarrow, PyAV, ``np.save``, ``torch.save``, safetensors).
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

TMP_PREFIX = ".tmp-"
_counter = itertools.count()  # two writes of one name in one process (threads) get different temp files


def temp_path(path: str | os.PathLike, keep_suffix: bool = False) -> Path:
    """``<folder>/.tmp-<name>.<pid>.<n>``; with ``keep_suffix`` ``<folder>/.tmp-<stem>.<pid>.<n><suffix>`` for
    writers that pick the format from the suffix (PyAV) or append one when it is missing (``np.save``)."""
    path = Path(path)
    tag = f"{os.getpid()}.{next(_counter)}"
    name = f"{path.stem}.{tag}{path.suffix}" if keep_suffix else f"{path.name}.{tag}"
    return path.with_name(TMP_PREFIX + name)


@contextmanager
def atomic_path(path: str | os.PathLike, *, keep_suffix: bool = False) -> Iterator[Path]:
    """``with atomic_path(dest) as tmp: writer(tmp)``: on leaving the block the file ``tmp`` is synced and
    renamed to ``dest``; on an exception it is removed and ``dest`` is left as it was. Creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path, keep_suffix)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:  # after a rename there is nothing left to remove
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` so readers see the old file or the new one, never half of it."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def clean_temp(folder: str | os.PathLike) -> int:
    """Remove the temp files killed writers left in ``folder`` (not below it); returns how many. Call it only
    while no other process writes there (the annotate job holds its folder's lock)."""
    n = 0
    for p in Path(folder).glob(f"{TMP_PREFIX}*"):
        if p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n


# ------------------------------------------------------------------------------------------------ JSON


def json_safe(obj: Any, *, nonfinite_as_null: bool = False) -> Any:
    """``obj`` with numpy arrays and scalars as lists and Python numbers, paths as strings and tuples as lists;
    with ``nonfinite_as_null`` NaN and infinities become ``None`` (JSON null) instead of the non-standard
    ``NaN``/``Infinity`` tokens. Anything else not JSON-serialisable raises ``TypeError`` naming its type."""
    if isinstance(obj, dict):
        return {k: json_safe(v, nonfinite_as_null=nonfinite_as_null) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v, nonfinite_as_null=nonfinite_as_null) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist(), nonfinite_as_null=nonfinite_as_null)
    if isinstance(obj, np.generic):
        return json_safe(obj.item(), nonfinite_as_null=nonfinite_as_null)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, float) and nonfinite_as_null and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def json_text(obj: Any, *, indent: int | None = 1, nonfinite_as_null: bool = False, allow_nan: bool = True) -> str:
    """JSON of :func:`json_safe` (``obj``); ``allow_nan=False`` raises ``ValueError`` on a NaN left in it."""
    return json.dumps(json_safe(obj, nonfinite_as_null=nonfinite_as_null), indent=indent, allow_nan=allow_nan)


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1, nonfinite_as_null: bool = False,
               allow_nan: bool = True) -> Path:
    """:func:`json_text` plus a newline, written atomically (benchmarks, reports, settings); returns the path."""
    return atomic_write_text(path, json_text(obj, indent=indent, nonfinite_as_null=nonfinite_as_null,
                                             allow_nan=allow_nan) + "\n")
