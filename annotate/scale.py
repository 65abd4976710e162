"""The scale definitions of the annotation contract (steps 3-5), nothing else; step 7 (metric cameras) is
:func:`annotate.camera.metric_c2w`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ScaleConfig:
    min_points: int = 20  # a frame scale needs at least this many valid points (step 4)


class NoValidScale(ValueError):
    pass


def point_ratios(metric: np.ndarray, z: np.ndarray, max_depth: float | None) -> np.ndarray:
    """Step 3: ``s = D / z`` per observation; NaN where either is non-positive or non-finite, or where the
    metric depth is at or beyond the model's ``max_depth`` (saturated predictions)."""
    metric = np.asarray(metric, np.float64)
    z = np.asarray(z, np.float64)
    ok = np.isfinite(metric) & np.isfinite(z) & (metric > 0) & (z > 0)
    if max_depth is not None:
        ok &= metric < max_depth
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, metric / z, np.nan)


def frame_scales(frame: np.ndarray, ratios: np.ndarray, num_frames: int,
                 min_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Step 4: per frame the median ratio (float32, NaN with fewer than ``min_points``) and the count used."""
    scales = np.full(num_frames, np.nan, np.float32)
    counts = np.zeros(num_frames, np.int32)
    valid = np.isfinite(ratios)
    frame, ratios = np.asarray(frame)[valid], ratios[valid]
    order = np.argsort(frame, kind="stable")
    frame, ratios = frame[order], ratios[order]
    ids, starts = np.unique(frame, return_index=True)
    for f, vals in zip(ids, np.split(ratios, starts[1:])):
        counts[f] = len(vals)
        if len(vals) >= min_points:
            scales[f] = np.float32(np.median(vals))
    return scales, counts


def clip_statistics(scales: np.ndarray) -> tuple[float, float, float]:
    """Step 5: (scale, scale_min, scale_max) over valid frames, computed on the float32 frame scales."""
    valid = scales[np.isfinite(scales)]
    if not len(valid):
        raise NoValidScale("no valid frame scale")
    return float(np.median(valid)), float(valid.min()), float(valid.max())
