"""Command line of the evaluation package: ``python -m eval <command> ...``.

Commands:
  camera-metrics PRED GT     metrics between two camera files (JSON on stdout)
  estimate-poses VIDEO CAM   pose-estimation trials of one video against its camera file (JSON)
  fvd REAL FAKE              FVD between two folders of videos (JSON)
  generate --out EXP_DIR ... the evaluation set of a model (see eval.generate), what `run` reads
  run EXP_DIR --out OUT      the full evaluation of samples/, gt_video/, camera_data/ (see eval.run)
  report RESULTS... --out D  Table-1 style Markdown/CSV and per-clip trajectory plots (see eval.report)

Each is a typed config plus ``main(cfg)`` (callable from Python) with a command line generated from the config
(annotate/command.py): camera-metrics, estimate-poses and fvd here, the others in their modules.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Any

from annotate.command import Command
from annotate.files import json_text
from eval.fvd import FVDConfig, from_weights
from eval.log import ERRORS, LOG_LEVEL
from eval.pose_estimation import PoseEstimationConfig

# ------------------------------------------------------------------------------------------------ camera-metrics


@dataclass
class CameraMetricsConfig:
    pred: str  # predicted trajectory (RealEstate10K camera file or camera_data txt)
    gt: str  # ground-truth trajectory (same number of frames)
    pred_scale: float = 1.0  # metres per unit of PRED (1: already metric)
    gt_scale: float = 1.0  # metres per unit of GT (1: already metric)


def camera_metrics_main(cfg: CameraMetricsConfig) -> dict[str, float]:
    """RotErr, TransErr/CamMC (relative and absolute) between two camera files."""
    from eval.metrics import camera_metrics, check_scale
    from eval.trajectory import load_camera

    # refused before reading anything: a NaN/inf/negative/zero scale only yields null or absurd numbers
    check_scale("--pred-scale", cfg.pred_scale)
    check_scale("--gt-scale", cfg.gt_scale)
    pred, gt = load_camera(cfg.pred), load_camera(cfg.gt)
    if len(pred) != len(gt):
        raise ValueError(f"frame counts differ: {cfg.pred} has {len(pred)} poses, {cfg.gt} has {len(gt)}")
    return camera_metrics(pred.c2w, gt.c2w, cfg.pred_scale, cfg.gt_scale).as_dict()


def camera_metrics_command() -> Command:
    return Command(CameraMetricsConfig, lambda cfg, args: camera_metrics_main(cfg), "python -m eval camera-metrics",
                   "RotErr/TransErr/CamMC between two camera files", positionals=("pred", "gt"),
                   log_level=LOG_LEVEL, errors=ERRORS)


def cli_camera_metrics(argv: list[str] | None = None) -> int:
    return camera_metrics_command().main(argv)


# ------------------------------------------------------------------------------------------------ estimate-poses


@dataclass
class EstimatePosesConfig:
    video: str  # mp4 or folder of frames
    camera: str  # its camera file (intrinsics and the ground truth the metrics use)
    out: str | None = None  # also write the JSON here
    with_poses: bool = False  # include the estimated c2w poses
    num_trials: int = 5  # pose-estimation trials of the video
    base_seed: int = 0  # seed of trial 0; trial k uses base_seed + k
    pose: PoseEstimationConfig = field(default_factory=PoseEstimationConfig)  # pose estimation (eval.pose_estimation)
    # Depth Anything V2 metric model (hub id or local folder) for the metric scale; None: no absolute metrics
    depth_model: str | None = None
    depth_device: str = "auto"  # device of the depth model (auto: cuda when available)


def estimate_poses_main(cfg: EstimatePosesConfig) -> list[dict[str, Any]]:
    """One row per trial: status, metric scale and (when every frame registered) the metrics against the camera."""
    from annotate.camera import relative_to
    from annotate.files import write_json
    from annotate.video import read_frames
    from eval.metrics import camera_metrics
    from eval.pose_estimation import estimate_trials
    from eval.run import intrinsics_for
    from eval.trajectory import load_camera

    cam = load_camera(cfg.camera)
    frames = read_frames(cfg.video)
    if len(frames) != len(cam):
        raise ValueError(f"frame counts differ: {cfg.video} has {len(frames)} frames, {cfg.camera} {len(cam)} poses")
    h, w = frames.shape[1:3]
    intr = intrinsics_for(cam, w, h, (w, h))
    depth = None
    if cfg.depth_model:
        from annotate.depth import DepthAnythingPredictor, DepthConfig

        depth = DepthAnythingPredictor(DepthConfig(model=cfg.depth_model, device=cfg.depth_device))
    outcomes = estimate_trials(frames, intr, cfg.pose, cfg.num_trials, cfg.base_seed, depth)
    gt = relative_to(cam.c2w, 0)
    result = []
    for o in outcomes:
        row: dict[str, Any] = {"trial": o.trial, "seed": o.seed, "ok": o.ok, "error": o.error}
        if o.ok and o.estimate is not None:
            e = o.estimate
            row.update(metric_scale=e.metric_scale, num_points3d=e.num_points3d, seconds=round(e.seconds, 2),
                       missing_frames=e.missing_frames)
            if not e.missing_frames:
                row.update(camera_metrics(e.c2w, gt).as_dict())
            if cfg.with_poses:
                row["c2w"] = e.c2w.tolist()
        result.append(row)
    if cfg.out:
        write_json(cfg.out, result, nonfinite_as_null=True)
    return result


def _run_estimate_poses(cfg: EstimatePosesConfig, args: argparse.Namespace) -> int:
    rows = estimate_poses_main(cfg)
    print(json_text(rows, nonfinite_as_null=True))
    return 0 if any(r["ok"] for r in rows) else 1


def estimate_poses_command() -> Command:
    from eval.run import NO_AFFINE, POSE_FLAGS

    return Command(EstimatePosesConfig, _run_estimate_poses, "python -m eval estimate-poses",
                   "SIFT + GLOMAP trials of one video", positionals=("video", "camera"),
                   flags={"--out": "out", "--with-poses": "with_poses", **POSE_FLAGS}, switches=NO_AFFINE,
                   log_level=LOG_LEVEL, errors=ERRORS)


def cli_estimate_poses(argv: list[str] | None = None) -> int:
    return estimate_poses_command().main(argv)


# ------------------------------------------------------------------------------------------------ fvd


@dataclass
class FVDCommandConfig:
    real: str  # folder of real videos
    fake: str  # folder of generated videos
    fvd: FVDConfig = field(default_factory=from_weights)  # variants: those whose I3D weights are given


def fvd_main(cfg: FVDCommandConfig) -> dict[str, Any]:
    """FVD of every variant between the videos of two folders (all of each, sorted by name)."""
    from pathlib import Path

    from eval.fvd import fvd_from_paths, resolve
    from eval.run import VIDEO_SUFFIXES

    def videos(folder: str) -> dict[str, Path]:
        d = Path(folder)
        if not d.is_dir():
            raise ValueError(f"{d}: not a folder")
        return {p.stem: p for p in sorted(d.iterdir()) if p.suffix.lower() in VIDEO_SUFFIXES}

    real, fake = videos(cfg.real), videos(cfg.fake)
    fvd = resolve(cfg.fvd)
    if not fvd.variants:
        raise ValueError("give --videogpt-i3d and/or --styleganv-i3d")
    return fvd_from_paths(list(real.values()), list(fake.values()), fvd) | {"num_real": len(real),
                                                                             "num_fake": len(fake)}


def fvd_command() -> Command:
    from eval.run import FVD_FLAGS, fvd_variants

    return Command(FVDCommandConfig, lambda cfg, args: fvd_main(cfg), "python -m eval fvd",
                   "FVD between two folders of videos", positionals=("real", "fake"), flags=FVD_FLAGS,
                   check=fvd_variants, log_level=LOG_LEVEL, errors=ERRORS)


def cli_fvd(argv: list[str] | None = None) -> int:
    return fvd_command().main(argv)


# ------------------------------------------------------------------------------------------------ dispatcher


COMMANDS = {
    "camera-metrics": ("eval.cli:cli_camera_metrics", "RotErr/TransErr/CamMC between two camera files"),
    "estimate-poses": ("eval.cli:cli_estimate_poses", "SIFT + GLOMAP trials of one video"),
    "fvd": ("eval.cli:cli_fvd", "FVD between two folders of videos"),
    "generate": ("eval.generate", "generate samples/, gt_video/, camera_data/ for `run` (paper protocol)"),
    "run": ("eval.run", "evaluate EXP_DIR (samples/, gt_video/, camera_data/)"),
    "report": ("eval.report", "Table-1 style Markdown/CSV and plots from results folders"),
}


def main(argv: list[str] | None = None) -> int:
    from annotate.command import dispatch

    return dispatch(COMMANDS, argv, "python -m eval", "RealCam evaluation: camera metrics, FVD, reports")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
