"""Reading ground-truth camera files for evaluation.

Two layouts are accepted, told apart by the first line:

- a RealEstate10K camera file (first line a URL, then ``timestamp fx fy cx cy 0 0`` + 12 w2c values,
  intrinsics normalised), read with :func:`annotate.re10k.read_camera_file`;
- the authors' evaluation layout ``camera_data/<name>.txt``: no URL line, one row of 18 numbers per
  frame, ``fx fy cx cy 0 0`` in pixels of the crop followed by the 12 w2c values, read with
  :func:`annotate.re10k.parse_camera_data_text`.

Both give a :class:`GroundTruthCamera` with c2w poses and intrinsics; ``intrinsics_normalized`` says
whether the intrinsics still need the frame size (:func:`GroundTruthCamera.intrinsics_px`).

Rotations in these files are orthonormal only to ~1e-8 (9 decimals); after the tolerance check each is
replaced by its nearest rotation (polar decomposition), so the metrics see true rotations.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annotate.camera import intrinsics_to_pixels, nearest_rotation, w2c_to_c2w
from annotate.re10k import (
    CAMERA_DATA_COLUMNS,
    DEFAULT_ROTATION_TOL,
    parse_camera_data_text,
    parse_camera_text,
    read_camera_text,
)


@dataclass
class GroundTruthCamera:
    path: str
    w2c: np.ndarray  # [F, 3, 4]
    intrinsics: np.ndarray  # [F, 4] fx fy cx cy (normalised or pixels, see intrinsics_normalized)
    intrinsics_normalized: bool

    def __len__(self) -> int:
        return len(self.w2c)

    @property
    def c2w(self) -> np.ndarray:
        return w2c_to_c2w(self.w2c)

    def intrinsics_px(self, width: int, height: int) -> np.ndarray:
        """Pixel fx, fy, cx, cy of every frame for frames of the given size."""
        if self.intrinsics_normalized:
            return intrinsics_to_pixels(self.intrinsics, width, height)
        return self.intrinsics.copy()


def _orthonormalized(w2c: np.ndarray) -> np.ndarray:
    out = np.array(w2c, np.float64, copy=True)
    out[..., :3, :3] = nearest_rotation(out[..., :3, :3])
    return out


def load_camera(path: str | os.PathLike, rotation_tol: float = DEFAULT_ROTATION_TOL) -> GroundTruthCamera:
    """Read a RealEstate10K camera file or a ``camera_data`` file (see module docstring)."""
    path = Path(path)
    text = read_camera_text(path)
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    try:
        [float(f) for f in first.split()]
        numeric_first = bool(first.split())
    except ValueError:
        numeric_first = False
    if numeric_first and len(first.split()) == CAMERA_DATA_COLUMNS:
        intr, w2c = parse_camera_data_text(text, path, rotation_tol)
        # The authors assert pixel intrinsics (fx, fy > 10) in this layout; tolerate normalised ones.
        return GroundTruthCamera(str(path), _orthonormalized(w2c), intr, bool(np.all(intr[:, :2] < 10)))
    traj = parse_camera_text(text, path, rotation_tol)
    return GroundTruthCamera(str(path), _orthonormalized(traj.w2c), traj.intrinsics, True)
