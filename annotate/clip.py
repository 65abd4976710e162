"""The per-clip computation of the annotation contract, as three stages that pass compact records.

1. :func:`triangulate_stage` (CPU): camera file + frames -> keypoint observations with COLMAP depths.
2. :class:`DepthStage` (GPU where present): metric depth at those keypoints (model or precomputed).
3. :func:`finish_stage`: per-point ratios, frame and clip scales, ``c2w_metric``; the contract's row.

A record is a flat dict of scalars, strings and 1-D numpy arrays (what Ray Data moves between stages).
Every failure becomes ``status="failed"`` with a one-line ``error`` naming the clip's offending file;
later stages pass failed records through untouched. :func:`annotate_clip` runs all three in-process.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field, replace

import numpy as np

from annotate.camera import metric_c2w
from annotate.depth import (
    DepthAnythingPredictor,
    DepthConfig,
    DepthFileError,
    DepthPredictor,
    PrecomputedDepth,
    depth_at_keypoints,
)
from annotate.log import get_logger
from annotate.re10k import DEFAULT_ROTATION_TOL, CameraFileError, read_camera_file
from annotate.scale import NoValidScale, ScaleConfig, clip_statistics, frame_scales, point_ratios
from annotate.triangulate import Observations, SfmConfig, TriangulationError, triangulate, visible_ratios
from annotate.video import VideoError, read_frames

log = get_logger()


@dataclass
class ClipConfig:
    sfm: SfmConfig = field(default_factory=SfmConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    rotation_tol: float = DEFAULT_ROTATION_TOL
    min_frames: int = 2  # fewer pose lines than this cannot be triangulated
    min_points: int = 20  # fewer 3D points than this make the clip fail ("too few 3D points")


class ClipError(Exception):
    """A per-clip failure whose message is the row's one-line ``error``."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def failed(rec: dict, reason: str) -> dict:
    rec = dict(rec)
    rec["status"], rec["error"] = "failed", _one_line(reason)
    return rec


def empty_record(row: dict) -> dict:
    """A stage-1 record with every field present (stable Arrow schema), before any work on the clip."""
    return {"clip_id": str(row["clip_id"]), "split": str(row["split"]), "pose_path": str(row["pose_path"]),
            "video_path": str(row["video_path"]), "depth_path": str(row.get("depth_path") or ""),
            "depth_unit": str(row.get("depth_unit") or ""),
            "youtube_id": "", "num_frames": 0, "frame_h": 0, "frame_w": 0,
            "timestamps_us": np.zeros(0, np.int64), "intrinsics": np.zeros(0), "w2c": np.zeros(0),
            "obs_frame": np.zeros(0, np.int32), "obs_xy": np.zeros(0, np.float32), "obs_z": np.zeros(0, np.float32),
            "obs_projected": np.zeros(0, np.uint8),
            "obs_metric": np.zeros(0, np.float32), "num_points": 0, "reprojection_error": float("nan"),
            "max_depth": float("nan"), "status": "ok", "error": "", "seconds": 0.0}


def load_clip(rec: dict, cfg: ClipConfig) -> tuple[dict, np.ndarray]:
    """Read and check the camera file and frames; raises :class:`ClipError` with the row's reason."""
    try:
        traj = read_camera_file(rec["pose_path"], cfg.rotation_tol)
    except CameraFileError as e:
        raise ClipError(f"malformed camera file: {e}") from None
    rec.update(youtube_id=traj.youtube_id, num_frames=len(traj), timestamps_us=traj.timestamps_us,
               intrinsics=traj.intrinsics.reshape(-1), w2c=traj.w2c.reshape(-1))
    if len(traj) < cfg.min_frames:
        raise ClipError(f"too few frames: {rec['pose_path']} has {len(traj)} pose line(s), need {cfg.min_frames}")
    try:
        frames = read_frames(rec["video_path"])
    except VideoError as e:
        raise ClipError(f"unreadable video: {e}") from None
    if len(frames) != len(traj):
        raise ClipError(f"frame-count mismatch: {rec['video_path']} has {len(frames)} frames, "
                        f"{rec['pose_path']} has {len(traj)} pose lines")
    rec.update(frame_h=int(frames.shape[1]), frame_w=int(frames.shape[2]))
    return rec, frames


def _triangulate(frames: np.ndarray, rec: dict, cfg: ClipConfig) -> Observations:
    """The configured pipeline; with ``sfm.fallback_sequential`` a keyframes result with fewer than
    ``min_points`` points (or none) is redone with the sequential pipeline."""
    args = (frames, rec["intrinsics"].reshape(-1, 4), rec["w2c"].reshape(-1, 3, 4))
    if cfg.sfm.pipeline != "keyframes" or not cfg.sfm.fallback_sequential:
        return triangulate(*args, cfg.sfm)
    try:
        obs = triangulate(*args, cfg.sfm)
        if obs.num_points >= cfg.min_points:
            return obs
        why = f"{obs.num_points} points"
    except TriangulationError as e:
        why = str(e)
    log.debug("clip %s: keyframes pipeline gave too few points (%s); sequential fallback", rec["clip_id"], why)
    return triangulate(*args, replace(cfg.sfm, pipeline="sequential"))


def triangulate_stage(row: dict, cfg: ClipConfig, keep_frames: bool = False) -> dict:
    """Stage 1. With ``keep_frames`` the decoded frames ride along under ``_frames`` (in-process use only)."""
    t0 = time.perf_counter()
    rec = empty_record(row)
    try:
        rec, frames = load_clip(rec, cfg)
        obs = _triangulate(frames, rec, cfg)
        if obs.num_points < cfg.min_points:
            raise ClipError(f"too few 3D points: {obs.num_points} triangulated (need {cfg.min_points}) "
                            f"from {rec['video_path']}")
        rec.update(obs_frame=obs.frame, obs_xy=obs.xy.reshape(-1), obs_z=obs.z, obs_projected=obs.projected,
                   num_points=obs.num_points, reprojection_error=obs.reprojection_error)
        if keep_frames:
            rec["_frames"] = frames
    except ClipError as e:
        rec = failed(rec, str(e))
    except TriangulationError as e:
        rec = failed(rec, f"too few 3D points: {e} ({rec['video_path']})")
    except Exception as e:  # noqa: BLE001 - one bad clip must never crash the job
        log.debug("clip %s failed:\n%s", rec["clip_id"], traceback.format_exc())
        rec = failed(rec, f"triangulation error: {e.__class__.__name__}: {e}")
    rec["seconds"] = time.perf_counter() - t0
    return rec


class DepthStage:
    """Stage 2: metric depth at the keypoints. The depth model is loaded lazily, once per stage object
    (one per Ray actor), and only if some clip has no ``depth_path``."""

    def __init__(self, cfg: DepthConfig | None = None, predictor: DepthPredictor | None = None):
        self.cfg = cfg or DepthConfig()
        self._predictor = predictor

    @property
    def predictor(self) -> DepthPredictor:
        if self._predictor is None:
            self._predictor = DepthAnythingPredictor(self.cfg)
        return self._predictor

    def __call__(self, rec: dict) -> dict:
        if rec["status"] != "ok":
            return rec
        t0 = time.perf_counter()
        frames = rec.pop("_frames", None)
        try:
            frame_ids, xy = np.asarray(rec["obs_frame"]), np.asarray(rec["obs_xy"], np.float32).reshape(-1, 2)
            hw = (int(rec["frame_h"]), int(rec["frame_w"]))
            if rec["depth_path"]:
                try:
                    src = PrecomputedDepth(rec["depth_path"], int(rec["num_frames"]), hw,
                                           str(rec.get("depth_unit") or ""), self.cfg)
                except DepthFileError as e:
                    return failed(rec, f"bad depth file: {e}")
                maps, max_depth = src.maps, None
            else:
                pred = self.predictor

                def maps(ids):
                    imgs = frames[ids] if frames is not None else read_frames(rec["video_path"], ids)
                    return pred.predict(imgs)
                max_depth = pred.max_depth
            rec["obs_metric"] = depth_at_keypoints(frame_ids, xy, hw, maps, self.cfg.batch_size)
            rec["max_depth"] = float("nan") if max_depth is None else float(max_depth)
        except VideoError as e:
            return failed(rec, f"unreadable video: {e}")
        except Exception as e:  # noqa: BLE001
            log.debug("clip %s depth failed:\n%s", rec["clip_id"], traceback.format_exc())
            return failed(rec, f"depth error: {e.__class__.__name__}: {e}")
        rec["seconds"] = float(rec["seconds"]) + time.perf_counter() - t0
        return rec


def finish_stage(rec: dict, cfg: ClipConfig) -> dict:
    """Stage 3: the contract's row (without the dataset-wide ``keep`` / ``filter_reason``)."""
    rec.pop("_frames", None)
    nf = int(rec["num_frames"])
    out = {"clip_id": rec["clip_id"], "split": rec["split"], "youtube_id": rec["youtube_id"], "num_frames": nf,
           "timestamps_us": np.asarray(rec["timestamps_us"], np.int64),
           "intrinsics": np.asarray(rec["intrinsics"], np.float32).reshape(-1, 4),
           "w2c": np.asarray(rec["w2c"], np.float32).reshape(-1, 12),
           "c2w_metric": np.full((nf, 16), np.nan, np.float32),
           "frame_scale": np.full(nf, np.nan, np.float32), "frame_num_points": np.zeros(nf, np.int32),
           "scale": float("nan"), "scale_min": float("nan"), "scale_max": float("nan"),
           "num_points": int(rec["num_points"]), "reprojection_error": float(rec["reprojection_error"]),
           "status": rec["status"], "error": rec["error"], "seconds": float(rec["seconds"])}
    if rec["status"] != "ok":
        return out
    md = float(rec["max_depth"])
    ratios = point_ratios(rec["obs_metric"], rec["obs_z"], None if np.isnan(md) else md)
    # keyframes pipeline: projected observations count only where the frame's own depth sees the point
    ratios = visible_ratios(rec["obs_frame"], ratios, rec.get("obs_projected", ()), nf, cfg.scale.min_points,
                            cfg.sfm.visibility_tol)
    scales, counts = frame_scales(np.asarray(rec["obs_frame"]), ratios, nf, cfg.scale.min_points)
    out["frame_scale"], out["frame_num_points"] = scales, counts
    try:
        scale, smin, smax = clip_statistics(scales)
    except NoValidScale:
        best = int(counts.max()) if nf else 0
        out.update(status="failed", error=f"no valid frame scale: no frame of {rec['video_path']} has "
                   f"{cfg.scale.min_points} valid depth ratios (best {best})")
        return out
    out.update(scale=scale, scale_min=smin, scale_max=smax)
    w2c = np.asarray(rec["w2c"], np.float64).reshape(-1, 3, 4)
    out["c2w_metric"] = metric_c2w(w2c, scale).reshape(nf, 16).astype(np.float32)  # contract step 7
    return out


def annotate_clip(row: dict, cfg: ClipConfig | None = None, depth: DepthStage | None = None) -> dict:
    """All three stages in-process for one manifest row (paths already resolved)."""
    cfg = cfg or ClipConfig()
    depth = depth or DepthStage(cfg.depth)
    rec = triangulate_stage(row, cfg, keep_frames=True)
    return finish_stage(depth(rec), cfg)
