"""RealEstate10K camera files: reading with validation, exact writing.

Line 1 is the video URL; every further line is ``timestamp_us fx fy cx cy 0 0`` followed by the 12
numbers of a row-major 3x4 world-to-camera matrix (see :mod:`annotate.camera` for conventions).
Every error names the file and the 1-based line. Intrinsics are checked here, before any frame is decoded:
a focal length that is not positive or too large for a normalised value (pixel units), or a principal point
far outside the image, makes the file malformed.

Also read here: the authors' evaluation layout ``camera_data/<name>.txt`` (written by their
``evaluation/glomap_evaluation.py`` set-up): no URL line, one row of 18 numbers per frame, ``fx fy cx cy 0 0``
in pixels of the crop followed by the 12 w2c values (:func:`parse_camera_data_text`).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annotate.camera import orthonormality_error
from annotate.files import atomic_write_text

NUM_COLUMNS = 19
CAMERA_DATA_COLUMNS = 18  # the evaluation layout: no timestamp column
DEFAULT_ROTATION_TOL = 1e-3
# Normalised intrinsics (fx, cx by width; fy, cy by height). A focal length above MAX_FOCAL is a field of view
# under 3 degrees: almost surely pixel units. The principal point may lie at most PP_MARGIN image sizes outside
# the image (RealEstate10K's is at the centre).
MAX_FOCAL = 20.0
PP_MARGIN = 0.5
_YOUTUBE_ID = re.compile(r"(?:v=|youtu\.be/|/embed/|/shorts/)([A-Za-z0-9_-]{6,})")


class CameraFileError(ValueError):
    """A malformed camera file; the message names the file and line."""

    def __init__(self, path: str | os.PathLike, line: int | None, reason: str):
        self.path, self.line, self.reason = str(path), line, reason
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")


@dataclass
class CameraTrajectory:
    url: str
    timestamps_us: np.ndarray  # int64 [F]
    intrinsics: np.ndarray  # float64 [F, 4], normalised fx fy cx cy
    w2c: np.ndarray  # float64 [F, 3, 4]

    def __len__(self) -> int:
        return len(self.timestamps_us)

    @property
    def youtube_id(self) -> str:
        return youtube_id(self.url)


def youtube_id(url: str) -> str:
    """The video id of a YouTube URL; '' when none can be parsed."""
    m = _YOUTUBE_ID.search(url or "")
    return m.group(1) if m else ""


def _check_intrinsics(intr: list[float], path: str | os.PathLike, line: int) -> None:
    for name, col, v in (("fx", 2, intr[0]), ("fy", 3, intr[1])):
        if v <= 0:
            raise CameraFileError(path, line, f"focal length {name} (column {col}) is {v:g}; it must be positive")
        if v > MAX_FOCAL:
            raise CameraFileError(path, line, f"focal length {name} (column {col}) is {v:g}, implausible for a "
                                              f"normalised value (at most {MAX_FOCAL:g}; pixel units?)")
    for name, col, v in (("cx", 4, intr[2]), ("cy", 5, intr[3])):
        if not -PP_MARGIN <= v <= 1 + PP_MARGIN:
            raise CameraFileError(path, line, f"principal point {name} (column {col}) is {v:g}, far outside the "
                                              f"image (normalised: 0..1, allowed {-PP_MARGIN:g}..{1 + PP_MARGIN:g})")


def _numbers(fields: list[str], first_col: int, path: str | os.PathLike, line: int) -> list[float]:
    """The finite numbers of one pose line's fields (``first_col``: the 1-based column of ``fields[0]``)."""
    vals = []
    for col, f in enumerate(fields, start=first_col):
        try:
            v = float(f)
        except ValueError:
            raise CameraFileError(path, line, f"column {col} {f!r} is not a number") from None
        if not math.isfinite(v):
            raise CameraFileError(path, line, f"column {col} is not finite ({f})")
        vals.append(v)
    return vals


def _check_rotation(pose: list[float], path: str | os.PathLike, line: int, rotation_tol: float) -> None:
    """``pose``: ``fx fy cx cy 0 0`` + 12 row-major w2c values."""
    err = float(orthonormality_error(np.array(pose[6:], np.float64).reshape(3, 4)[:, :3]))
    if err > rotation_tol:
        raise CameraFileError(path, line, f"rotation is not orthonormal (error {err:.3g} > tolerance "
                                          f"{rotation_tol:g})")


def parse_camera_text(text: str, path: str | os.PathLike = "<string>",
                      rotation_tol: float = DEFAULT_ROTATION_TOL) -> CameraTrajectory:
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise CameraFileError(path, 1 if lines else None, "empty file (expected a URL line and pose lines)")
    url = lines[0].strip()
    rows, stamps = [], []
    for n, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue  # tolerate a trailing blank line
        fields = line.split()
        if len(fields) != NUM_COLUMNS:
            raise CameraFileError(path, n, f"expected {NUM_COLUMNS} columns, found {len(fields)}")
        try:
            stamp = int(fields[0])
        except ValueError:
            raise CameraFileError(path, n, f"timestamp {fields[0]!r} is not an integer") from None
        vals = _numbers(fields[1:], 2, path, n)
        _check_intrinsics(vals[:4], path, n)
        _check_rotation(vals, path, n, rotation_tol)
        if stamps and stamp <= stamps[-1]:
            raise CameraFileError(path, n, f"timestamp {stamp} does not increase (previous {stamps[-1]})")
        stamps.append(stamp)
        rows.append(vals)
    if not rows:
        raise CameraFileError(path, None, "empty file (no pose lines after the URL)")
    arr = np.array(rows, np.float64)
    return CameraTrajectory(url, np.array(stamps, np.int64), arr[:, :4].copy(), arr[:, 6:].reshape(-1, 3, 4).copy())


def read_camera_text(path: str | os.PathLike) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise CameraFileError(path, None, f"cannot read ({e.__class__.__name__}: {e})") from None


def read_camera_file(path: str | os.PathLike, rotation_tol: float = DEFAULT_ROTATION_TOL) -> CameraTrajectory:
    return parse_camera_text(read_camera_text(path), path, rotation_tol)


def parse_camera_data_text(text: str, path: str | os.PathLike = "<string>",
                           rotation_tol: float = DEFAULT_ROTATION_TOL) -> tuple[np.ndarray, np.ndarray]:
    """The evaluation layout (module docstring): intrinsics ``[F, 4]`` as written (pixels) and w2c ``[F, 3, 4]``."""
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != CAMERA_DATA_COLUMNS:
            raise CameraFileError(path, n, f"expected {CAMERA_DATA_COLUMNS} columns (camera_data layout), "
                                           f"found {len(fields)}")
        vals = _numbers(fields, 1, path, n)
        _check_rotation(vals, path, n, rotation_tol)
        rows.append(vals)
    if not rows:
        raise CameraFileError(path, None, "no pose lines")
    arr = np.array(rows, np.float64)
    return arr[:, :4].copy(), arr[:, 6:].reshape(-1, 3, 4).copy()


def format_camera_text(traj: CameraTrajectory) -> str:
    """The file text: numbers with 9 decimals, as the released dataset writes them."""
    out = [traj.url]
    for ts, intr, w2c in zip(traj.timestamps_us, traj.intrinsics, np.asarray(traj.w2c).reshape(-1, 12)):
        nums = list(intr) + [0.0, 0.0] + list(w2c)
        out.append(f"{int(ts)} " + " ".join(f"{v:.9f}" for v in nums))
    return "\n".join(out) + "\n"


def write_camera_file(path: str | os.PathLike, traj: CameraTrajectory) -> None:
    atomic_write_text(path, format_camera_text(traj))


def format_camera_data_text(intrinsics_px: np.ndarray, c2w: np.ndarray) -> str:
    """The evaluation layout (what :func:`parse_camera_data_text` reads): per frame fx fy cx cy in pixels, 0 0,
    the row-major 3x4 w2c; 10 decimals, as the authors' evaluation writes it."""
    from annotate.camera import c2w_to_w2c

    c2w = np.asarray(c2w, np.float64)
    w2c = c2w_to_w2c(c2w)[:, :3, :].reshape(len(c2w), 12)
    rows = np.concatenate([np.asarray(intrinsics_px, np.float64).reshape(len(c2w), 4),
                           np.zeros((len(c2w), 2)), w2c], axis=1)
    return "\n".join(" ".join(f"{v:.10f}" for v in r) for r in rows) + "\n"


def write_camera_data_file(path: str | os.PathLike, intrinsics_px: np.ndarray, c2w: np.ndarray) -> None:
    atomic_write_text(path, format_camera_data_text(intrinsics_px, c2w))
