"""Pose-estimation trials as units of work: keyed, cached on disk, run as Ray tasks (or inline).

A *video trial* is one seeded matching + GLOMAP run of one video (:mod:`eval.pose_estimation`). Its
result is a small JSON record (status, error, c2w relative to frame 0, metric scale, timings) stored at

    <store>/<key>/seed_<seed>.json        key = sha256(video sha256, intrinsics, pose settings, depth source)

and written atomically (:func:`annotate.files.atomic_write_text`) by the driver as each task finishes, so
a run killed at any point (SIGKILL included) loses only the trials in flight. Ground-truth videos go to a
store shared by experiments (the ``--cache`` folder), samples to ``OUT/trials``: a ground-truth video
scored for a second method with the same settings is not estimated again. Failed trials
(:class:`PoseEstimationError`: GLOMAP found no full model) are deterministic for a seed and are stored
too; a task that crashed (worker died, unreadable video) is not, and is retried by the next run.

Tasks: per video one feature-extraction task (its SQLite database travels through Ray's object store)
and one task per trial that depends on it, each reserving ``cpus_per_task`` CPUs (also pycolmap's
thread count). The driver keeps a bounded window of videos in flight, so memory and the object store
stay bounded however many clips there are. Video paths must be readable by every Ray node (a shared
file system on a cluster); the depth model (when given) runs in the driver, once per video with work
left, and its frame-0 map is passed to the trial tasks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from annotate.files import atomic_write_text
from eval.log import logger, progress_bar
from eval.pose_estimation import PoseEstimationConfig, PoseEstimationError, VideoPoseEstimator

RECORD_FORMAT = 1
# Settings that change how fast or how loudly a trial runs, not what it estimates: not part of the key.
RUNTIME_FIELDS = ("num_threads", "colmap_min_log_level", "keep_workdir")
DEFAULT_CACHE_NAME = "gt_cache"  # beside the results folder: results/<method>/ share results/gt_cache/


def default_cache_dir(out_dir: str | os.PathLike) -> Path:
    """The ground-truth trial cache used when none is given: ``<OUT>/../gt_cache``, shared by the
    results folders of every method evaluated side by side."""
    return Path(out_dir).resolve().parent / DEFAULT_CACHE_NAME


# --------------------------------------------------------------------------------------------- keys


def video_sha256(path: str | os.PathLike) -> str:
    """sha256 of a video file, or of an image folder's frames (names and bytes, in frame order)."""
    from annotate.video import list_images

    path = Path(path)
    h = hashlib.sha256()
    files = list_images(path) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def depth_id(depth: Any) -> str | None:
    """What identifies a depth source in the cache key (the metric scale depends on it)."""
    if depth is None:
        return None
    key = getattr(depth, "cache_key", None)
    if key:
        return str(key)
    cfg = getattr(depth, "cfg", None)
    if cfg is not None and hasattr(cfg, "model"):  # annotate.depth.DepthAnythingPredictor
        return f"{type(depth).__name__}:{cfg.model}:input={cfg.input_size}:{getattr(depth, 'dtype', '')}"
    name = f"{type(depth).__module__}.{getattr(depth, '__qualname__', type(depth).__qualname__)}"
    logger.warning("depth source %s has no cache_key: cached trials are shared by every instance of it", name)
    return name


def pose_settings(cfg: PoseEstimationConfig) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RUNTIME_FIELDS}


def trial_key(video_sha: str, intrinsics_px: Iterable[float], cfg: PoseEstimationConfig, depth: str | None) -> str:
    """The cache key of a video's trials: the video's content, the intrinsics it is estimated with, the pose
    settings and the depth source; the seed names the file inside."""
    blob = json.dumps({"format": RECORD_FORMAT, "video_sha256": video_sha,
                       "intrinsics_px": [repr(float(v)) for v in intrinsics_px],
                       "pose": pose_settings(cfg), "depth": depth}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class TrialStore:
    """Records of one kind of video (ground truth or samples) under ``root``."""

    root: Path

    def path(self, key: str, seed: int) -> Path:
        return self.root / key / f"seed_{seed}.json"

    def load(self, key: str, seed: int) -> dict | None:
        p = self.path(key, seed)
        try:
            rec = json.loads(p.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:  # atomic writes make this a foreign or damaged file: recompute it
            logger.warning("%s: unreadable trial record (%s); computing it again", p, e)
            return None
        if rec.get("format") != RECORD_FORMAT or rec.get("key") != key or rec.get("seed") != seed:
            logger.warning("%s: record does not match its key/seed; computing it again", p)
            return None
        return rec

    def save(self, rec: dict) -> None:
        atomic_write_text(self.path(rec["key"], rec["seed"]), json.dumps(rec, indent=None) + "\n")


# -------------------------------------------------------------------------------------------- tasks


def _threads(cfg: PoseEstimationConfig, cpus: float) -> PoseEstimationConfig:
    if cfg.num_threads == -1:  # not every core of the node: as many as the task reserved
        cfg = dataclasses.replace(cfg, num_threads=max(1, int(cpus)))
    return cfg


def extract_task(video: str, intrinsics_px: list[float], cfg: PoseEstimationConfig) -> dict:
    """Feature extraction of one video: its database bytes and what it cost."""
    from annotate.video import read_frames

    t0, c0 = time.perf_counter(), time.process_time()
    frames = read_frames(video)
    with VideoPoseEstimator(frames, intrinsics_px, cfg) as est:
        db = est.features_bytes()
    return {"db": db, "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}


def trial_task(video: str, intrinsics_px: list[float], cfg: PoseEstimationConfig, features: dict,
               depth0: np.ndarray | None, seed: int) -> dict:
    """One trial from extracted features; a failed reconstruction is a ``failed`` result, not an exception."""
    from annotate.video import read_frames

    t0, c0 = time.perf_counter(), time.process_time()
    frames = read_frames(video)
    out: dict[str, Any] = {"seed": seed, "status": "failed", "error": "", "c2w": None, "metric_scale": None,
                           "num_points3d": 0, "num_scale_points": 0}
    with VideoPoseEstimator(frames, intrinsics_px, cfg, depth0) as est:
        est.load_features(features["db"])
        try:
            e = est.run(seed)
        except PoseEstimationError as err:
            out["error"] = str(err)
        else:
            out.update(status="ok", c2w=e.c2w.tolist(), metric_scale=e.metric_scale, num_points3d=e.num_points3d,
                       num_scale_points=e.num_scale_points)
    out["seconds"] = round(time.perf_counter() - t0, 3)
    out["cpu_seconds"] = round(time.process_time() - c0, 3)
    out["extract_seconds"] = round(features["seconds"], 3)
    out["extract_cpu_seconds"] = round(features["cpu_seconds"], 3)
    return out


# ------------------------------------------------------------------------------------------ running


@dataclass
class VideoJob:
    """The trials one video still needs."""

    kind: str  # "sample" | "gt"
    clip: str
    video: str
    intrinsics_px: list[float]
    key: str
    seeds: list[int]
    store: TrialStore
    depth0: np.ndarray | None = None  # frame 0's metric depth (computed only when there is work left)


@dataclass
class RunStats:
    computed: dict[str, int] = field(default_factory=lambda: {"sample": 0, "gt": 0})
    reused: dict[str, int] = field(default_factory=lambda: {"sample": 0, "gt": 0})
    crashed: int = 0
    task_cpu_seconds: float = 0.0
    crashes: dict[str, str] = field(default_factory=dict)  # "<kind>:<clip>:<seed>" -> error (this run only)

    def as_dict(self) -> dict[str, Any]:
        return {"sample_trials_computed": self.computed["sample"], "sample_trials_resumed": self.reused["sample"],
                "gt_trials_computed": self.computed["gt"], "gt_trials_cached": self.reused["gt"],
                "trials_crashed": self.crashed, "task_cpu_seconds": round(self.task_cpu_seconds, 2)}


class TrialProgress:
    """Video trials done (rich, stderr) with trials per minute of this run and the expected time left."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.computed, self.t0 = total, 0, 0, time.perf_counter()
        self._stack = ExitStack()
        self.bar = self._stack.enter_context(progress_bar("pose trials", total, enabled=enabled and bool(total),
                                                          transient=False))

    def info(self) -> str:
        dt = time.perf_counter() - self.t0
        rate = 60.0 * self.computed / dt if dt > 0 else 0.0
        left = self.total - self.done
        eta = f"{left / rate:.1f} min left" if rate > 0 else "-- min left"
        return f"{rate:.1f} trials/min  {eta}"

    def advance(self, n: int = 1, computed: bool = True) -> None:
        self.done += n
        self.computed += n if computed else 0
        self.bar.update(completed=self.done, info=self.info())

    def close(self) -> None:
        self._stack.close()


class Executor:
    """Runs :class:`VideoJob` s: ``ray`` (tasks on a local or joined Ray) or ``local`` (inline, for debugging)."""

    def __init__(self, kind: str, cpus_per_task: float = 1.0, max_videos_in_flight: int | None = None):
        if kind not in ("ray", "local"):
            raise ValueError(f"executor must be 'ray' or 'local', got {kind!r}")
        self.kind, self.cpus = kind, float(cpus_per_task)
        self.window = max_videos_in_flight

    def run(self, jobs: Iterator[VideoJob], cfg: PoseEstimationConfig, stats: RunStats,
            prog: TrialProgress) -> None:
        cfg = _threads(cfg, self.cpus)
        if self.kind == "local":
            for job in jobs:
                if job.seeds:
                    features = extract_task(job.video, job.intrinsics_px, cfg)
                    for i, seed in enumerate(job.seeds):
                        self._finish(job, trial_task(job.video, job.intrinsics_px, cfg, features, job.depth0, seed),
                                     i == 0, stats, prog)
            return
        self._run_ray(jobs, cfg, stats, prog)

    def _run_ray(self, jobs: Iterator[VideoJob], cfg: PoseEstimationConfig, stats: RunStats,
                 prog: TrialProgress) -> None:
        import ray

        opts = dict(num_cpus=self.cpus, max_retries=2)  # retries cover dead workers, not Python exceptions
        extract = ray.remote(extract_task).options(**opts)
        trial = ray.remote(trial_task).options(**opts)
        window = self.window or max(2, 2 * int(ray.cluster_resources().get("CPU", 1) / max(self.cpus, 1e-3)))
        pending: dict[Any, tuple[VideoJob, int, bool]] = {}  # ref -> (job, seed, first trial of its video)
        videos: deque[int] = deque()  # ids of jobs with tasks in flight (bounds the window)
        left: dict[int, int] = {}

        def collect(block: bool) -> None:
            """Store every finished trial now (at least one when ``block``): a kill loses only those in flight."""
            if not pending:
                return
            ready = ray.wait(list(pending), num_returns=1, timeout=None)[0] if block else []
            ready += ray.wait([r for r in pending if r not in ready], num_returns=len(pending) - len(ready),
                              timeout=0)[0] if len(pending) > len(ready) else []
            for ref in ready:
                job, seed, first = pending.pop(ref)
                try:
                    res = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - a crashed task: reported, not stored, retried next run
                    msg = _short_error(e)
                    logger.warning("%s (%s) seed %d: task failed: %s", job.clip, job.kind, seed, msg)
                    stats.crashed += 1
                    stats.crashes[f"{job.kind}:{job.clip}:{seed}"] = msg
                    prog.advance(1)
                else:
                    self._finish(job, res, first, stats, prog)
                left[id(job)] -= 1
                if not left[id(job)]:
                    del left[id(job)]
                    videos.remove(id(job))

        for job in jobs:
            if not job.seeds:
                continue
            collect(False)
            while len(videos) >= window:
                collect(True)
            features = extract.remote(job.video, job.intrinsics_px, cfg)
            depth0 = None if job.depth0 is None else ray.put(job.depth0)  # once, not once per trial
            for i, seed in enumerate(job.seeds):
                ref = trial.remote(job.video, job.intrinsics_px, cfg, features, depth0, seed)
                pending[ref] = (job, seed, i == 0)
            del features, depth0  # freed from the object store once its trials are done
            job.depth0 = None
            videos.append(id(job))
            left[id(job)] = len(job.seeds)
        while pending:
            collect(True)

    @staticmethod
    def _finish(job: VideoJob, res: dict, first: bool, stats: RunStats, prog: TrialProgress) -> None:
        rec = {"format": RECORD_FORMAT, "key": job.key, "kind": job.kind, "video": job.video, **res}
        job.store.save(rec)
        stats.computed[job.kind] += 1
        stats.task_cpu_seconds += res["cpu_seconds"] + (res["extract_cpu_seconds"] if first else 0.0)
        prog.advance(1)


def _short_error(e: BaseException) -> str:
    cause = getattr(e, "cause", None)  # RayTaskError wraps the task's own exception
    err = cause if isinstance(cause, BaseException) else e
    text = str(err).strip().splitlines()
    return f"{err.__class__.__name__}: {text[-1] if text else ''}"


def record_c2w(rec: dict) -> np.ndarray:
    return np.asarray(rec["c2w"], np.float64)


def record_scale(rec: dict) -> float | None:
    s = rec.get("metric_scale")
    return None if s is None or (isinstance(s, float) and math.isnan(s)) else float(s)
