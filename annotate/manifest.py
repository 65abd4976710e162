"""The input clip manifest (CSV or Parquet): reading, writing and validation before any work.

Validation covers only what makes a run ill-defined: text that is not UTF-8, a column named twice, missing
columns, empty / unsafe / duplicate clip ids, empty or unsafe splits (ids and splits become file names), a
``depth_unit`` other than m/mm or without a ``depth_path``. Problems of one clip's files (missing, corrupt,
malformed) are *not* validation errors: they become failed rows in the output (see :mod:`annotate.clip`).
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import defaultdict
from pathlib import Path

from annotate.files import atomic_path, atomic_write_text

REQUIRED = ("clip_id", "split", "pose_path", "video_path")
OPTIONAL = ("depth_path", "depth_unit")
DEPTH_UNITS = ("m", "mm")  # depth_unit: what the numbers of an integer (or millimetre) depth file mean
SAFE_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_BAD_BYTE = re.compile("[\udc80-\udcff]")


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

            _refuse_repeated_columns(path, pq.read_schema(path).names)  # before pyarrow's own error
            table = pq.read_table(path)
            cols = list(table.column_names)
            rows = table.to_pylist()
        else:
            cols, rows = _read_csv(path)
            _refuse_repeated_columns(path, cols)
    except ManifestError:
        raise
    except (OSError, ValueError) as e:
        raise ManifestError(path, [f"cannot read the manifest ({e.__class__.__name__}: {e})"]) from None
    return [{k: _cell(v) for k, v in r.items() if k} for r in rows], cols


def _refuse_repeated_columns(path: Path, cols: list[str]) -> None:
    """A dict row keeps only the last of two equal column names: refuse rather than pick one silently."""
    twice = sorted({c for c in cols if c and cols.count(c) > 1})
    if twice:
        raise ManifestError(path, [f"column {c!r} appears {cols.count(c)} times (columns "
                                   f"{', '.join(str(i + 1) for i, x in enumerate(cols) if x == c)})" for c in twice])


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    """Header and rows; bytes that are not UTF-8 are reported by row and line (every such row), not by byte
    offset. Blank lines are skipped and do not count as rows."""
    text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")  # bad bytes -> U+DC80..U+DCFF
    reader = csv.reader(io.StringIO(text, newline=""))
    bad, header, rows, line = [], None, [], 1  # line: where the next record starts
    try:
        for rec in reader:
            if rec:
                hit = next((m for m in map(_BAD_BYTE.search, rec) if m), None)
                if hit:
                    where = f"the header (line {line})" if header is None else f"row {len(rows) + 1} (line {line})"
                    bad.append(f"{where}: not UTF-8 text (byte 0x{ord(hit.group()) - 0xDC00:02x}); "
                               "save the manifest as UTF-8")
                if header is None:
                    header = [c.strip() for c in rec]
                else:
                    rows.append(dict(zip(header, rec)) | {h: None for h in header[len(rec):]})
            line = reader.line_num + 1
    except csv.Error as e:
        raise ManifestError(path, [f"line {line}: not valid CSV ({e})"]) from None
    if bad:
        raise ManifestError(path, bad)
    return header or [], rows


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
        unit = r.get("depth_unit", "")
        if unit and unit not in DEPTH_UNITS:
            problems.append((i, f"{where}: depth_unit {unit!r} is not one of {', '.join(DEPTH_UNITS)}"))
        elif unit and not r.get("depth_path"):
            problems.append((i, f"{where}: depth_unit {unit!r} without a depth_path"))
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
    """Read and validate; rows keep their paths as written (see :func:`resolve_paths`)."""
    rows, cols = read_manifest(path)
    validate(rows, cols, path)
    return rows


PATH_COLUMNS = ("pose_path", "video_path", "depth_path")


def resolve_path(value, base: str | os.PathLike) -> str:
    """One manifest path cell as a usable path: relative paths are relative to the manifest's folder ``base``;
    an empty cell (or NaN from pandas) stays ''. A ``#key`` suffix (a clip inside a chunk file) is kept."""
    v = _cell(value)
    if not v:
        return ""
    p = Path(v)
    return str(p if p.is_absolute() else Path(base) / p)


def resolve_paths(row: dict, base: str | os.PathLike) -> dict:
    """A copy of ``row`` with its path columns resolved by :func:`resolve_path`."""
    row = dict(row)
    for key in PATH_COLUMNS:
        if key in row:
            row[key] = resolve_path(row[key], base)
        else:
            row[key] = ""
    return row


def relative_path(path: str | os.PathLike, manifest: str | os.PathLike) -> str:
    """How a manifest at ``manifest`` refers to ``path``: relative to the manifest's folder (the inverse of
    :func:`resolve_path`), so the manifest and its files can move together."""
    return os.path.relpath(Path(path).resolve(), Path(manifest).resolve().parent)


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

    with atomic_path(path) as tmp:
        pq.write_table(pa.table({c: pa.array([str(r.get(c, "")) for r in rows], pa.string()) for c in columns}), tmp)
