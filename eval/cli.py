"""Command line of the evaluation package: ``python -m eval <command> ...``.

Commands:
  camera-metrics PRED GT     metrics between two camera files (JSON on stdout)
  estimate-poses VIDEO CAM   pose-estimation trials of one video against its camera file (JSON)
  fvd REAL FAKE              FVD between two folders of videos (JSON)
  generate --out EXP_DIR ... the evaluation set of a model (see eval.generate), what `run` reads
  run EXP_DIR --out OUT      the full evaluation of samples/, gt_video/, camera_data/ (see eval.run)
  report RESULTS... --out D  Table-1 style Markdown/CSV and per-clip trajectory plots
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from eval.log import logger, setup_logging


def _json(obj: Any) -> str:
    from eval.run import _json_safe

    return json.dumps(_json_safe(obj), indent=1)


def _add_pose_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("pose estimation")
    g.add_argument("--trials", type=int, default=5, help="trials per video (default 5)")
    g.add_argument("--seed", type=int, default=0, help="seed of trial 0; trial k uses seed + k")
    g.add_argument("--camera-model", choices=["SIMPLE_PINHOLE", "PINHOLE"], default="SIMPLE_PINHOLE",
                   help="COLMAP camera model of the pose estimation")
    g.add_argument("--no-affine", action="store_true",
                   help="plain SIFT (no affine shape / domain-size pooling; faster, differs from the reference)")
    g.add_argument("--overlap", type=int, default=10, help="sequential matching overlap")
    g.add_argument("--allow-unregistered", action="store_true",
                   help="report unregistered frames instead of failing the trial (metrics then fail)")
    g.add_argument("--depth-model", default=None,
                   help="Depth Anything V2 metric model (hub id or local folder) for the metric scale; "
                        "without it the absolute metrics are not computed")
    g.add_argument("--depth-device", default="auto", help="device of the depth model (auto: cuda when available)")


def _pose_config(a: argparse.Namespace):
    from eval.pose_estimation import PoseEstimationConfig

    return PoseEstimationConfig(camera_model=a.camera_model, estimate_affine_shape=not a.no_affine,
                                domain_size_pooling=not a.no_affine, sequential_overlap=a.overlap,
                                allow_unregistered=a.allow_unregistered)


def _depth(a: argparse.Namespace):
    if not a.depth_model:
        return None
    from annotate.depth import DepthAnythingPredictor, DepthConfig

    return DepthAnythingPredictor(DepthConfig(model=a.depth_model, device=a.depth_device))


def _add_fvd_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("FVD")
    g.add_argument("--videogpt-i3d", default=None, help="path to i3d_pretrained_400.pt (FVD_videogpt)")
    g.add_argument("--styleganv-i3d", default=None, help="path to the StyleGAN-V i3d_torchscript.pt (FVD_styleganv)")
    g.add_argument("--num-frames", type=int, default=None, help="first N frames of every video (default all)")
    g.add_argument("--fvd-batch", type=int, default=16, help="videos per I3D batch")
    g.add_argument("--device", default="auto", help="FVD device: auto (cuda when available, batched), cpu, cuda:N")
    g.add_argument("--fvd-method", choices=["svd", "sqrtm"], default="svd", help="matrix square root of the FVD")


def _fvd_config(a: argparse.Namespace):
    from eval.fvd import FVDConfig

    variants = tuple(v for v, p in (("videogpt", a.videogpt_i3d), ("styleganv", a.styleganv_i3d)) if p)
    device = a.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return FVDConfig(variants=variants, videogpt_weights=a.videogpt_i3d, styleganv_torchscript=a.styleganv_i3d,
                     batch_size=a.fvd_batch, device=device, num_frames=a.num_frames, method=a.fvd_method)


def cmd_camera_metrics(a: argparse.Namespace) -> int:
    from eval.metrics import camera_metrics, check_scale
    from eval.trajectory import load_camera

    # refused before reading anything: a NaN/inf/negative/zero scale only yields null or absurd numbers
    check_scale("--pred-scale", a.pred_scale)
    check_scale("--gt-scale", a.gt_scale)
    pred, gt = load_camera(a.pred), load_camera(a.gt)
    if len(pred) != len(gt):
        raise ValueError(f"frame counts differ: {a.pred} has {len(pred)} poses, {a.gt} has {len(gt)}")
    m = camera_metrics(pred.c2w, gt.c2w, a.pred_scale, a.gt_scale)
    print(_json(m.as_dict()))
    return 0


def cmd_estimate_poses(a: argparse.Namespace) -> int:
    from annotate.camera import relative_to
    from annotate.video import read_frames
    from eval.metrics import camera_metrics
    from eval.pose_estimation import estimate_trials
    from eval.run import intrinsics_for
    from eval.trajectory import load_camera

    cam = load_camera(a.camera)
    frames = read_frames(a.video)
    if len(frames) != len(cam):
        raise ValueError(f"frame counts differ: {a.video} has {len(frames)} frames, {a.camera} {len(cam)} poses")
    h, w = frames.shape[1:3]
    intr = intrinsics_for(cam, w, h, (w, h))
    outcomes = estimate_trials(frames, intr, _pose_config(a), a.trials, a.seed, _depth(a))
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
            if a.with_poses:
                row["c2w"] = e.c2w.tolist()
        result.append(row)
    text = _json(result)
    if a.out:
        Path(a.out).write_text(text)
    print(text)
    return 0 if any(o.ok for o in outcomes) else 1


def cmd_fvd(a: argparse.Namespace) -> int:
    from eval.fvd import fvd_from_paths
    from eval.run import VIDEO_SUFFIXES

    def videos(folder: str) -> dict[str, Path]:
        d = Path(folder)
        if not d.is_dir():
            raise ValueError(f"{d}: not a folder")
        return {p.stem: p for p in sorted(d.iterdir()) if p.suffix.lower() in VIDEO_SUFFIXES}

    real, fake = videos(a.real), videos(a.fake)
    cfg = _fvd_config(a)
    if not cfg.variants:
        raise ValueError("give --videogpt-i3d and/or --styleganv-i3d")
    print(_json(fvd_from_paths(list(real.values()), list(fake.values()), cfg)
                | {"num_real": len(real), "num_fake": len(fake)}))
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    from annotate.job import RayConfig
    from annotate.preflight import PreflightError, report
    from eval.preflight import check_run
    from eval.run import EvalRunConfig, run_evaluation

    try:
        check_run(a).raise_if_any()  # before a depth model or Ray starts and before --out is created
    except PreflightError as e:
        return report(e)
    fvd = _fvd_config(a)
    cfg = EvalRunConfig(exp_dir=a.exp_dir, out_dir=a.out, num_trials=a.trials, base_seed=a.seed, k_std=a.k_std,
                        limit=a.limit, poses=not a.fvd_only, pose=_pose_config(a), fvd=fvd if fvd.variants else None,
                        show_progress=not a.no_progress, executor=a.executor,
                        ray=RayConfig(address=a.address, num_cpus=a.num_cpus), cpus_per_task=a.cpus_per_task,
                        max_videos_in_flight=a.max_videos_in_flight, cache_dir=a.cache)
    summary = run_evaluation(cfg, None if a.fvd_only else _depth(a))
    summary.pop("config", None)
    print(_json(summary))
    n = summary.get("num_videos")
    return 0 if (a.fvd_only or (n and summary.get("num_succeeded"))) else 1


def cmd_report(a: argparse.Namespace) -> int:
    from eval.report import ReportConfig, write_report

    res = write_report(ReportConfig(results=a.results, out_dir=a.out, names=a.names, plots=not a.no_plots))
    print((Path(a.out) / "table.md").read_text())
    logger.info("%d plots in %s", len(res["plots"]), Path(a.out) / "plots")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from annotate.config import HelpFormatter

    p = argparse.ArgumentParser(prog="python -m eval", description="RealCam evaluation: camera metrics, FVD, reports")
    p.add_argument("-v", "--verbose", action="store_true", help="info logging")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, help: str) -> argparse.ArgumentParser:  # every command's --help shows the defaults
        return sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)

    s = add("camera-metrics", help="RotErr/TransErr/CamMC between two camera files")
    s.add_argument("pred", help="predicted trajectory (RealEstate10K camera file or camera_data txt)")
    s.add_argument("gt", help="ground-truth trajectory (same number of frames)")
    s.add_argument("--pred-scale", type=float, default=1.0, help="metres per unit of PRED (default: already metric)")
    s.add_argument("--gt-scale", type=float, default=1.0, help="metres per unit of GT (default: already metric)")
    s.set_defaults(func=cmd_camera_metrics)

    s = add("estimate-poses", help="SIFT + GLOMAP trials of one video")
    s.add_argument("video", help="mp4 or folder of frames")
    s.add_argument("camera", help="its camera file (intrinsics and the ground truth the metrics use)")
    s.add_argument("--out", default=None, help="also write the JSON here")
    s.add_argument("--with-poses", action="store_true", help="include the estimated c2w poses")
    _add_pose_args(s)
    s.set_defaults(func=cmd_estimate_poses)

    s = add("fvd", help="FVD between two folders of videos")
    s.add_argument("real", help="folder of real videos")
    s.add_argument("fake", help="folder of generated videos")
    _add_fvd_args(s)
    s.set_defaults(func=cmd_fvd)

    from eval.generate import add_parser as add_generate_parser

    add_generate_parser(sub)

    s = add("run", help="evaluate EXP_DIR (samples/, gt_video/, camera_data/)")
    s.add_argument("exp_dir", help="experiment folder: samples/, gt_video/, camera_data/ (eval generate)")
    s.add_argument("--out", required=True, help="results folder")
    s.add_argument("--k-std", type=float, default=10.0, help="outlier rule: drop trials > k pooled std off")
    s.add_argument("--limit", type=int, default=None, help="only the first N clips")
    s.add_argument("--fvd-only", action="store_true", help="skip pose estimation")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = s.add_argument_group("distribution and resume (see eval.trials)")
    g.add_argument("--cache", default=None,
                   help="ground-truth trial cache shared by experiments (default: OUT/../gt_cache)")
    g.add_argument("--executor", choices=["ray", "local"], default="ray",
                   help="ray: one task per video and trial (default); local: inline in this process")
    g.add_argument("--address", default="", help="join this Ray cluster ('auto' or host:port; default: "
                                                 "RAY_ADDRESS if set, else a local Ray on 127.0.0.1)")
    g.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all cores)")
    g.add_argument("--cpus-per-task", type=float, default=1.0, help="CPUs per pose task (and its threads)")
    g.add_argument("--max-videos-in-flight", type=int, default=None,
                   help="videos with tasks queued at once (default: 2 x CPUs / cpus-per-task)")
    _add_pose_args(s)
    _add_fvd_args(s)
    s.set_defaults(func=cmd_run)

    s = add("report", help="Table-1 style Markdown/CSV and plots from results folders")
    s.add_argument("results", nargs="+", help="results folders written by `run`")
    s.add_argument("--out", required=True, help="folder of table.md, table.csv and plots/")
    s.add_argument("--names", nargs="+", default=None, help="row labels (default: folder names)")
    s.add_argument("--no-plots", action="store_true", help="tables only")
    s.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    setup_logging(a.verbose)
    try:
        return int(a.func(a))
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
