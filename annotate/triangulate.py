"""COLMAP point triangulation of one clip with its RealEstate10K intrinsics and poses held fixed (pycolmap).

SIFT features, sequential (or exhaustive) matching with geometric verification, then
``pycolmap.triangulate_points`` on a reconstruction whose cameras and poses come from the camera file.
The database and images live in a per-clip temporary folder that is removed afterwards, also on error.
Output: per observation (a keypoint with a 3D point) its frame, its pixel position at the *input* frame
resolution and its depth in that camera, in the camera file's relative units.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pycolmap
from PIL import Image

log = logging.getLogger("realcam")


@dataclass
class SfmConfig:
    max_side: int = 640  # frames are downscaled so their longest side is at most this (intrinsics follow)
    max_features: int = 2048  # SIFT features per frame
    overlap: int = 6  # sequential matching: each frame is matched with the next `overlap` frames
    exhaustive_max_frames: int = 12  # clips with at most this many frames are matched exhaustively
    min_track_length: int = 2
    num_threads: int = -1  # pycolmap threads; -1 = all cores
    guided_matching: bool = False
    verbose: bool = False  # pycolmap's own logging
    tmp_dir: str | None = None  # where the per-clip temporary folders go (default: the system's)


@dataclass
class Observations:
    """Compact per-observation output of triangulation (what passes between pipeline stages)."""

    frame: np.ndarray  # int32 [N] frame index of the observation
    xy: np.ndarray  # float32 [N, 2] keypoint, pixels at the input frame resolution (COLMAP: centre of (0,0) at 0.5)
    z: np.ndarray  # float32 [N] depth of the 3D point in that camera, relative units
    point_id: np.ndarray  # int64 [N]
    num_points: int = 0
    reprojection_error: float = float("nan")
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"obs_frame": self.frame, "obs_xy": self.xy.reshape(-1), "obs_z": self.z,
                "num_points": self.num_points, "reprojection_error": self.reprojection_error}


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


def sfm_size(hw: tuple[int, int], max_side: int) -> tuple[int, int]:
    h, w = hw
    s = min(1.0, max_side / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


def triangulate(frames: np.ndarray, intrinsics: np.ndarray, w2c: np.ndarray, cfg: SfmConfig) -> Observations:
    """Triangulate points of ``frames`` (uint8 ``[F, H, W, 3]``) with normalised ``intrinsics [F, 4]`` and
    ``w2c [F, 3, 4]`` fixed. Raises :class:`TriangulationError` when nothing can be triangulated."""
    nf, h, w = frames.shape[:3]
    sh, sw = sfm_size((h, w), cfg.max_side)
    timings: dict[str, float] = {}
    tmp = Path(tempfile.mkdtemp(prefix="realcam_sfm_", dir=cfg.tmp_dir))
    try:
        with quiet_colmap(cfg.verbose):
            t0 = time.perf_counter()
            img_dir = tmp / "images"
            img_dir.mkdir()
            names = [f"{i:06d}.png" for i in range(nf)]
            for name, img in zip(names, frames):
                im = Image.fromarray(img)
                if (sh, sw) != (h, w):
                    im = im.resize((sw, sh), Image.Resampling.LANCZOS)
                im.save(img_dir / name, compress_level=1)
            timings["write_images"] = time.perf_counter() - t0

            # One camera per distinct intrinsics (RealEstate10K clips normally share one).
            intr_px = np.asarray(intrinsics, np.float64) * np.array([sw, sh, sw, sh])
            db_path = tmp / "database.db"
            t0 = time.perf_counter()
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
            timings["extract"] = time.perf_counter() - t0

            t0 = time.perf_counter()
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
            timings["match"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            rec = _reconstruction_from_database(db_path, names, intr_px, np.asarray(w2c, np.float64), single)
            opts = pycolmap.IncrementalPipelineOptions()
            opts.num_threads = cfg.num_threads
            opts.ba_refine_focal_length = False
            opts.ba_refine_principal_point = False
            opts.ba_refine_extra_params = False
            out_dir = tmp / "sparse"
            out_dir.mkdir()
            rec = pycolmap.triangulate_points(rec, db_path, img_dir, out_dir, clear_points=True, options=opts,
                                              refine_intrinsics=False)
            timings["triangulate"] = time.perf_counter() - t0
            obs = _observations(rec, names, (sh, sw), (h, w), cfg.min_track_length)
            obs.timings = timings
            return obs
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


def _observations(rec: pycolmap.Reconstruction, names: list[str], sfm_hw: tuple[int, int],
                  frame_hw: tuple[int, int], min_track_length: int) -> Observations:
    index = {n: i for i, n in enumerate(names)}
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
