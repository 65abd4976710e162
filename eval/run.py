"""Evaluate a folder of generated videos against their ground truth, as the reference does (§5).

Input layout (what the reference's ``trainer.py --test`` writes, reference §5.1), matched by file stem::

    EXP_DIR/
      samples/<name>.mp4       generated video (one frame per camera line)
      gt_video/<name>.mp4      the ground-truth clip at the same resolution
      camera_data/<name>.txt   its camera: either the reference's 18-column rows
                               (fx fy cx cy in pixels, 0 0, 12 w2c values) or a RealEstate10K camera file

Image folders (``samples/<name>/000.png ...``) work in place of mp4 files.

Per clip and trial k (seed ``base_seed + k``) both videos go through :mod:`eval.pose_estimation`
with the ground truth's intrinsics (frame 0's, as the reference). Relative metrics compare the
RealEstate10K trajectory with the estimate of the sample; absolute metrics compare the estimates of
the sample and of the ground-truth video, each times its metric depth scale (frame 0), normalised by
the ground-truth video's largest metric translation (reference §5.4). Without a depth source the
absolute metrics are NaN. Trials are merged with the reference's pooled 10-std rule
(:func:`eval.pose_estimation.aggregate_trials`); clips whose every trial failed are reported with
their errors and counted in the success rate, never dropped silently.

Outputs in ``OUT``: ``trials.csv`` (every trial, with status and error), ``clips.csv`` and
``clips.json`` (per clip after merging), ``summary.json`` (means over clips, success rate, failures,
FVD, the configuration) and ``trajectories/<name>.npz`` (ground truth and the first successful
trial's estimates, for :mod:`eval.report`'s plots).
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from annotate.camera import relative_to
from annotate.video import read_frames
from eval.fvd import FVD_KEYS, FVDConfig, fvd_from_paths
from eval.log import logger, progress
from eval.metrics import METRIC_NAMES, camera_metrics
from eval.pose_estimation import (
    DepthSource,
    PoseEstimationConfig,
    PoseEstimationError,
    VideoPoseEstimator,
    aggregate_trials,
    predict_depth0,
    summarize,
)
from eval.trajectory import GroundTruthCamera, load_camera

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")
TRIAL_COLUMNS = ["clip", "trial", "seed", "status", "error", *METRIC_NAMES, "scale_sample", "scale_gt",
                 "seconds"]


@dataclass
class EvalRunConfig:
    exp_dir: str
    out_dir: str
    num_trials: int = 5
    base_seed: int = 0
    k_std: float = 10.0
    limit: int | None = None  # first N clips (sorted by name); None = all
    poses: bool = True  # False: FVD only
    pose: PoseEstimationConfig = field(default_factory=PoseEstimationConfig)
    fvd: FVDConfig | None = None  # None: no FVD
    show_progress: bool = True


@dataclass
class ClipPaths:
    name: str
    sample: Path | None
    gt_video: Path | None
    camera: Path | None

    @property
    def missing(self) -> list[str]:
        return [k for k in ("sample", "gt_video", "camera") if getattr(self, k) is None]


def _index(folder: Path, suffixes: tuple[str, ...] | None) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    out = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if suffixes is None and p.suffix.lower() == ".txt":
            out[p.stem] = p
        elif suffixes is not None and (p.suffix.lower() in suffixes or p.is_dir()):
            out[p.stem if p.is_file() else p.name] = p
    return out


def discover_clips(exp_dir: str | Path) -> list[ClipPaths]:
    """Every stem found in any of ``samples/``, ``gt_video/``, ``camera_data/``, sorted."""
    exp = Path(exp_dir)
    if not exp.is_dir():
        raise FileNotFoundError(f"{exp}: no such folder")
    samples = _index(exp / "samples", VIDEO_SUFFIXES)
    gts = _index(exp / "gt_video", VIDEO_SUFFIXES)
    cams = _index(exp / "camera_data", None)
    names = sorted(set(samples) | set(gts) | set(cams))
    if not names:
        raise FileNotFoundError(f"{exp}: no clips (expected samples/*.mp4, gt_video/*.mp4, camera_data/*.txt)")
    return [ClipPaths(n, samples.get(n), gts.get(n), cams.get(n)) for n in names]


def intrinsics_for(cam: GroundTruthCamera, width: int, height: int, ref_wh: tuple[int, int]) -> np.ndarray:
    """Frame 0's pixel intrinsics for a ``width x height`` video. Pixel intrinsics refer to the
    ground-truth video's size ``ref_wh`` and are rescaled if the sample's size differs."""
    if cam.intrinsics_normalized:
        return cam.intrinsics_px(width, height)[0]
    sx, sy = width / ref_wh[0], height / ref_wh[1]
    return cam.intrinsics[0] * np.array([sx, sy, sx, sy])


@dataclass
class ClipResult:
    name: str
    trials: list[dict[str, Any]]  # one row per trial (TRIAL_COLUMNS)
    error: str = ""  # a clip-level failure (missing file, unreadable video, wrong frame count)
    seconds: float = 0.0


def evaluate_clip(clip: ClipPaths, cfg: EvalRunConfig, depth: DepthSource | None = None,
                  traj_dir: Path | None = None) -> ClipResult:
    """All trials of one clip; every failure ends up in the returned rows, nothing raises."""
    t0 = time.perf_counter()

    def failed_clip(msg: str) -> ClipResult:
        logger.warning("%s: %s", clip.name, msg)
        rows = [_trial_row(clip.name, k, cfg.base_seed + k, "failed", msg) for k in range(cfg.num_trials)]
        return ClipResult(clip.name, rows, msg, time.perf_counter() - t0)

    if clip.missing:
        return failed_clip(f"missing {', '.join(clip.missing)}")
    try:
        cam = load_camera(clip.camera)
        sample = read_frames(clip.sample)
        gt = read_frames(clip.gt_video)
    except (ValueError, OSError) as e:
        return failed_clip(str(e))
    n = len(cam)
    if len(sample) != n or len(gt) != n:
        return failed_clip(f"frame counts differ: camera {n}, sample {len(sample)}, gt_video {len(gt)}")
    gt_wh = (gt.shape[2], gt.shape[1])
    intr_gt = intrinsics_for(cam, gt.shape[2], gt.shape[1], gt_wh)
    intr_sample = intrinsics_for(cam, sample.shape[2], sample.shape[1], gt_wh)
    gt_c2w = relative_to(cam.c2w, 0)
    try:
        d_sample = predict_depth0(depth, sample) if depth is not None else None
        d_gt = predict_depth0(depth, gt) if depth is not None else None
    except Exception as e:  # noqa: BLE001 - a broken depth model fails the clip, visibly
        return failed_clip(f"depth prediction failed: {e.__class__.__name__}: {e}")

    rows: list[dict[str, Any]] = []
    saved = False
    with VideoPoseEstimator(sample, intr_sample, cfg.pose, d_sample) as est_s, \
            VideoPoseEstimator(gt, intr_gt, cfg.pose, d_gt) as est_g:
        for k in range(cfg.num_trials):
            seed = cfg.base_seed + k
            t1 = time.perf_counter()
            try:
                es = est_s.run(seed)
            except PoseEstimationError as e:
                rows.append(_trial_row(clip.name, k, seed, "failed", f"sample: {e}", seconds=time.perf_counter() - t1))
                continue
            try:
                eg = est_g.run(seed)
            except PoseEstimationError as e:
                rows.append(_trial_row(clip.name, k, seed, "failed", f"gt_video: {e}",
                                       seconds=time.perf_counter() - t1))
                continue
            if depth is not None:
                m = camera_metrics(es.c2w, gt_c2w, es.metric_scale, eg.metric_scale, es.c2w, eg.c2w).as_dict()
            else:
                m = camera_metrics(es.c2w, gt_c2w).as_dict()
                m["TransErr_abs"] = m["CamMC_abs"] = math.nan
            rows.append(_trial_row(clip.name, k, seed, "ok", "", m, es.metric_scale, eg.metric_scale,
                                   time.perf_counter() - t1))
            if traj_dir is not None and not saved:
                traj_dir.mkdir(parents=True, exist_ok=True)
                np.savez(traj_dir / f"{clip.name}.npz", gt_c2w=gt_c2w, sample_c2w=es.c2w, gt_video_c2w=eg.c2w,
                         scale_sample=np.nan if es.metric_scale is None else es.metric_scale,
                         scale_gt=np.nan if eg.metric_scale is None else eg.metric_scale, trial=k, seed=seed)
                saved = True
    return ClipResult(clip.name, rows, "", time.perf_counter() - t0)


def _trial_row(clip: str, trial: int, seed: int, status: str, error: str = "", metrics: dict | None = None,
               scale_sample: float | None = None, scale_gt: float | None = None, seconds: float = 0.0) -> dict:
    row = {"clip": clip, "trial": trial, "seed": seed, "status": status, "error": error}
    for m in METRIC_NAMES:
        row[m] = (metrics or {}).get(m, math.nan)
    row["scale_sample"] = math.nan if scale_sample is None else scale_sample
    row["scale_gt"] = math.nan if scale_gt is None else scale_gt
    row["seconds"] = round(seconds, 3)
    return row


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _json_safe(obj.item())
    return obj


def run_evaluation(cfg: EvalRunConfig, depth: DepthSource | None = None) -> dict[str, Any]:
    """Pose metrics (and FVD when configured) over ``cfg.exp_dir``; writes the files listed in the
    module docstring into ``cfg.out_dir`` and returns the summary."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clips = discover_clips(cfg.exp_dir)
    if cfg.limit is not None:
        clips = clips[: cfg.limit]
    summary: dict[str, Any] = {"exp_dir": str(cfg.exp_dir), "num_trials": cfg.num_trials,
                               "metric_depth": depth is not None}
    if cfg.poses:
        results = []
        for clip in progress(clips, "pose metrics", total=len(clips), enabled=cfg.show_progress):
            res = evaluate_clip(clip, cfg, depth, out / "trajectories")
            ok = sum(r["status"] == "ok" for r in res.trials)
            logger.info("%s: %d/%d trials ok (%.1f s)%s", clip.name, ok, len(res.trials), res.seconds,
                        f" - {res.error}" if res.error else "")
            results.append(res)
        rows = [r for res in results for r in res.trials]
        _write_csv(out / "trials.csv", rows, TRIAL_COLUMNS)
        per_video = {res.name: [({m: r[m] for m in METRIC_NAMES} if r["status"] == "ok" else r["error"])
                                for r in res.trials] for res in results}
        aggregates = aggregate_trials(per_video, METRIC_NAMES, cfg.k_std)
        clip_rows = []
        for res in results:
            a = aggregates[res.name]
            clip_rows.append({"clip": a.name, "ok": a.ok, **{m: a.means.get(m, math.nan) for m in METRIC_NAMES},
                              "num_trials": a.num_trials, "num_failed": a.num_failed, "num_outliers": a.num_outliers,
                              "errors": " | ".join(a.errors), "seconds": round(res.seconds, 2)})
        _write_csv(out / "clips.csv", clip_rows, list(clip_rows[0]) if clip_rows else ["clip"])
        (out / "clips.json").write_text(json.dumps(_json_safe(clip_rows), indent=1))
        summary.update(summarize(aggregates, METRIC_NAMES))
        if depth is None:
            summary["note"] = "no metric depth source: absolute metrics (TransErr_abs, CamMC_abs) not computed"
    if cfg.fvd is not None and cfg.fvd.variants:
        pairs = [(c.gt_video, c.sample) for c in clips if c.gt_video is not None and c.sample is not None]
        summary["fvd_num_videos"] = len(pairs)
        try:
            summary.update(fvd_from_paths([p[0] for p in pairs], [p[1] for p in pairs], cfg.fvd))
        except Exception as e:  # noqa: BLE001 - the pose metrics are still written
            logger.error("FVD failed: %s", e)
            summary["fvd_error"] = f"{e.__class__.__name__}: {e}"
            for v in cfg.fvd.variants:
                summary.setdefault(FVD_KEYS[v], math.nan)
    summary["config"] = asdict(cfg)
    (out / "summary.json").write_text(json.dumps(_json_safe(summary), indent=1))
    return summary
