"""COLMAP point triangulation of one clip with its RealEstate10K intrinsics and poses held fixed (pycolmap).

Two pipelines (``SfmConfig.pipeline``):

* ``keyframes`` (default): SIFT on keyframes chosen from the known poses, each keyframe matched with its next
  keyframes by guided matching along the epipolar lines the known poses give (no RANSAC), then
  ``pycolmap.triangulate_points``. Every other frame gets the 3D points of its two bracketing keyframes by
  projection; those observations carry ``projected=1`` and are kept only where the frame's own metric depth
  agrees with the point (:func:`visible_ratios`, after the depth stage), so each frame still gets its own
  scale from its own depth. 0.18-0.21 against 1.1-1.3 CPU-seconds per frame of ``sequential`` on 150-frame
  640x360 clips at the same accuracy (``make bench-annotate``, README).
* ``sequential``: SIFT on every frame, sequential (or exhaustive) matching with RANSAC verification, then
  ``pycolmap.triangulate_points`` (the default before issue 15).

The database (and, for ``sequential``, the images) live in a per-clip temporary folder that is removed
afterwards, also on error. Output: per observation (a keypoint with a 3D point, or a projected point) its
frame, its pixel position at the *input* frame resolution and its depth in that camera, in the camera file's
relative units.
"""

from __future__ import annotations

import contextlib
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pycolmap
from PIL import Image

from annotate.camera import intrinsics_matrix, intrinsics_to_pixels, project, rotation_angle, skew
from annotate.scale import frame_scales

PIPELINES = ("keyframes", "sequential")


@dataclass
class SfmConfig:
    pipeline: str = "keyframes"  # or "sequential" (SIFT and matching on every frame; the pre-issue-15 default)
    # keyframes: a clip that gives too few points (small frames, forward motion with little parallax between
    # keyframes) is triangulated again with the sequential pipeline, so no clip is lost to the cheaper default
    fallback_sequential: bool = True
    max_side: int = 640  # frames are downscaled so their longest side is at most this (intrinsics follow)
    max_features: int = 2048  # sequential: SIFT features per frame
    overlap: int = 6  # sequential: each frame is matched with the next `overlap` frames
    exhaustive_max_frames: int = 12  # sequential: clips with at most this many frames are matched exhaustively
    min_track_length: int = 2
    num_threads: int = -1  # pycolmap threads; -1 = all cores
    guided_matching: bool = False  # sequential: COLMAP's second, guided matching pass after RANSAC
    verbose: bool = False  # pycolmap's own logging
    tmp_dir: str | None = None  # where the per-clip temporary folders go (default: the system's)
    # keyframes pipeline
    keyframe_stride: int = 5  # at most this many frames from one keyframe to the next
    keyframe_max_features: int = 1024  # SIFT features per keyframe (2048 costs 1.4x more, same accuracy)
    keyframe_max_rotation: float = 6.0  # degrees; a sharper turn since the last keyframe starts one sooner
    key_overlap: int = 4  # each keyframe is matched with its next `key_overlap` keyframes ...
    pair_max_angle: float = 50.0  # ... whose optical axes differ by less than this (degrees): the views overlap
    epipolar_max_error: float = 3.0  # guided matching: max distance to the known epipolar line, SfM pixels
    projected_points: int = 400  # per in-between frame: at most this many points projected from its keyframes
    visibility_tol: float = 0.3  # a projected point counts if |log(depth / (keyframe scale * z))| <= this


@dataclass
class Observations:
    """Compact per-observation output of triangulation (what passes between pipeline stages)."""

    frame: np.ndarray  # int32 [N] frame index of the observation
    xy: np.ndarray  # float32 [N, 2] keypoint, pixels at the input frame resolution (COLMAP: centre of (0,0) at 0.5)
    z: np.ndarray  # float32 [N] depth of the 3D point in that camera, relative units
    point_id: np.ndarray  # int64 [N]
    num_points: int = 0
    reprojection_error: float = float("nan")
    timings: dict[str, float] = field(default_factory=dict)  # wall seconds per step
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # CPU seconds per step (all threads)
    projected: np.ndarray | None = None  # uint8 [N]: 1 = projected into an in-between frame, not matched there
    keyframes: np.ndarray | None = None  # int [K] the frames that were matched (all frames for `sequential`)

    def __post_init__(self):
        if self.projected is None:
            self.projected = np.zeros(len(self.frame), np.uint8)


class TriangulationError(RuntimeError):
    pass


@contextlib.contextmanager
def quiet_colmap(verbose: bool):
    """pycolmap logs through glog; keep it to errors unless asked."""
    old = pycolmap.logging.minloglevel
    pycolmap.logging.minloglevel = old if verbose else 2
    try:
        yield
    finally:
        pycolmap.logging.minloglevel = old


def cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads) and its waited-for children: the cost measure
    of issue 15 (wall time is noisy on shared machines and hides how many cores a step keeps busy)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class _Clock:
    """Wall and CPU seconds per step: ``clock.start()`` ... ``clock.stop("match")``."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._t = (0.0, 0.0)

    def start(self) -> None:
        self._t = (time.perf_counter(), cpu_seconds())

    def stop(self, name: str) -> None:
        self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - self._t[0]
        self.cpu[name] = self.cpu.get(name, 0.0) + cpu_seconds() - self._t[1]
        self.start()

    def attach(self, obs: Observations) -> Observations:
        obs.timings, obs.cpu_seconds = self.wall, self.cpu
        return obs


def sfm_size(hw: tuple[int, int], max_side: int) -> tuple[int, int]:
    h, w = hw
    s = min(1.0, max_side / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


def triangulate(frames: np.ndarray, intrinsics: np.ndarray, w2c: np.ndarray, cfg: SfmConfig) -> Observations:
    """Triangulate points of ``frames`` (uint8 ``[F, H, W, 3]``) with normalised ``intrinsics [F, 4]`` and
    ``w2c [F, 3, 4]`` fixed. Raises :class:`TriangulationError` when nothing can be triangulated."""
    if cfg.pipeline == "keyframes":
        return triangulate_keyframes(frames, intrinsics, w2c, cfg)
    if cfg.pipeline == "sequential":
        return triangulate_sequential(frames, intrinsics, w2c, cfg)
    raise ValueError(f"clip.sfm.pipeline: unknown pipeline {cfg.pipeline!r}; choose from {', '.join(PIPELINES)}")


# ----------------------------------------------------------------------------------------- keyframes


def select_keyframes(w2c: np.ndarray, stride: int, max_rotation_deg: float) -> np.ndarray:
    """Frame indices of the keyframes: the first and last frame, and greedily the farthest next frame within
    ``stride`` frames whose rotation from the last keyframe stays within ``max_rotation_deg``."""
    nf = len(w2c)
    rot = np.asarray(w2c, np.float64)[:, :, :3]
    keys = [0]
    limit = np.deg2rad(max_rotation_deg)
    while keys[-1] < nf - 1:
        k = keys[-1]
        nxt = min(k + max(1, stride), nf - 1)
        turn = np.flatnonzero(rotation_angle(rot[k][None], rot[k + 1:nxt + 1]) > limit)
        keys.append(k + max(1, int(turn[0])) if len(turn) else nxt)  # turn[0] + 1 is the first frame too far
    return np.array(keys, np.int64)


def keyframe_pairs(w2c: np.ndarray, overlap: int, max_angle_deg: float) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, of keyframe positions: each with its next ``overlap`` keyframes whose optical axes
    differ by less than ``max_angle_deg`` (beyond it the views hardly share a surface)."""
    axes = np.asarray(w2c, np.float64)[:, 2, :3]  # optical axis in world coordinates
    cos_max = np.cos(np.deg2rad(max_angle_deg))
    return [(i, j) for i in range(len(w2c)) for j in range(i + 1, min(i + 1 + overlap, len(w2c)))
            if axes[i] @ axes[j] > cos_max]


def known_geometry(w2c1: np.ndarray, w2c2: np.ndarray, k1: np.ndarray, k2: np.ndarray) -> pycolmap.TwoViewGeometry:
    """The two-view geometry the camera file fixes (no estimation): relative pose, E and F."""
    r = w2c2[:, :3] @ w2c1[:, :3].T
    t = w2c2[:, 3] - r @ w2c1[:, 3]
    e = skew(t) @ r
    f = np.linalg.inv(k2).T @ e @ np.linalg.inv(k1)
    tvg = pycolmap.TwoViewGeometry()
    tvg.config = pycolmap.TwoViewGeometryConfiguration.CALIBRATED
    tvg.cam2_from_cam1 = pycolmap.Rigid3d(pycolmap.Rotation3d(r), t)
    norm = np.abs(f).max()
    tvg.E, tvg.F = e, f / norm if norm > 0 else f  # F = 0: no baseline, nothing to triangulate
    return tvg


def _gray(img: np.ndarray, sfm_hw: tuple[int, int]) -> np.ndarray:
    im = Image.fromarray(img).convert("L")
    if im.size != (sfm_hw[1], sfm_hw[0]):
        im = im.resize((sfm_hw[1], sfm_hw[0]), Image.Resampling.LANCZOS)
    return np.asarray(im)


def triangulate_keyframes(frames: np.ndarray, intrinsics: np.ndarray, w2c: np.ndarray, cfg: SfmConfig) -> Observations:
    """The ``keyframes`` pipeline (module docstring); features stay in memory, only the database is on disk."""
    nf, h, w = frames.shape[:3]
    sh, sw = sfm_size((h, w), cfg.max_side)
    w2c = np.asarray(w2c, np.float64)
    intr_px = intrinsics_to_pixels(intrinsics, sw, sh)
    single = bool(np.allclose(intr_px, intr_px[0], rtol=1e-6, atol=1e-6))
    clock = _Clock()
    keys = select_keyframes(w2c, cfg.keyframe_stride, cfg.keyframe_max_rotation)
    names = [f"{k:06d}.png" for k in keys]
    tmp = Path(tempfile.mkdtemp(prefix="realcam_sfm_", dir=cfg.tmp_dir))
    try:
        with quiet_colmap(cfg.verbose):
            clock.start()
            ext = pycolmap.FeatureExtractionOptions()
            ext.num_threads = cfg.num_threads
            ext.sift.max_num_features = cfg.keyframe_max_features
            extractor = pycolmap.FeatureExtractor.create(ext, device=pycolmap.Device.cpu)
            feats = [extractor.extract_from_uint8_array(_gray(frames[k], (sh, sw))) for k in keys]
            clock.stop("extract")

            clock.start()
            cams = [pycolmap.Camera(model="PINHOLE", width=sw, height=sh, params=intr_px[k],
                                    camera_id=1 if single else i + 1) for i, k in enumerate(keys)]
            kmat = intrinsics_matrix(intr_px[keys])
            mopt = pycolmap.FeatureMatchingOptions()
            mopt.num_threads = cfg.num_threads
            matcher = pycolmap.FeatureMatcher.create(mopt, device=pycolmap.Device.cpu)
            geoms = {}
            for i, j in keyframe_pairs(w2c[keys], cfg.key_overlap, cfg.pair_max_angle):
                tvg = known_geometry(w2c[keys[i]], w2c[keys[j]], kmat[i], kmat[j])
                if not np.any(tvg.F):
                    continue
                matcher.match_guided(cfg.epipolar_max_error, feats[i][0], feats[i][1], cams[i],
                                     feats[j][0], feats[j][1], cams[j], tvg)
                if len(tvg.inlier_matches):
                    geoms[i, j] = tvg
            clock.stop("match")

            clock.start()
            rec = pycolmap.Reconstruction()
            for cam in (cams[:1] if single else cams):
                rec.add_camera_with_trivial_rig(cam)
            for i, (name, k) in enumerate(zip(names, keys)):
                image = pycolmap.Image(name=name, camera_id=cams[i].camera_id, image_id=i + 1)
                pose = pycolmap.Rigid3d(pycolmap.Rotation3d(w2c[k, :, :3]), w2c[k, :, 3])
                rec.add_image_with_trivial_frame(image, pose)
            db_path = tmp / "database.db"
            db = pycolmap.Database.open(db_path)
            try:
                for cam in rec.cameras.values():
                    db.write_camera(cam, use_camera_id=True)
                for rig in rec.rigs.values():
                    db.write_rig(rig, use_rig_id=True)
                for fr in rec.frames.values():
                    db.write_frame(fr, use_frame_id=True)
                for i, name in enumerate(names):
                    db.write_image(pycolmap.Image(name=name, camera_id=cams[i].camera_id, image_id=i + 1),
                                   use_image_id=True)
                    db.write_keypoints(i + 1, pycolmap.keypoints_to_matrix(feats[i][0]))
                for (i, j), tvg in geoms.items():
                    db.write_matches(i + 1, j + 1, tvg.inlier_matches)
                    db.write_two_view_geometry(i + 1, j + 1, tvg)
            finally:
                db.close()
            rec = _triangulate_fixed(rec, db_path, tmp, tmp, cfg)
            clock.stop("triangulate")
            clock.start()
            obs = _observations(rec, {n: int(k) for n, k in zip(names, keys)}, (sh, sw), (h, w),
                                cfg.min_track_length)
            obs = _project_between(obs, rec, keys, intrinsics_to_pixels(intrinsics, w, h), w2c, (h, w),
                                   cfg.projected_points)
            clock.stop("project")
            return clock.attach(obs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _project_between(obs: Observations, rec: pycolmap.Reconstruction, keys: np.ndarray, intr_px: np.ndarray,
                     w2c: np.ndarray, hw: tuple[int, int], max_points: int) -> Observations:
    """Observations of every in-between frame: the points its two bracketing keyframes observe, projected
    with the frame's pose, in front of the camera and inside the image; at most ``max_points`` (a fixed,
    seeded subset, so a clip's result is reproducible)."""
    h, w = hw
    pids = np.unique(obs.point_id)
    xyz = np.array([rec.points3D[int(p)].xyz for p in pids]).reshape(-1, 3)
    pos = {int(p): i for i, p in enumerate(pids)}
    seen = {int(k): np.unique([pos[int(p)] for p in obs.point_id[obs.frame == k]]).astype(np.int64) for k in keys}
    rng = np.random.default_rng(0)
    parts = [(obs.frame, obs.xy, obs.z, obs.point_id)]
    for a, b in zip(keys[:-1], keys[1:]):
        cand = np.union1d(seen[int(a)], seen[int(b)])
        if not len(cand):
            continue
        for f in range(int(a) + 1, int(b)):
            uv, z = project(xyz[cand] @ w2c[f, :, :3].T + w2c[f, :, 3], intr_px[f])
            u, v = uv[:, 0], uv[:, 1]
            ok = np.flatnonzero((z > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h))
            if len(ok) > max_points:
                ok = np.sort(rng.choice(ok, max_points, replace=False))
            parts.append((np.full(len(ok), f, np.int32), np.stack([u[ok], v[ok]], 1).astype(np.float32),
                          z[ok].astype(np.float32), pids[cand[ok]]))
    fr, xy, z, pid = (np.concatenate(c) for c in zip(*parts))
    projected = np.zeros(len(fr), np.uint8)
    projected[len(obs.frame):] = 1
    return Observations(fr, xy, z, pid, obs.num_points, obs.reprojection_error, projected=projected,
                        keyframes=np.asarray(keys))


def visible_ratios(frame: np.ndarray, ratios: np.ndarray, projected: np.ndarray, num_frames: int,
                   min_points: int, tol: float) -> np.ndarray:
    """The visibility test of projected observations against their frame's own metric depth: a projected
    point is visible where the depth there agrees with the point's expected metric depth, ``z`` times the
    scale of the keyframes around the frame (interpolated in log space), within ``exp(+-tol)``; occluded or
    off-surface projections become NaN. Matched observations pass unchanged."""
    projected = np.asarray(projected, bool)
    if not projected.any():
        return ratios
    frame = np.asarray(frame)
    ratios = np.array(ratios, np.float64)
    kscale, _ = frame_scales(frame[~projected], ratios[~projected], num_frames, min_points)
    good = np.flatnonzero(np.isfinite(kscale))
    if len(good):
        ref = np.interp(np.arange(num_frames), good, np.log(kscale[good].astype(np.float64)))
    else:  # no keyframe has enough points on its own (small frames): all matched observations pooled
        matched = ratios[~projected][np.isfinite(ratios[~projected])]
        if len(matched) < min_points:
            ratios[projected] = np.nan  # nothing to test against
            return ratios
        ref = np.full(num_frames, np.log(np.median(matched)))
    with np.errstate(divide="ignore", invalid="ignore"):
        keep = np.abs(np.log(ratios) - ref[frame]) <= tol  # False for NaN
    ratios[projected & ~keep] = np.nan
    return ratios


# ----------------------------------------------------------------------------------------- sequential


def _triangulate_fixed(rec: pycolmap.Reconstruction, db_path: Path, image_dir: Path, tmp: Path,
                       cfg: SfmConfig) -> pycolmap.Reconstruction:
    """COLMAP's point_triangulator on ``rec`` (poses and intrinsics fixed) into ``tmp/sparse``."""
    out_dir = tmp / "sparse"
    out_dir.mkdir()
    return pycolmap.triangulate_points(rec, db_path, image_dir, out_dir, clear_points=True,
                                       options=_triangulation_options(cfg), refine_intrinsics=False)


def _triangulation_options(cfg: SfmConfig) -> pycolmap.IncrementalPipelineOptions:
    opts = pycolmap.IncrementalPipelineOptions()
    opts.num_threads = cfg.num_threads
    opts.ba_refine_focal_length = False
    opts.ba_refine_principal_point = False
    opts.ba_refine_extra_params = False
    return opts


def triangulate_sequential(frames: np.ndarray, intrinsics: np.ndarray, w2c: np.ndarray,
                           cfg: SfmConfig) -> Observations:
    nf, h, w = frames.shape[:3]
    sh, sw = sfm_size((h, w), cfg.max_side)
    clock = _Clock()
    tmp = Path(tempfile.mkdtemp(prefix="realcam_sfm_", dir=cfg.tmp_dir))
    try:
        with quiet_colmap(cfg.verbose):
            clock.start()
            img_dir = tmp / "images"
            img_dir.mkdir()
            names = [f"{i:06d}.png" for i in range(nf)]
            for name, img in zip(names, frames):
                im = Image.fromarray(img)
                if (sh, sw) != (h, w):
                    im = im.resize((sw, sh), Image.Resampling.LANCZOS)
                im.save(img_dir / name, compress_level=1)
            clock.stop("write_images")

            # One camera per distinct intrinsics (RealEstate10K clips normally share one).
            intr_px = intrinsics_to_pixels(intrinsics, sw, sh)
            db_path = tmp / "database.db"
            clock.start()
            single = bool(np.allclose(intr_px, intr_px[0], rtol=1e-6, atol=1e-6))
            reader = pycolmap.ImageReaderOptions()
            reader.camera_model = "PINHOLE"
            reader.camera_params = ",".join(f"{v:.9g}" for v in intr_px[0])
            ext = pycolmap.FeatureExtractionOptions()
            ext.max_image_size = max(sh, sw)
            ext.num_threads = cfg.num_threads
            ext.sift.max_num_features = cfg.max_features
            mode = pycolmap.CameraMode.SINGLE if single else pycolmap.CameraMode.PER_IMAGE
            pycolmap.extract_features(db_path, img_dir, image_names=names, camera_mode=mode,
                                      reader_options=reader, extraction_options=ext, device=pycolmap.Device.cpu)
            clock.stop("extract")

            clock.start()
            mopt = pycolmap.FeatureMatchingOptions()
            mopt.num_threads = cfg.num_threads
            mopt.guided_matching = cfg.guided_matching
            if nf <= cfg.exhaustive_max_frames:
                pycolmap.match_exhaustive(db_path, matching_options=mopt, device=pycolmap.Device.cpu)
            else:
                pairing = pycolmap.SequentialPairingOptions()
                pairing.overlap = cfg.overlap
                pairing.quadratic_overlap = False
                pycolmap.match_sequential(db_path, matching_options=mopt, pairing_options=pairing,
                                          device=pycolmap.Device.cpu)
            clock.stop("match")

            clock.start()
            rec = _reconstruction_from_database(db_path, names, intr_px, np.asarray(w2c, np.float64), single)
            rec = _triangulate_fixed(rec, db_path, img_dir, tmp, cfg)
            clock.stop("triangulate")
            obs = _observations(rec, {n: i for i, n in enumerate(names)}, (sh, sw), (h, w), cfg.min_track_length)
            obs.keyframes = np.arange(nf)
            return clock.attach(obs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _reconstruction_from_database(db_path: Path, names: list[str], intr_px: np.ndarray, w2c: np.ndarray,
                                  single: bool) -> pycolmap.Reconstruction:
    """Cameras and images as the database numbered them (triangulation needs the database's ids), with the
    camera file's intrinsics and poses."""
    rec = pycolmap.Reconstruction()
    db = pycolmap.Database.open(db_path)
    try:
        by_name = {im.name: im for im in db.read_all_images()}
        cams = {c.camera_id: c for c in db.read_all_cameras()}
    finally:
        db.close()
    missing = [n for n in names if n not in by_name]
    if missing:
        raise TriangulationError(f"feature extraction skipped {len(missing)} frame(s), first {missing[0]}")
    for cam in cams.values():
        rec.add_camera_with_trivial_rig(cam)
    for i, name in enumerate(names):
        dbim = by_name[name]
        cam = cams[dbim.camera_id]
        if not single:  # per-image intrinsics: set them from the camera file
            cam.params = intr_px[i]
            rec.camera(dbim.camera_id).params = intr_px[i]
        image = pycolmap.Image(name=name, camera_id=dbim.camera_id, image_id=dbim.image_id)
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(w2c[i, :, :3]), w2c[i, :, 3])
        rec.add_image_with_trivial_frame(image, pose)
    return rec


def _observations(rec: pycolmap.Reconstruction, index: dict[str, int], sfm_hw: tuple[int, int],
                  frame_hw: tuple[int, int], min_track_length: int) -> Observations:
    """Matched observations; ``index`` maps image names to frame indices."""
    pts = rec.points3D
    keep_ids = {pid for pid, p in pts.items() if p.track.length() >= min_track_length}
    if not keep_ids:
        raise TriangulationError("triangulation produced no 3D points")
    sy, sx = frame_hw[0] / sfm_hw[0], frame_hw[1] / sfm_hw[1]
    frames, xys, zs, pids = [], [], [], []
    for image in rec.images.values():
        p2d = image.get_observation_points2D()
        if not len(p2d):
            continue
        ids = np.array([p.point3D_id for p in p2d], np.int64)
        sel = np.array([pid in keep_ids for pid in ids])
        if not sel.any():
            continue
        ids = ids[sel]
        xy = np.array([p.xy for p in p2d], np.float64)[sel]
        xyz = np.array([pts[pid].xyz for pid in ids])
        cam = image.cam_from_world() * xyz
        frames.append(np.full(len(ids), index[image.name], np.int32))
        xys.append(xy * np.array([sx, sy]))
        zs.append(cam[:, 2])
        pids.append(ids)
    if not frames:
        raise TriangulationError("no frame observes a 3D point")
    errors = [pts[pid].error for pid in keep_ids]
    return Observations(np.concatenate(frames), np.concatenate(xys).astype(np.float32),
                        np.concatenate(zs).astype(np.float32), np.concatenate(pids), len(keep_ids),
                        float(np.mean(errors)))
