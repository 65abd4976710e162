"""Camera poses of a (generated or real) video with pycolmap's SIFT + GLOMAP, in process.

Mirrors the authors' evaluation (``evaluation/glomap_evaluation.py``, ``utils/common.py``, ``utils/merge.py``):

1. frames are written as ``000.png``, ``001.png``, ... to a temporary folder;
2. SIFT extraction into a fresh database with one shared camera (``SIMPLE_PINHOLE`` with
   ``f = fx`` of the ground truth as the reference does, or ``PINHOLE``) with the known intrinsics;
   affine-shape estimation and domain-size pooling on, as in the reference;
3. sequential matching with guided matching and up to 65536 matches; two-view geometry by RANSAC
   with a 4 px threshold (the reference's ``RelPoseEstimation.max_epipolar_error 4``; in pycolmap
   4.x GLOMAP takes the relative poses from these verified two-view geometries);
4. ``pycolmap.global_mapping`` (GLOMAP) with every intrinsic fixed (no focal, principal point or
   extra-parameter refinement);
5. the largest model is read; its w2c poses become c2w relative to frame 0.

Frames missing from the largest model make the trial fail (:class:`PoseEstimationError`) unless
``allow_unregistered`` is set, in which case they are reported in ``PoseEstimate.registered`` and
their poses are NaN.

Metric scale (as the authors' evaluation): ``median(depth(frame 0)[keypoint] / z_cam)`` over the keypoints of
frame 0 that have a 3D point, where ``depth`` comes from any object with
``predict(frames uint8 [N,H,W,3]) -> float32 [N,H,W]`` metres (or a plain callable doing that).
Keypoint coordinates are rescaled to the depth map's size and truncated to integers, as the reference
does. Multiplying the estimate's translations by the scale gives metres.

Trials (:func:`estimate_trials`): the features are extracted once per video; every trial re-runs the
matching (RANSAC) and GLOMAP with its own random seed (``base_seed + trial``), which is what differs
between the reference's unseeded repeated runs. :func:`aggregate_trials` applies the reference's
outlier rule (``merge.py``): per metric, the mean and (population) standard deviation are pooled over
all successful trials of all videos; a trial any of whose metrics lies more than ``k = 10`` standard
deviations from the pooled mean is dropped; each video's remaining trials are averaged. Failures are
never dropped silently: they are counted in the success rate and listed.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from annotate.camera import relative_to, scale_translation, w2c_to_c2w
from annotate.depth import DepthPredictor
from eval.log import logger


class PoseEstimationError(RuntimeError):
    """A reconstruction that failed or did not register every frame."""


DepthSource = DepthPredictor | Callable[[np.ndarray], np.ndarray]  # a depth predictor, or a plain function


@dataclass
class PoseEstimationConfig:
    camera_model: Literal["SIMPLE_PINHOLE", "PINHOLE"] = "SIMPLE_PINHOLE"  # COLMAP camera model (PINHOLE: fx, fy apart)
    estimate_affine_shape: bool = True  # SIFT affine shape estimation (the reference's; off: --no-affine)
    domain_size_pooling: bool = True  # SIFT domain size pooling (the reference's; off: --no-affine)
    max_num_features: int = 8192  # SIFT features per frame
    guided_matching: bool = True  # match again along the estimated epipolar geometry
    max_num_matches: int = 65536  # matches per image pair
    sequential_overlap: int = 10  # sequential matching overlap (frames)
    max_epipolar_error: float = 4.0  # RANSAC threshold of two-view geometry (pixels)
    min_num_inliers: int = 15  # fewest inliers of a verified pair
    num_threads: int = -1  # COLMAP threads (-1: all cores)
    allow_unregistered: bool = False  # report unregistered frames instead of failing the trial (metrics then fail)
    colmap_min_log_level: int = 3  # glog: 0 INFO, 1 WARNING, 2 ERROR, 3 FATAL (failures come back as exceptions)
    keep_workdir: str | None = None  # copy the database, images and models here (debugging)


@dataclass
class PoseEstimate:
    c2w: np.ndarray  # [N, 4, 4] relative to frame 0 (NaN rows for unregistered frames)
    registered: np.ndarray  # bool [N]
    num_points3d: int
    num_models: int
    seed: int
    seconds: float
    metric_scale: float | None = None
    num_scale_points: int = 0

    @property
    def missing_frames(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(~self.registered)]

    def metric_c2w(self) -> np.ndarray:
        if self.metric_scale is None:
            raise ValueError("no metric scale was estimated (no depth predictor given)")
        return scale_translation(self.c2w, self.metric_scale)


@dataclass
class TrialOutcome:
    trial: int
    seed: int
    ok: bool
    estimate: PoseEstimate | None = None
    error: str = ""


# ----------------------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def quiet_colmap(min_level: int = 2) -> Iterator[None]:
    """Raise glog's minimum level while pycolmap runs (restored afterwards)."""
    import pycolmap

    old = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = max(int(old), int(min_level))
    try:
        yield
    finally:
        pycolmap.logging.minloglevel = old


def _set_seeds(obj: Any, seed: int, depth: int = 0) -> None:
    """Set every ``random_seed`` attribute of a pycolmap options tree."""
    if depth > 4:
        return
    for name in dir(obj):
        if name.startswith("_"):
            continue
        try:
            val = getattr(obj, name)
        except Exception:  # noqa: BLE001 - some properties raise on access
            continue
        if name == "random_seed":
            setattr(obj, name, int(seed))
        elif type(val).__module__.startswith("pycolmap") and hasattr(val, "summary") and not callable(val):
            _set_seeds(val, seed, depth + 1)


def frame_names(n: int) -> list[str]:
    width = max(3, len(str(n - 1)))
    return [f"{i:0{width}d}.png" for i in range(n)]


def camera_params(intr_px: Sequence[float], model: str) -> str:
    fx, fy, cx, cy = (float(v) for v in intr_px)
    if model == "SIMPLE_PINHOLE":
        return f"{fx!r},{cx!r},{cy!r}"
    if model == "PINHOLE":
        return f"{fx!r},{fy!r},{cx!r},{cy!r}"
    raise ValueError(f"camera_model must be SIMPLE_PINHOLE or PINHOLE, got {model!r}")


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames [N,H,W,3], got {frames.dtype} {frames.shape}")
    if len(frames) < 2:
        raise ValueError("pose estimation needs at least 2 frames")
    return frames


def predict_depth0(depth: DepthSource, frames: np.ndarray) -> np.ndarray:
    """Metric depth of frame 0 ``[H', W']`` from a predictor object or a callable."""
    fn = depth.predict if hasattr(depth, "predict") else depth
    out = np.asarray(fn(np.ascontiguousarray(frames[:1])), dtype=np.float32)
    if out.ndim == 3:
        out = out[0]
    if out.ndim != 2:
        raise ValueError(f"depth predictor returned shape {out.shape}, expected [N,H,W]")
    return out


def scale_from_depth(rec: Any, image: Any, depth0: np.ndarray) -> tuple[float, int]:
    """``median(depth0[v, u] / z_cam)`` over the keypoints of ``image`` that have a 3D point."""
    cam = rec.cameras[image.camera_id]
    obs = image.get_observation_points2D()
    if len(obs) == 0:
        raise PoseEstimationError("frame 0 observes no 3D points: no metric scale")
    xy = np.array([p.xy for p in obs], np.float64)
    xyz = np.array([rec.points3D[p.point3D_id].xyz for p in obs], np.float64)
    z = (image.cam_from_world() * xyz)[:, 2]
    hd, wd = depth0.shape
    u = np.clip((xy[:, 0] / cam.width * wd).astype(np.int64), 0, wd - 1)
    v = np.clip((xy[:, 1] / cam.height * hd).astype(np.int64), 0, hd - 1)
    d = depth0[v, u].astype(np.float64)
    ok = (z > 0) & np.isfinite(d) & (d > 0)
    if not ok.any():
        raise PoseEstimationError("no keypoint of frame 0 has positive depth and camera z")
    return float(np.median(d[ok] / z[ok])), int(ok.sum())


def _db_stats(db: Path) -> str:
    """What the matcher found, for failure messages."""
    import pycolmap

    try:
        d = pycolmap.Database.open(str(db))
        try:
            return (f"{d.num_images()} images, {d.num_keypoints()} keypoints, {d.num_matched_image_pairs()} matched "
                    f"pairs, {d.num_verified_image_pairs()} geometrically verified pairs")
        finally:
            d.close()
    except Exception as e:  # noqa: BLE001
        return f"database unreadable: {e}"


# ----------------------------------------------------------------------------------------- pipeline


class VideoPoseEstimator:
    """Feature extraction once per video, then any number of seeded matching + GLOMAP trials."""

    def __init__(self, frames: np.ndarray, intrinsics_px: Sequence[float], config: PoseEstimationConfig | None = None,
                 depth0: np.ndarray | None = None):
        self.frames = _check_frames(frames)
        self.intrinsics_px = [float(v) for v in intrinsics_px]
        self.config = config or PoseEstimationConfig()
        self.depth0 = depth0
        self._tmp = Path(tempfile.mkdtemp(prefix="realcam_eval_poses_"))
        self.image_dir = self._tmp / "images"
        self.names = frame_names(len(self.frames))
        self._extracted_db: Path | None = None
        self.extract_seconds = 0.0

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> VideoPoseEstimator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write_images(self) -> None:
        self.image_dir.mkdir(parents=True, exist_ok=True)
        for name, img in zip(self.names, self.frames):
            Image.fromarray(img).save(self.image_dir / name)

    def features_bytes(self) -> bytes:
        """The extracted feature database (SQLite), so that trials in other processes can skip extraction."""
        return self._extract().read_bytes()

    def load_features(self, db: bytes) -> None:
        """Use a database from :meth:`features_bytes` of the same frames and configuration instead of extracting."""
        self._write_images()  # GLOMAP reads the images (point colours)
        path = self._tmp / "features.db"
        path.write_bytes(db)
        self._extracted_db = path

    def _extract(self) -> Path:
        if self._extracted_db is not None:
            return self._extracted_db
        import pycolmap

        cfg = self.config
        t0 = time.perf_counter()
        self._write_images()
        db = self._tmp / "features.db"
        reader = pycolmap.ImageReaderOptions()
        reader.camera_model = cfg.camera_model
        reader.camera_params = camera_params(self.intrinsics_px, cfg.camera_model)
        extraction = pycolmap.FeatureExtractionOptions()
        extraction.num_threads = cfg.num_threads
        extraction.sift.max_num_features = cfg.max_num_features
        extraction.sift.estimate_affine_shape = cfg.estimate_affine_shape
        extraction.sift.domain_size_pooling = cfg.domain_size_pooling
        with quiet_colmap(cfg.colmap_min_log_level):
            pycolmap.extract_features(db, self.image_dir, image_names=self.names,
                                      camera_mode=pycolmap.CameraMode.SINGLE,
                                      reader_options=reader, extraction_options=extraction, device=pycolmap.Device.cpu)
        self._extracted_db = db
        self.extract_seconds = time.perf_counter() - t0
        return db

    def run(self, seed: int = 0) -> PoseEstimate:
        """One trial: sequential matching + GLOMAP with ``seed``; raises :class:`PoseEstimationError`."""
        import pycolmap

        cfg = self.config
        t0 = time.perf_counter()
        src_db = self._extract()
        work = self._tmp / f"trial_seed{seed}"
        shutil.rmtree(work, ignore_errors=True)
        (work / "sparse").mkdir(parents=True)
        db = work / "database.db"
        shutil.copyfile(src_db, db)

        matching = pycolmap.FeatureMatchingOptions()
        matching.num_threads = cfg.num_threads
        matching.guided_matching = cfg.guided_matching
        matching.max_num_matches = cfg.max_num_matches
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = cfg.sequential_overlap
        verification = pycolmap.TwoViewGeometryOptions()
        verification.ransac.max_error = cfg.max_epipolar_error
        verification.min_num_inliers = cfg.min_num_inliers
        verification.ransac.random_seed = int(seed)

        options = pycolmap.GlobalPipelineOptions()
        options.num_threads = cfg.num_threads
        options.min_num_matches = cfg.min_num_inliers
        _set_seeds(options, seed)
        ba = options.mapper.bundle_adjustment
        ba.refine_focal_length = False
        ba.refine_principal_point = False
        ba.refine_extra_params = False
        # CPU only: keep the solvers off the GPU code paths.
        options.mapper.global_positioning.use_gpu = False
        ba.ceres.use_gpu = False

        with quiet_colmap(cfg.colmap_min_log_level):
            pycolmap.match_sequential(db, matching_options=matching, pairing_options=pairing,
                                      verification_options=verification, device=pycolmap.Device.cpu)
            try:
                models = pycolmap.global_mapping(db, self.image_dir, work / "sparse", options)
            except Exception as e:  # noqa: BLE001 - pycolmap raises plain RuntimeErrors
                raise PoseEstimationError(f"GLOMAP failed: {e.__class__.__name__}: {e} ({_db_stats(db)})") from e
        if cfg.keep_workdir:
            dst = Path(cfg.keep_workdir) / work.name
            shutil.copytree(work, dst, dirs_exist_ok=True)
        if not models:
            raise PoseEstimationError(f"GLOMAP produced no model ({_db_stats(db)})")
        rec = max(models.values(), key=lambda r: r.num_reg_images())
        est = self._read_model(rec, seed, len(models), time.perf_counter() - t0)
        shutil.rmtree(work, ignore_errors=True)
        return est

    def _read_model(self, rec: Any, seed: int, num_models: int, seconds: float) -> PoseEstimate:
        n = len(self.frames)
        index = {name: i for i, name in enumerate(self.names)}
        w2c = np.full((n, 3, 4), np.nan)
        registered = np.zeros(n, bool)
        image0 = None
        for image in rec.images.values():
            if not image.has_pose or image.name not in index:
                continue
            i = index[image.name]
            w2c[i] = np.asarray(image.cam_from_world().matrix(), np.float64)
            registered[i] = True
            if i == 0:
                image0 = image
        self._check_intrinsics(rec)
        missing = [int(i) for i in np.flatnonzero(~registered)]
        if missing and (not self.config.allow_unregistered or image0 is None):
            raise PoseEstimationError(f"{len(missing)} of {n} frames not registered in the largest model "
                                      f"({num_models} model(s)): frames {missing}")
        c2w = np.full((n, 4, 4), np.nan)
        c2w[registered] = relative_to(w2c_to_c2w(w2c[registered]), 0)  # frame 0 is registered here
        est = PoseEstimate(c2w=c2w, registered=registered, num_points3d=int(rec.num_points3D()),
                           num_models=num_models, seed=seed, seconds=seconds)
        if self.depth0 is not None:
            est.metric_scale, est.num_scale_points = scale_from_depth(rec, image0, self.depth0)
        return est

    def _check_intrinsics(self, rec: Any) -> None:
        for cam in rec.cameras.values():
            want = np.array([float(v) for v in camera_params(self.intrinsics_px, self.config.camera_model).split(",")])
            got = np.asarray(cam.params, np.float64)
            if got.shape != want.shape or not np.allclose(got, want, rtol=1e-6, atol=1e-6):
                logger.warning("camera intrinsics changed during mapping: %s -> %s", want, got)


def estimate_poses(frames: np.ndarray, intrinsics_px: Sequence[float], config: PoseEstimationConfig | None = None,
                   seed: int = 0, depth: DepthSource | None = None) -> PoseEstimate:
    """One pose-estimation trial of a video (see the module docstring)."""
    frames = _check_frames(frames)
    depth0 = predict_depth0(depth, frames) if depth is not None else None
    with VideoPoseEstimator(frames, intrinsics_px, config, depth0) as est:
        return est.run(seed)


def estimate_trials(frames: np.ndarray, intrinsics_px: Sequence[float], config: PoseEstimationConfig | None = None,
                    num_trials: int = 5, base_seed: int = 0, depth: DepthSource | None = None) -> list[TrialOutcome]:
    """``num_trials`` seeded trials of one video; failures become ``TrialOutcome(ok=False, error=...)``."""
    frames = _check_frames(frames)
    depth0 = predict_depth0(depth, frames) if depth is not None else None
    outcomes = []
    with VideoPoseEstimator(frames, intrinsics_px, config, depth0) as est:
        for k in range(num_trials):
            seed = base_seed + k
            try:
                outcomes.append(TrialOutcome(k, seed, True, est.run(seed)))
            except PoseEstimationError as e:
                logger.debug("trial %d (seed %d) failed: %s", k, seed, e)
                outcomes.append(TrialOutcome(k, seed, False, None, str(e)))
    return outcomes


# ----------------------------------------------------------------------------------------- aggregation


@dataclass
class VideoAggregate:
    name: str
    ok: bool
    means: dict[str, float] = field(default_factory=dict)
    num_trials: int = 0
    num_failed: int = 0
    num_outliers: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def aggregate_trials(per_video: dict[str, list[dict[str, float] | str]], metric_names: Sequence[str],
                     k_std: float = 10.0) -> dict[str, VideoAggregate]:
    """The reference's merge rule over ``{video: [metrics dict per successful trial | error string]}``.

    Mean and population std per metric are pooled over every successful trial of every video; a
    trial any of whose metrics deviates more than ``k_std`` std from the pooled mean is dropped; the
    remaining trials of a video are averaged. NaN metrics (e.g. absolute ones without a depth predictor)
    take no part in the rule and stay NaN. A video with no successful (or no surviving) trial is
    ``ok=False`` with its errors listed.
    """
    names = list(metric_names)
    pooled = [[t[m] for m in names] for trials in per_video.values() for t in trials if isinstance(t, dict)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        values = np.array(pooled, np.float64).reshape(-1, len(names))
        mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
    out = {}
    for name, trials in per_video.items():
        ok_trials = [t for t in trials if isinstance(t, dict)]
        errors = [t for t in trials if isinstance(t, str)]
        kept = []
        for t in ok_trials:
            v = np.array([t[m] for m in names], np.float64)
            dev = np.abs(v - mean)
            if not np.any(np.isfinite(dev) & (dev > k_std * std)):
                kept.append(v)
        agg = VideoAggregate(name, bool(kept), num_trials=len(trials), num_failed=len(errors),
                             num_outliers=len(ok_trials) - len(kept), errors=errors)
        if kept:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                agg.means = dict(zip(names, (float(x) for x in np.nanmean(np.array(kept), axis=0))))
        elif ok_trials:
            agg.errors = errors + [f"all {len(ok_trials)} successful trials rejected as outliers "
                                   f"(> {k_std:g} std from the pooled mean)"]
        elif not trials:
            agg.errors = ["no trials"]
        out[name] = agg
    return out


def summarize(aggregates: dict[str, VideoAggregate], metric_names: Sequence[str]) -> dict[str, Any]:
    """Mean over videos of each metric, with the success rate and the failures named."""
    ok = [a for a in aggregates.values() if a.ok]
    n = len(aggregates)
    summary: dict[str, Any] = {}
    for m in metric_names:
        vals = np.array([a.means.get(m, math.nan) for a in ok], np.float64)
        vals = vals[np.isfinite(vals)]
        summary[m] = float(vals.mean()) if len(vals) else math.nan
    summary["num_videos"] = n
    summary["num_succeeded"] = len(ok)
    summary["success_rate"] = len(ok) / n if n else math.nan
    summary["failures"] = {a.name: a.errors for a in aggregates.values() if not a.ok}
    return summary


__all__ = [
    "DepthSource", "PoseEstimate", "PoseEstimationConfig", "PoseEstimationError", "TrialOutcome",
    "VideoAggregate", "VideoPoseEstimator", "aggregate_trials", "estimate_poses", "estimate_trials",
    "predict_depth0", "quiet_colmap", "scale_from_depth", "summarize",
]
