"""Evaluate a folder of generated videos against their ground truth, as the authors'
``evaluation/glomap_evaluation.py`` does.

Input layout (what the authors' ``main/trainer.py --test`` writes), matched by file stem::

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
the ground-truth video's largest metric translation (the authors' ``metric()``). Without a depth source the
absolute metrics are NaN. Trials are merged with the reference's pooled 10-std rule
(:func:`eval.pose_estimation.aggregate_trials`); clips whose every trial failed are reported with
their errors and counted in the success rate, never dropped silently.

Distribution and resume (:mod:`eval.trials`): each video's trials run as Ray tasks (local Ray on
127.0.0.1 by default, ``ray.address`` to join a cluster, as ``annotate run``), one per video and trial;
each finished trial is stored atomically as it completes, samples' in ``OUT/trials``, ground-truth videos'
in a cache shared by experiments (``cache_dir``, default ``OUT/../gt_cache``), keyed by the video's sha256,
its intrinsics, the pose settings and the depth source. A rerun (after a kill, or for another method
against the same ground truth) computes only what is missing; the tables are built from the stored
trials either way, so they are the same.

Outputs in ``OUT``: ``trials.csv`` (every trial, with status, error and compute seconds), ``clips.csv``
and ``clips.json`` (per clip after merging; no timings, so a resumed run writes the same file),
``summary.json`` (means over clips, success rate, failures, FVD, trials computed / reused, wall time,
CPU-seconds, the configuration) and ``trajectories/<name>.npz`` (ground truth and the first successful
trial's estimates, for :mod:`eval.report`'s plots).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from annotate.camera import relative_to
from annotate.command import Command
from annotate.files import atomic_write_text, json_text, write_json
from annotate.job import RayConfig
from annotate.video import VIDEO_SUFFIXES, read_frames
from eval.fvd import FVD_KEYS, FVDConfig, fvd_from_paths
from eval.fvd import from_weights as fvd_from_weights
from eval.fvd import resolve as resolve_fvd
from eval.log import logger
from eval.metrics import METRIC_NAMES, camera_metrics
from eval.pose_estimation import DepthSource, PoseEstimationConfig, aggregate_trials, predict_depth0, summarize
from eval.trajectory import GroundTruthCamera, load_camera
from eval.trials import (
    Executor,
    RunStats,
    TrialProgress,
    TrialStore,
    VideoJob,
    default_cache_dir,
    depth_id,
    record_c2w,
    record_scale,
    trial_key,
    video_sha256,
)

TRIAL_COLUMNS = ["clip", "trial", "seed", "status", "error", *METRIC_NAMES, "scale_sample", "scale_gt",
                 "seconds"]


@dataclass
class EvalRunConfig:
    exp_dir: str  # experiment folder: samples/, gt_video/, camera_data/ (eval generate)
    out_dir: str  # results folder
    num_trials: int = 5  # pose-estimation trials per video
    base_seed: int = 0  # seed of trial 0; trial k uses base_seed + k
    k_std: float = 10.0  # outlier rule: drop trials > k pooled std off
    limit: int | None = None  # only the first N clips (sorted by name); None = all
    poses: bool = True  # False: FVD only (no pose estimation)
    pose: PoseEstimationConfig = field(default_factory=PoseEstimationConfig)  # pose estimation (eval.pose_estimation)
    fvd: FVDConfig | None = field(default_factory=fvd_from_weights)  # no variants and no weights (or None): no FVD
    show_progress: bool = True  # progress bar
    executor: Literal["ray", "local"] = "ray"  # ray: a task per video and trial (on Ray, see ray.*); local: inline
    ray: RayConfig = field(default_factory=RayConfig)  # address / local CPUs, as `annotate run`
    cpus_per_task: float = 1.0  # CPUs reserved per pose task (also pycolmap's thread count)
    max_videos_in_flight: int | None = None  # videos with tasks queued at once; None: 2 x cluster CPUs / cpus_per_task
    cache_dir: str | None = None  # ground-truth trials shared by experiments; None: <out_dir>/../gt_cache
    # Depth Anything V2 metric model (hub id or local folder) for the metric scale; None: no absolute metrics
    depth_model: str | None = None
    depth_device: str = "auto"  # device of the depth model (auto: cuda when available)


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
class ClipPlan:
    """One clip as the driver saw it: a clip-level error, or the keys of its two videos' trials."""

    name: str
    error: str = ""  # missing file, unreadable video or camera, wrong frame count, failed depth
    sample_key: str = ""
    gt_key: str = ""
    gt_c2w: np.ndarray | None = None  # the camera file's trajectory relative to frame 0


def plan_clips(clips: list[ClipPaths], cfg: EvalRunConfig, depth: DepthSource | None, stores: dict[str, TrialStore],
               stats: RunStats, prog: TrialProgress, plans: list[ClipPlan]) -> Iterator[VideoJob]:
    """Check each clip, key its videos and yield the trials still missing from the stores (lazily, so the
    driver reads the next clips while the first ones' tasks run). Clip-level failures go to ``plans``."""
    seeds = [cfg.base_seed + k for k in range(cfg.num_trials)]
    did = depth_id(depth)
    for clip in clips:
        plan = ClipPlan(clip.name)
        plans.append(plan)

        def fail(msg: str, plan: ClipPlan = plan, left: int = 2 * len(seeds)) -> None:
            logger.warning("%s: %s", plan.name, msg)
            plan.error = msg
            prog.advance(left, computed=False)

        if clip.missing:
            fail(f"missing {', '.join(clip.missing)}")
            continue
        try:
            cam = load_camera(clip.camera)
            frames = {"sample": read_frames(clip.sample), "gt": read_frames(clip.gt_video)}
        except (ValueError, OSError) as e:
            fail(str(e))
            continue
        n, sample, gt = len(cam), frames["sample"], frames["gt"]
        if len(sample) != n or len(gt) != n:
            fail(f"frame counts differ: camera {n}, sample {len(sample)}, gt_video {len(gt)}")
            continue
        gt_wh = (gt.shape[2], gt.shape[1])
        paths = {"sample": clip.sample, "gt": clip.gt_video}
        jobs = []
        for kind in ("sample", "gt"):
            v = frames[kind]
            intr = [float(x) for x in intrinsics_for(cam, v.shape[2], v.shape[1], gt_wh)]
            key = trial_key(video_sha256(paths[kind]), intr, cfg.pose, did)
            setattr(plan, f"{kind}_key", key)
            todo = [s for s in seeds if stores[kind].load(key, s) is None]
            stats.reused[kind] += len(seeds) - len(todo)
            prog.advance(len(seeds) - len(todo), computed=False)
            jobs.append(VideoJob(kind, clip.name, str(paths[kind]), intr, key, todo, stores[kind]))
        try:
            for job in jobs:
                if job.seeds and depth is not None:
                    job.depth0 = predict_depth0(depth, frames[job.kind])
        except Exception as e:  # noqa: BLE001 - a broken depth model fails the clip, visibly
            fail(f"depth prediction failed: {e.__class__.__name__}: {e}", left=sum(len(j.seeds) for j in jobs))
            continue
        plan.gt_c2w = relative_to(cam.c2w, 0)
        del frames, sample, gt
        yield from jobs


def clip_rows(plan: ClipPlan, cfg: EvalRunConfig, depth: bool, stores: dict[str, TrialStore], stats: RunStats,
              traj_dir: Path | None) -> list[dict[str, Any]]:
    """The clip's trial rows from the stored records (fresh or resumed: the same numbers either way)."""
    seeds = [cfg.base_seed + k for k in range(cfg.num_trials)]
    if plan.error:
        return [_trial_row(plan.name, k, s, "failed", plan.error) for k, s in enumerate(seeds)]
    rows, saved = [], False
    label = {"sample": "sample", "gt": "gt_video"}
    for k, seed in enumerate(seeds):
        recs, errs = {}, []
        for kind in ("sample", "gt"):
            rec = stores[kind].load(getattr(plan, f"{kind}_key"), seed)
            if rec is None:
                errs.append(f"{label[kind]}: task failed: {stats.crashes.get(f'{kind}:{plan.name}:{seed}', '?')}")
            elif rec["status"] != "ok":
                errs.append(f"{label[kind]}: {rec['error']}")
            recs[kind] = rec
        secs = sum(float(r["seconds"]) for r in recs.values() if r is not None)
        if errs:
            rows.append(_trial_row(plan.name, k, seed, "failed", errs[0], seconds=secs))
            continue
        es, eg = record_c2w(recs["sample"]), record_c2w(recs["gt"])
        ss, sg = record_scale(recs["sample"]), record_scale(recs["gt"])
        if depth:
            m = camera_metrics(es, plan.gt_c2w, ss, sg, es, eg).as_dict()
        else:
            m = camera_metrics(es, plan.gt_c2w).as_dict()
            m["TransErr_abs"] = m["CamMC_abs"] = math.nan
        rows.append(_trial_row(plan.name, k, seed, "ok", "", m, ss, sg, secs))
        if traj_dir is not None and not saved:
            traj_dir.mkdir(parents=True, exist_ok=True)
            np.savez(traj_dir / f"{plan.name}.npz", gt_c2w=plan.gt_c2w, sample_c2w=es, gt_video_c2w=eg,
                     scale_sample=np.nan if ss is None else ss, scale_gt=np.nan if sg is None else sg,
                     trial=k, seed=seed)
            saved = True
    return rows


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
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def run_evaluation(cfg: EvalRunConfig, depth: DepthSource | None = None) -> dict[str, Any]:
    """Pose metrics (and FVD when configured) over ``cfg.exp_dir``; writes the files listed in the
    module docstring into ``cfg.out_dir`` and returns the summary. Trials already stored (in ``OUT/trials``
    and the ground-truth cache) are reused; the rest run as Ray tasks (:mod:`eval.trials`). ``depth``: the
    metric depth source; None: ``cfg.depth_model``'s (when given and poses are estimated)."""
    t0, c0 = time.perf_counter(), time.process_time()
    if depth is None and cfg.poses and cfg.depth_model:
        from annotate.depth import DepthAnythingPredictor, DepthConfig

        depth = DepthAnythingPredictor(DepthConfig(model=cfg.depth_model, device=cfg.depth_device))
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clips = discover_clips(cfg.exp_dir)
    if cfg.limit is not None:
        clips = clips[: cfg.limit]
    summary: dict[str, Any] = {"exp_dir": str(cfg.exp_dir), "num_trials": cfg.num_trials,
                               "metric_depth": depth is not None}
    stats = RunStats()
    if cfg.poses:
        cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir(out)
        stores = {"sample": TrialStore(out / "trials"), "gt": TrialStore(cache / "gt_trials")}
        plans: list[ClipPlan] = []
        prog = TrialProgress(2 * len(clips) * cfg.num_trials, cfg.show_progress)
        started = False
        try:
            if cfg.executor == "ray":
                from annotate.job import start_ray

                started = start_ray(cfg.ray)
            Executor(cfg.executor, cfg.cpus_per_task, cfg.max_videos_in_flight).run(
                plan_clips(clips, cfg, depth, stores, stats, prog, plans), cfg.pose, stats, prog)
        finally:
            prog.close()
            if started:
                from annotate.job import stop_ray

                stop_ray()
        rows_by_clip = {p.name: clip_rows(p, cfg, depth is not None, stores, stats, out / "trajectories")
                        for p in plans}
        for name, rows in rows_by_clip.items():
            ok = sum(r["status"] == "ok" for r in rows)
            logger.info("%s: %d/%d trials ok", name, ok, len(rows))
        rows = [r for rs in rows_by_clip.values() for r in rs]
        _write_csv(out / "trials.csv", rows, TRIAL_COLUMNS)
        per_video = {name: [({m: r[m] for m in METRIC_NAMES} if r["status"] == "ok" else r["error"]) for r in rs]
                     for name, rs in rows_by_clip.items()}
        aggregates = aggregate_trials(per_video, METRIC_NAMES, cfg.k_std)
        # No timings here: clips.csv depends only on the trials, so a resumed run writes the same file.
        clip_rows_out = [{"clip": a.name, "ok": a.ok, **{m: a.means.get(m, math.nan) for m in METRIC_NAMES},
                          "num_trials": a.num_trials, "num_failed": a.num_failed, "num_outliers": a.num_outliers,
                          "errors": " | ".join(a.errors)} for a in aggregates.values()]
        _write_csv(out / "clips.csv", clip_rows_out, list(clip_rows_out[0]) if clip_rows_out else ["clip"])
        write_json(out / "clips.json", clip_rows_out, nonfinite_as_null=True)
        summary.update(summarize(aggregates, METRIC_NAMES))
        summary["gt_cache"] = str(cache)
        if depth is None:
            summary["note"] = "no metric depth source: absolute metrics (TransErr_abs, CamMC_abs) not computed"
    fvd = resolve_fvd(cfg.fvd) if cfg.fvd is not None else None
    if fvd is not None and fvd.variants:
        summary["fvd_device"] = fvd.device
        pairs = [(c.gt_video, c.sample) for c in clips if c.gt_video is not None and c.sample is not None]
        summary["fvd_num_videos"] = len(pairs)
        try:
            summary.update(fvd_from_paths([p[0] for p in pairs], [p[1] for p in pairs], fvd))
        except Exception as e:  # noqa: BLE001 - the pose metrics are still written
            logger.error("FVD failed: %s", e)
            summary["fvd_error"] = f"{e.__class__.__name__}: {e}"
            for v in fvd.variants:
                summary.setdefault(FVD_KEYS[v], math.nan)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0  # the driver's, which includes the trials when they run inline
    if cfg.executor == "ray":
        cpu += stats.task_cpu_seconds
    computed = stats.computed["sample"] + stats.computed["gt"]
    summary["trials"] = stats.as_dict()
    summary["wall_seconds"] = round(wall, 2)
    summary["cpu_seconds"] = round(cpu, 2)  # the trial and extraction tasks' CPU time plus the driver's
    summary["video_trials_per_cpu_hour"] = round(3600 * computed / cpu, 1) if computed and cpu > 0 else None
    summary["config"] = asdict(cfg)
    write_json(out / "summary.json", summary, nonfinite_as_null=True)
    return summary


# ------------------------------------------------------------------------------------------------ command line
# Option names shared with `eval estimate-poses` (pose) and `eval fvd` (FVD); the historical names.

POSE_FLAGS = {"--trials": "num_trials", "--seed": "base_seed", "--overlap": "pose.sequential_overlap",
              "--camera-model": "pose.camera_model",
              "--allow-unregistered": "pose.allow_unregistered", "--depth-model": "depth_model",
              "--depth-device": "depth_device"}
FVD_FLAGS = {"--videogpt-i3d": "fvd.videogpt_weights", "--styleganv-i3d": "fvd.styleganv_torchscript",
             "--num-frames": "fvd.num_frames", "--fvd-batch": "fvd.batch_size", "--device": "fvd.device",
             "--fvd-method": "fvd.method"}
RUN_FLAGS = {"--out": "out_dir", "--k-std": "k_std", "--limit": "limit", "--progress": "show_progress",
             "--cache": "cache_dir", "--executor": "executor", "--address": "ray.address", "--num-cpus": "ray.num_cpus",
             "--cpus-per-task": "cpus_per_task", "--max-videos-in-flight": "max_videos_in_flight",
             **POSE_FLAGS, **FVD_FLAGS}


NO_AFFINE = {"--no-affine": ("plain SIFT (no affine shape / domain-size pooling; faster, differs from the reference)",
                             {"pose.estimate_affine_shape": False, "pose.domain_size_pooling": False})}


def fvd_variants(cfg: Any) -> Any:
    """The variants the run will compute, shown by --print-config (the device stays as given: auto is resolved
    where FVD runs)."""
    if cfg.fvd is not None:
        cfg.fvd.variants = resolve_fvd(cfg.fvd).variants
    return cfg


def main(cfg: EvalRunConfig) -> dict[str, Any]:
    """Preflight (before a depth model or Ray starts and before ``out_dir`` is created), then the evaluation;
    its summary."""
    from eval.preflight import check_run

    check_run(cfg).raise_if_any()
    return run_evaluation(cfg)


def _run(cfg: EvalRunConfig, args: argparse.Namespace) -> int:
    summary = main(cfg)
    summary.pop("config", None)
    print(json_text(summary, nonfinite_as_null=True))
    n = summary.get("num_videos")
    return 0 if (not cfg.poses or (n and summary.get("num_succeeded"))) else 1


def command() -> Command:
    from eval.log import ERRORS, LOG_LEVEL

    return Command(EvalRunConfig, _run, "python -m eval run", "evaluate EXP_DIR (samples/, gt_video/, camera_data/)",
                   positionals=("exp_dir",), flags=RUN_FLAGS, check=fvd_variants,
                   switches={**NO_AFFINE, "--fvd-only": ("skip pose estimation", {"poses": False})},
                   log_level=LOG_LEVEL, errors=ERRORS)


def cli(argv: list[str] | None = None) -> int:
    return command().main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(cli())
