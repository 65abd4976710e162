"""The annotation folder of the contract: Parquet shards, the quantile filter, RealCam-I2V exports, manifest.json.

Crash safety: every file is written through :mod:`annotate.files` (a ``.tmp-*`` file beside it, never
``*.parquet``, renamed into place), so a killed job leaves only complete shards (plus temp files the next run
removes).
Damage after the fact (a truncated copy, a bad disk) is caught on start: :func:`damaged_shards` checks each
shard against the sha256 in manifest.json and, where it differs or is unrecorded, that it parses (shards carry
Parquet page checksums); ``run`` moves a damaged shard to ``OUT/quarantine/`` and processes its clips again.
A clip may briefly sit in two shards (a ``--retry-failed`` row written before the old shard is rewritten);
readers keep the row of the highest-numbered shard and :func:`finalize` removes the other.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from annotate import files
from annotate.log import get_logger

log = get_logger()

CLIPS_DIR = "clips"
EXPORT_DIR = "export"
QUARANTINE_DIR = "quarantine"
MANIFEST_JSON = "manifest.json"
TMP_PREFIX = files.TMP_PREFIX
SHARD_RE = re.compile(r"^part-(\d{5,})\.parquet$")
PENDING = "pending filter"  # filter_reason of ok rows until finalize() has run

SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("split", pa.string()), ("youtube_id", pa.string()), ("num_frames", pa.int32()),
    ("timestamps_us", pa.list_(pa.int64())),
    ("intrinsics", pa.list_(pa.list_(pa.float32(), 4))),
    ("w2c", pa.list_(pa.list_(pa.float32(), 12))),
    ("c2w_metric", pa.list_(pa.list_(pa.float32(), 16))),
    ("frame_scale", pa.list_(pa.float32())), ("frame_num_points", pa.list_(pa.int32())),
    ("scale", pa.float32()), ("scale_min", pa.float32()), ("scale_max", pa.float32()),
    ("num_points", pa.int32()), ("reprojection_error", pa.float32()),
    ("status", pa.string()), ("error", pa.string()), ("keep", pa.bool_()), ("filter_reason", pa.string()),
    ("seconds", pa.float32()),  # extra: worker wall time of the clip (triangulation + depth)
    ("cpu_seconds", pa.float32()),  # extra: worker CPU time of the clip (triangulation + depth)
])
_EXTRA = ("seconds", "cpu_seconds")  # not in the contract; shards of an older version may lack them
_STR = ("clip_id", "split", "youtube_id", "status", "error")
_NESTED = {"intrinsics": 4, "w2c": 12, "c2w_metric": 16}
_FLAT = {"timestamps_us": np.int64, "frame_scale": np.float32, "frame_num_points": np.int32}
_SCALAR = {"num_frames": np.int32, "scale": np.float32, "scale_min": np.float32, "scale_max": np.float32,
           "num_points": np.int32, "reprojection_error": np.float32, "seconds": np.float32,
           "cpu_seconds": np.float32}

# Field metadata in every shard (units, axes, the meaning of NaN), so the files explain themselves without the
# docs; the dataset card (data_manifests/DATASET_CARD.md) says the same.
_AXES = "OpenCV/COLMAP camera axes (x right, y down, z forward)"
_FIELD_DOC = {
    "clip_id": ("", "RealEstate10K clip id (camera file name)"),
    "youtube_id": ("", "YouTube video id of the clip (for leakage checks between splits)"),
    "num_frames": ("frames", "annotated camera lines F"),
    "timestamps_us": ("microseconds", "timestamp of each annotated camera line, from the start of the video; "
                      "a subset of the camera file's lines when only part of them had frames"),
    "intrinsics": ("normalised", "fx, fy, cx, cy per frame; fx and cx divided by the image width, fy and cy by "
                   "the height; the centre of pixel (0, 0) is at (0.5, 0.5)"),
    "w2c": ("relative (RealEstate10K SfM units)", f"row-major 3x4 world-to-camera per frame as in the camera "
            f"file; {_AXES}"),
    "c2w_metric": ("metres", f"row-major 4x4 camera-to-world per frame relative to frame 0, translation "
                   f"multiplied by scale; {_AXES}; all NaN when status is failed"),
    "frame_scale": ("metres per relative unit", "per-frame median of metric depth / triangulated depth; NaN where "
                    "the frame has too few valid points"),
    "frame_num_points": ("points", "valid depth ratios behind each frame scale"),
    "scale": ("metres per relative unit", "median of the valid frame scales: metric translation = relative "
              "translation x scale; NaN when status is failed"),
    "scale_min": ("metres per relative unit", "smallest valid frame scale; NaN when status is failed"),
    "scale_max": ("metres per relative unit", "largest valid frame scale; NaN when status is failed"),
    "num_points": ("points", "triangulated 3D points of the clip"),
    "reprojection_error": ("pixels", "mean reprojection error of the triangulated points; NaN when none"),
    "status": ("", "ok or failed"),
    "error": ("", "one-line reason of a failed row, empty when ok"),
    "keep": ("", "passed the dataset-wide quantile filter on scale_min and scale_max"),
    "filter_reason": ("", "why keep is false: the bound it broke, or failed"),
    "seconds": ("seconds", "worker wall time of the clip"),
    "cpu_seconds": ("seconds", "worker CPU time of the clip"),
}
SCHEMA = pa.schema([f.with_metadata({"unit": _FIELD_DOC[f.name][0], "description": _FIELD_DOC[f.name][1]})
                    if f.name in _FIELD_DOC else f for f in SCHEMA],
                   metadata={"conventions": f"{_AXES}; matrices row-major; metric units metres; NaN marks a "
                                            "value that could not be computed (see status / error)",
                             "contract": "data_manifests/annotation-contract.md"})


# ------------------------------------------------------------------------------------------------ files


def clean_temp(out: str | os.PathLike) -> int:
    """Remove temp files a killed run left behind (call only while holding the folder's lock)."""
    out = Path(out)
    return sum(files.clean_temp(d) for d in (out, out / CLIPS_DIR, out / EXPORT_DIR) if d.is_dir())


def list_shards(out: str | os.PathLike) -> list[tuple[int, Path]]:
    d = Path(out) / CLIPS_DIR
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := SHARD_RE.match(p.name))]
    return sorted(found)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_shard(out: Path, index: int, table: pa.Table) -> Path:
    dest = Path(out) / CLIPS_DIR / f"part-{index:05d}.parquet"
    dest.parent.mkdir(parents=True, exist_ok=True)
    # page checksums: a flipped byte inside a shard fails the start-up check instead of reading as a value
    with files.atomic_path(dest) as tmp:
        pq.write_table(table.cast(SCHEMA), tmp, compression="zstd", write_page_checksum=True)
    return dest


# ------------------------------------------------------------------------------------------------ damage


class ShardError(RuntimeError):
    """Damaged shards in an output folder (the message names each one)."""


def shard_problem(path: str | os.PathLike) -> str:
    """'' if the shard reads completely with the contract's columns, else what is wrong (one line)."""
    try:
        t = pq.read_table(path, page_checksum_verification=True)
    except Exception as e:  # noqa: BLE001 - ArrowInvalid, OSError, ...: any of them means unreadable
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return f"does not parse ({e.__class__.__name__}: {msg})"
    missing = [f.name for f in SCHEMA if f.name not in t.column_names and f.name not in _EXTRA]
    if missing:
        return f"lacks column(s) {', '.join(missing)}"
    if t.schema.field("clip_id").type != pa.string() or t.column("clip_id").null_count:
        return "clip_id is not a string column without nulls"
    return ""


def damaged_shards(out: str | os.PathLike) -> list[tuple[Path, str]]:
    """(shard, reason) for every damaged shard. A shard whose sha256 matches manifest.json is intact; one that
    differs or is not recorded (written by a run that did not reach its final pass, or rewritten by an
    interrupted final pass) must parse completely, page checksums included."""
    out = Path(out)
    recorded = {s.get("path"): s.get("sha256") for s in read_manifest_json(out).get("shards", [])
                if isinstance(s, dict)}
    bad = []
    for _, path in list_shards(out):
        rel = f"{CLIPS_DIR}/{path.name}"
        sha = sha256_file(path)
        if recorded.get(rel) == sha:
            continue
        problem = shard_problem(path)
        if problem:
            why = "its sha256 differs from manifest.json" if rel in recorded else "not in manifest.json"
            bad.append((path, f"{problem}; {why}"))
        elif rel in recorded:
            log.info("%s differs from its sha256 in manifest.json but reads completely; keeping it", path)
    return bad


def quarantine_damaged(out: str | os.PathLike) -> list[dict]:
    """Move damaged shards to ``OUT/quarantine/<name>.damaged`` (call only while holding the folder's lock);
    their clips then count as not done. The suffix keeps globs for ``*.parquet`` (readers, the contract's
    validator, which also scans manifest.json for such names) off them. Returns entries for the run history."""
    out = Path(out)
    moved = []
    for path, reason in damaged_shards(out):
        qdir = out / QUARANTINE_DIR
        qdir.mkdir(exist_ok=True)
        dest, k = qdir / f"{path.name}.damaged", 0
        while dest.exists():  # a later shard with the same index was damaged before
            k += 1
            dest = qdir / f"{path.name}.{k}.damaged"
        os.replace(path, dest)
        log.warning("%s is damaged (%s): moved to %s; its clips are processed again", path, reason, dest)
        moved.append({"moved": f"{CLIPS_DIR}/{path.name} -> {dest.relative_to(out).as_posix()}", "reason": reason})
    return moved


def check_shards(out: str | os.PathLike) -> None:
    """Raise :class:`ShardError` naming each damaged shard (for readers, which must not move files)."""
    bad = damaged_shards(out)
    if bad:
        names = "; ".join(f"{p} {why}" for p, why in bad)
        raise ShardError(f"{len(bad)} damaged shard(s): {names}. Rerun `python -m annotate run` on this folder: "
                         f"it moves them to {Path(out) / QUARANTINE_DIR} and annotates their clips again")


# ------------------------------------------------------------------------------------------------ rows


def _nested_list(arrays: list, width: int) -> pa.Array:
    """Per-row ``[F, width]`` arrays -> ``list<fixed_size_list<float32, width>>``."""
    mats = [np.asarray(a, np.float32).reshape(-1, width) for a in arrays]
    flat = np.concatenate([m.reshape(-1) for m in mats]) if mats else np.zeros(0, np.float32)
    offsets = np.concatenate([[0], np.cumsum([len(m) for m in mats])]).astype(np.int32)
    inner = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), width)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), inner)


def _flat_list(arrays: list, dtype) -> pa.Array:
    vals = [np.asarray(a, dtype).reshape(-1) for a in arrays]
    flat = np.concatenate(vals) if vals else np.zeros(0, dtype)
    offsets = np.concatenate([[0], np.cumsum([len(v) for v in vals])]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat))


def rows_to_table(rows: list[dict]) -> pa.Table:
    """Contract rows (as :func:`annotate.clip.finish_stage` returns them) -> a table with the exact schema.
    ``keep``/``filter_reason`` are provisional until :func:`finalize`."""
    cols = {c: pa.array([str(r.get(c, "") or "") for r in rows], pa.string()) for c in _STR}
    for c, w in _NESTED.items():
        cols[c] = _nested_list([r.get(c, ()) for r in rows], w)
    for c, dt in _FLAT.items():
        cols[c] = _flat_list([r.get(c, ()) for r in rows], dt)
    for c, dt in _SCALAR.items():
        default = np.nan if np.issubdtype(dt, np.floating) else 0
        cols[c] = pa.array(np.array([r.get(c, default) for r in rows], dt))
    cols["keep"] = pa.array([False] * len(rows), pa.bool_())
    cols["filter_reason"] = pa.array(["failed" if r.get("status") != "ok" else PENDING for r in rows], pa.string())
    return pa.table({f.name: cols[f.name] for f in SCHEMA}, schema=SCHEMA)


class ShardWriter:
    """Buffers finished rows and writes them as new shards of at most ``max_rows`` rows."""

    def __init__(self, out: str | os.PathLike, max_rows: int):
        self.out, self.max_rows = Path(out), max(1, int(max_rows))
        shards = list_shards(out)
        self.next_index = shards[-1][0] + 1 if shards else 0
        self.buffer: list[dict] = []

    def add(self, row: dict) -> None:
        self.buffer.append(row)
        if len(self.buffer) >= self.max_rows:
            self.flush()

    def flush(self) -> None:
        while self.buffer:
            chunk, self.buffer = self.buffer[:self.max_rows], self.buffer[self.max_rows:]
            path = write_shard(self.out, self.next_index, rows_to_table(chunk))
            log.info("wrote %s (%d rows)", path, len(chunk))
            self.next_index += 1


# ------------------------------------------------------------------------------------------------ reading


def latest_rows(out: str | os.PathLike, columns: list[str] | None = None) -> dict[str, tuple[int, int, dict]]:
    """clip_id -> (shard index, row index, row dict of ``columns``) of the row that counts (latest shard wins)."""
    columns = list(dict.fromkeys(["clip_id"] + list(columns or [])))
    found = {}
    for n, path in list_shards(out):
        t = pq.read_table(path, columns=columns)
        for i, row in enumerate(t.to_pylist()):
            found[row["clip_id"]] = (n, i, row)
    return found


def read_table(out: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """All rows that count (deduplicated), in shard order."""
    win = latest_rows(out)
    parts = []
    for n, path in list_shards(out):
        t = pq.read_table(path, columns=columns if columns is None or "clip_id" in columns else ["clip_id"] + columns)
        mask = [win[c][:2] == (n, i) for i, c in enumerate(t.column("clip_id").to_pylist())]
        parts.append(t.filter(pa.array(mask, pa.bool_())))
    if not parts:
        return SCHEMA.empty_table() if columns is None else SCHEMA.empty_table().select(columns)
    return pa.concat_tables(parts)


# ------------------------------------------------------------------------------------------------ filter


@dataclass
class Thresholds:
    quantile: float
    scale_max: tuple[float, float] | None = None
    scale_min: tuple[float, float] | None = None

    @classmethod
    def compute(cls, scale_max: np.ndarray, scale_min: np.ndarray, q: float) -> Thresholds:
        """Contract step 6 over the ok rows' float32 values, numpy's default ('linear') quantiles."""
        smax, smin = np.asarray(scale_max, np.float64), np.asarray(scale_min, np.float64)
        good = np.isfinite(smax) & np.isfinite(smin)
        if not good.any():
            return cls(q)
        qs = [q, 1 - q]
        return cls(q, tuple(float(x) for x in np.quantile(smax[good], qs)),
                   tuple(float(x) for x in np.quantile(smin[good], qs)))

    def reason(self, status: str, smax: float, smin: float) -> str:
        """'' when kept, else why not (each broken bound, with the value and the threshold)."""
        if status != "ok":
            return "failed"
        if self.scale_max is None:
            return "no thresholds"
        lo_tag, hi_tag = f"q{100 * self.quantile:02g}", f"q{100 * (1 - self.quantile):02g}"
        out = []
        for name, v, (lo, hi) in (("scale_max", smax, self.scale_max), ("scale_min", smin, self.scale_min)):
            if not np.isfinite(v):
                out.append(f"{name} not finite")
            elif v < lo:
                out.append(f"{name} below {lo_tag} ({v:.6g} < {lo:.6g})")
            elif v > hi:
                out.append(f"{name} above {hi_tag} ({v:.6g} > {hi:.6g})")
        return "; ".join(out)

    def to_json(self) -> dict:
        return {"quantile": self.quantile, "method": "linear",
                "thresholds": {"scale_max": list(self.scale_max) if self.scale_max else [None, None],
                               "scale_min": list(self.scale_min) if self.scale_min else [None, None]}}


def error_kind(error: str) -> str:
    """The reason's category: the text before the first ':' (clip.py's errors start with it)."""
    return error.split(":", 1)[0].strip() or "unknown"


@dataclass
class Summary:
    total: int = 0
    by_status: dict = field(default_factory=dict)
    by_split: dict = field(default_factory=dict)
    kept: int = 0
    kept_by_split: dict = field(default_factory=dict)
    failure_reasons: dict = field(default_factory=dict)
    thresholds: Thresholds | None = None
    shards: list = field(default_factory=list)
    unknown_ids: int = 0  # rows of clips not in the current input manifest
    export_filled_frames: int = 0  # ok clips' frames without a scale, given the clip's scale in export/


def finalize(out: str | os.PathLike, quantile: float, meta: dict | None = None, run: dict | None = None,
             manifest_ids: set[str] | None = None) -> Summary:
    """The dataset-wide pass after all clips: dedupe, quantile filter (keep / filter_reason), atomic shard
    rewrites where anything changed, exports, and ``manifest.json`` (``meta`` merged in, ``run`` appended
    to the run history). Cheap to rerun; it is rerun whenever a job resumes or clips are added."""
    out = Path(out)
    win = latest_rows(out, ["split", "status", "error", "scale_min", "scale_max"])
    rows = [r for _, _, r in win.values()]
    ok = [r for r in rows if r["status"] == "ok"]
    th = Thresholds.compute(np.array([r["scale_max"] for r in ok], np.float64),
                            np.array([r["scale_min"] for r in ok], np.float64), quantile)

    s = Summary(thresholds=th)
    scales: dict[str, dict[str, np.ndarray]] = {}
    kept: dict[str, list[str]] = {}
    for n, path in list_shards(out):
        old = pq.read_table(path)
        ids = old.column("clip_id").to_pylist()
        mask = np.array([win[c][:2] == (n, i) for i, c in enumerate(ids)], bool)
        t = old.filter(pa.array(mask))
        for f in SCHEMA:  # shards of an older version may lack an extra column (_EXTRA)
            if f.name not in t.column_names:
                t = t.append_column(f, pa.nulls(t.num_rows, f.type))
        if t.num_rows == 0:
            path.unlink()  # every row superseded by a later shard
            log.info("removed %s (all rows superseded)", path)
            continue
        sc = t.select(["clip_id", "split", "status", "error", "scale", "scale_min", "scale_max"]).to_pylist()
        reasons = [th.reason(r["status"], r["scale_max"], r["scale_min"]) for r in sc]
        t = t.set_column(t.schema.get_field_index("keep"), "keep", pa.array([not x for x in reasons], pa.bool_()))
        t = t.set_column(t.schema.get_field_index("filter_reason"), "filter_reason", pa.array(reasons, pa.string()))
        t = t.select(SCHEMA.names).cast(SCHEMA)
        if not t.equals(old):
            write_shard(out, n, t)
        s.shards.append({"path": f"{CLIPS_DIR}/{path.name}", "rows": t.num_rows, "sha256": sha256_file(path)})
        fs = t.column("frame_scale").to_pylist()
        for r, reason, f in zip(sc, reasons, fs):
            split = r["split"]
            s.total += 1
            s.by_split[split] = s.by_split.get(split, 0) + 1
            s.by_status[r["status"]] = s.by_status.get(r["status"], 0) + 1
            if r["status"] == "ok":
                # the export fills frames without a scale with the clip's scale (the authors' loader indexes
                # it without a NaN check); the Parquet keeps the NaN
                a = np.array(f, np.float32)
                bad = ~np.isfinite(a)
                s.export_filled_frames += int(bad.sum())
                a[bad] = np.float32(r["scale"])
                scales.setdefault(split, {})[r["clip_id"]] = a
            else:
                s.failure_reasons[error_kind(r["error"])] = s.failure_reasons.get(error_kind(r["error"]), 0) + 1
            if not reason:
                kept.setdefault(split, []).append(r["clip_id"])
    s.by_status = {"ok": s.by_status.get("ok", 0), "failed": s.by_status.get("failed", 0)}
    s.kept = sum(len(v) for v in kept.values())
    s.kept_by_split = {sp: len(kept.get(sp, [])) for sp in sorted(s.by_split)}
    s.failure_reasons = dict(Counter(s.failure_reasons).most_common())
    if manifest_ids is not None:
        s.unknown_ids = len(set(win) - manifest_ids)
    write_exports(out, s.by_split, scales, kept)
    write_manifest_json(out, s, meta or {}, run)
    return s


def write_exports(out: Path, splits: dict, scales: dict, kept: dict) -> None:
    """RealCam-I2V files per split: ok clips' frame scales (npz of a dict) and the kept ids."""
    exp = out / EXPORT_DIR
    exp.mkdir(parents=True, exist_ok=True)
    for split in splits:
        d = {k: scales.get(split, {})[k] for k in sorted(scales.get(split, {}))}
        with files.atomic_path(exp / f"{split}_per_frame_scale.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, d)  # a file object: np.savez would append '.npz' to a path
        files.atomic_write_text(exp / f"{split}_valid_list.txt", "".join(f"{c}\n" for c in sorted(kept.get(split, []))))
    for p in exp.iterdir():  # files of splits that no longer have rows
        m = re.match(r"^(.*)_(per_frame_scale\.npz|valid_list\.txt)$", p.name)
        if m and m.group(1) not in splits:
            p.unlink()


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def read_manifest_json(out: str | os.PathLike) -> dict:
    p = Path(out) / MANIFEST_JSON
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def write_manifest_json(out: Path, s: Summary, meta: dict, run: dict | None) -> dict:
    old = read_manifest_json(out)
    runs = list(old.get("runs", []))
    if run is not None:
        runs.append(run)
    mj = {"format": "realcam-annotation/1", "created": old.get("created", _now()), "updated": _now(),
          **{k: v for k, v in old.items() if k in ("input_manifest", "config", "versions", "depth")},
          **meta,
          "rows": {"total": s.total, "by_status": s.by_status, "by_split": dict(sorted(s.by_split.items())),
                   "kept": s.kept, "kept_by_split": s.kept_by_split, "rows_not_in_input_manifest": s.unknown_ids},
          "filter": s.thresholds.to_json() | {"kept": s.kept},
          "failure_reasons": s.failure_reasons,
          "shards": s.shards,
          "exports": {sp: {"per_frame_scale": f"{EXPORT_DIR}/{sp}_per_frame_scale.npz",
                           "valid_list": f"{EXPORT_DIR}/{sp}_valid_list.txt"} for sp in sorted(s.by_split)},
          "export_filled_frames": s.export_filled_frames,
          "runs": runs}
    files.write_json(out / MANIFEST_JSON, mj, allow_nan=False)
    return mj

