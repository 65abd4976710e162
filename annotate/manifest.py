"""The input clip manifest (CSV or Parquet): reading, writing and validation before any work.

Validation covers only what makes a run ill-defined: missing columns, empty / unsafe / duplicate clip ids,
empty or unsafe splits (ids and splits become file names). Problems of one clip's files (missing, corrupt,
malformed) are *not* validation errors: they become failed rows in the output (see :mod:`annotate.clip`).
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import defaultdict
from pathlib import Path

from annotate.files import atomic_write_text

REQUIRED = ("clip_id", "split", "pose_path", "video_path")
OPTIONAL = ("depth_path",)
SAFE_ID = re.compile(r"^[A-Za-z0-9_-]+$")


class ManifestError(ValueError):
    """The manifest cannot be run; ``problems`` lists every offending row, one line each."""

    def __init__(self, path: str | os.PathLike, problems: list[str]):
        self.path, self.problems = str(path), problems
        super().__init__(f"invalid clip manifest {path} ({len(problems)} problem(s)):\n  " + "\n  ".join(problems))


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    return str(v).strip()


def read_manifest(path: str | os.PathLike) -> tuple[list[dict], list[str]]:
    """Rows as dicts of stripped strings (``None``/NaN become ''), and the file's column names."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            cols = list(table.column_names)
            rows = table.to_pylist()
        else:
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                cols = [c.strip() for c in (reader.fieldnames or [])]
                rows = [{(k or "").strip(): v for k, v in r.items()} for r in reader]
    except (OSError, ValueError) as e:
        raise ManifestError(path, [f"cannot read the manifest ({e.__class__.__name__}: {e})"]) from None
    return [{k: _cell(v) for k, v in r.items() if k} for r in rows], cols


def validate(rows: list[dict], columns: list[str], path: str | os.PathLike = "<manifest>") -> None:
    """Raise :class:`ManifestError` listing every problem (row number = 1-based data row; CSV line = row + 1)."""
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise ManifestError(path, [f"missing column(s) {', '.join(missing)} (has: {', '.join(columns) or 'none'}; "
                                   f"required: {', '.join(REQUIRED)})"])
    problems: list[tuple[int, str]] = []
    seen: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows, start=1):
        cid, split = r.get("clip_id", ""), r.get("split", "")
        where = f"row {i} (clip_id {cid!r})"
        if not cid:
            problems.append((i, f"{where}: empty clip_id"))
        elif not SAFE_ID.match(cid):
            problems.append((i, f"{where}: clip_id has characters outside [A-Za-z0-9_-]"))
        else:
            seen[cid].append(i)
        if not split:
            problems.append((i, f"{where}: empty split"))
        elif not SAFE_ID.match(split):
            problems.append((i, f"{where}: split {split!r} has characters outside [A-Za-z0-9_-]"))
    for cid, where in seen.items():
        if len(where) > 1:
            for i in where:
                others = ", ".join(str(j) for j in where if j != i)
                problems.append((i, f"row {i} (clip_id {cid!r}): duplicate clip_id (also row(s) {others})"))
    if not rows:
        problems.append((0, "the manifest has no rows"))
    if problems:
        raise ManifestError(path, [p for _, p in sorted(problems, key=lambda x: x[0])])


def load(path: str | os.PathLike) -> list[dict]:
    """Read and validate; rows keep their paths as written (see :func:`annotate.clip.resolve_paths`)."""
    rows, cols = read_manifest(path)
    validate(rows, cols, path)
    return rows


def write_manifest(rows: list[dict], path: str | os.PathLike, columns: tuple[str, ...] = REQUIRED + OPTIONAL) -> None:
    """CSV, or Parquet when the suffix is ``.parquet``; atomic (temp file beside it, then rename)."""
    path = Path(path)
    if path.suffix.lower() != ".parquet":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(path, buf.getvalue())
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    pq.write_table(pa.table({c: pa.array([str(r.get(c, "")) for r in rows], pa.string()) for c in columns}), tmp)
    os.replace(tmp, path)
