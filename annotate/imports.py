"""Other posed datasets in RealEstate10K's format, so the same job gives them metric scale.

    python -m annotate import-colmap MODEL_DIR OUT_ROOT --images IMAGE_DIR [--clip NAME] [--split train]
    python -m annotate import-nerfstudio TRANSFORMS.json OUT_ROOT [--clip NAME] [--split train]

Either writes ``OUT_ROOT/RealEstate10K/{split}/{clip}.txt`` (a camera file: one line per registered image, in
natural name order, timestamps ``index / fps`` in microseconds) and ``OUT_ROOT/frames/{split}/{clip}/
{timestamp_us}.{ext}`` (the images, hard-linked where possible, else copied), the layout ``annotate index``
reads. COLMAP models: binary or text (pycolmap); intrinsics from each image's camera (pinhole part;
distortion is not in RealEstate10K's format, so distorted models are refused unless ``--ignore-distortion``;
undistort with COLMAP first). nerfstudio ``transforms.json`` (e.g. DL3DV): OpenGL camera-to-world matrices
are converted to OpenCV world-to-camera; intrinsics per frame or global.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from annotate.camera import c2w_to_w2c
from annotate.command import Command
from annotate.log import get_logger
from annotate.manifest import SAFE_ID
from annotate.re10k import CameraTrajectory, write_camera_file
from annotate.video import natural_key

log = get_logger()

OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])  # flips y and z of the camera axes
PINHOLE_MODELS = {"SIMPLE_PINHOLE", "PINHOLE"}


class ImportError_(ValueError):
    """An input that cannot be converted; the message names the file."""


@dataclass
class ColmapImportConfig:
    model_dir: str  # COLMAP model folder (cameras, images, points3D; .bin or .txt)
    out_root: str  # root to write RealEstate10K/{split}/ and frames/{split}/ into
    images: str  # folder the model's image names are relative to
    ignore_distortion: bool = False  # keep only the pinhole part of the cameras
    clip: str = ""  # clip id ('' = the model folder's name; its parent's when that is a number, as in sparse/0)
    split: str = "train"  # split folder the clip goes to
    fps: float = 30.0  # frame rate of the written timestamps


@dataclass
class NerfstudioImportConfig:
    transforms: str  # nerfstudio transforms.json
    out_root: str  # root to write RealEstate10K/{split}/ and frames/{split}/ into
    clip: str = ""  # clip id ('' = the name of the folder holding transforms.json)
    split: str = "train"  # split folder the clip goes to
    fps: float = 30.0  # frame rate of the written timestamps


@dataclass
class Posed:
    image: Path
    w2c: np.ndarray  # [3, 4] OpenCV world-to-camera
    intrinsics: np.ndarray  # [4] normalised fx fy cx cy


def write_clip(frames: list[Posed], out_root: Path, clip: str, split: str, url: str, fps: float) -> Path:
    """The camera file and the timestamp-named frame folder of one clip; returns the camera file."""
    if not SAFE_ID.match(clip) or not SAFE_ID.match(split):
        raise ImportError_(f"clip {clip!r} and split {split!r} must use only [A-Za-z0-9_-]")
    if len(frames) < 2:
        raise ImportError_(f"{url}: {len(frames)} posed image(s); a clip needs at least 2")
    stamps = np.round(np.arange(len(frames)) * 1e6 / fps).astype(np.int64)
    folder = out_root / "frames" / split / clip
    folder.mkdir(parents=True, exist_ok=True)
    for t, f in zip(stamps, frames):
        dest = folder / f"{t}{f.image.suffix.lower()}"
        if dest.exists():
            dest.unlink()
        try:
            os.link(f.image, dest)  # no copy of large image sets where the file system allows it
        except OSError:
            shutil.copyfile(f.image, dest)
    cam = out_root / "RealEstate10K" / split / f"{clip}.txt"
    write_camera_file(cam, CameraTrajectory(url, stamps, np.stack([f.intrinsics for f in frames]),
                                            np.stack([f.w2c for f in frames])))
    return cam


def read_colmap(model_dir: Path, images: Path, ignore_distortion: bool = False) -> list[Posed]:
    import pycolmap

    if not model_dir.is_dir():
        raise ImportError_(f"{model_dir}: no such COLMAP model folder")
    try:
        rec = pycolmap.Reconstruction(str(model_dir))
    except Exception as e:  # noqa: BLE001 - pycolmap raises plain exceptions for unreadable models
        raise ImportError_(f"{model_dir}: unreadable COLMAP model ({e})") from None
    out = []
    for img in sorted(rec.images.values(), key=lambda i: natural_key(i.name)):
        if not img.has_pose:
            continue
        cam = rec.cameras[img.camera_id]
        if cam.model_name not in PINHOLE_MODELS and not ignore_distortion:
            raise ImportError_(f"{model_dir}: camera {img.camera_id} is {cam.model_name}; RealEstate10K's format "
                               "has no distortion: undistort the model first (colmap image_undistorter) or pass "
                               "--ignore-distortion")
        path = images / img.name
        if not path.is_file():
            raise ImportError_(f"{model_dir}: image {img.name} not found under {images}")
        w, h = cam.width, cam.height
        out.append(Posed(path, np.asarray(img.cam_from_world().matrix(), np.float64),
                         np.array([cam.focal_length_x / w, cam.focal_length_y / h, cam.principal_point_x / w,
                                   cam.principal_point_y / h])))
    return out


def read_nerfstudio(transforms: Path) -> list[Posed]:
    try:
        meta = json.loads(transforms.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ImportError_(f"{transforms}: unreadable ({e})") from None
    frames = meta.get("frames")
    if not isinstance(frames, list):
        raise ImportError_(f"{transforms}: no 'frames' list")
    if meta.get("camera_model", "OPENCV") not in ("OPENCV", "PINHOLE") and any(
            float(meta.get(k, 0) or 0) for k in ("k1", "k2", "k3", "k4", "p1", "p2")):
        log.warning("%s: distortion parameters are ignored (RealEstate10K's format has none)", transforms)
    def value(fr: dict, n: int, key: str) -> float:  # per-frame intrinsics override the global ones
        v = fr.get(key, meta.get(key))
        if v is None:
            raise ImportError_(f"{transforms}: frame {n} ({fr.get('file_path')}) has no {key!r}")
        return float(v)

    out = []
    for n, fr in enumerate(sorted(frames, key=lambda f: natural_key(str(f.get("file_path", ""))))):
        w, h = value(fr, n, "w"), value(fr, n, "h")
        c2w = np.asarray(fr.get("transform_matrix"), np.float64)
        if c2w.shape == (3, 4):
            c2w = np.vstack([c2w, [0, 0, 0, 1]])
        if c2w.shape != (4, 4) or not np.isfinite(c2w).all():
            raise ImportError_(f"{transforms}: frame {n} has no finite 4x4 transform_matrix")
        path = (transforms.parent / fr["file_path"]).resolve()
        if not path.is_file():
            raise ImportError_(f"{transforms}: image {fr['file_path']} not found")
        w2c = c2w_to_w2c(c2w @ OPENGL_TO_OPENCV)[:3, :]
        intr = [value(fr, n, k) / d for k, d in (("fl_x", w), ("fl_y", h), ("cx", w), ("cy", h))]
        out.append(Posed(path, w2c, np.array(intr)))
    return out


def main(cfg: ColmapImportConfig | NerfstudioImportConfig) -> dict:
    """Convert one COLMAP model or nerfstudio dataset (by the config's type) into a clip under ``cfg.out_root``;
    the camera file, the frame folder and the number of frames. :class:`ImportError_` names a bad input."""
    if isinstance(cfg, ColmapImportConfig):
        src = Path(cfg.model_dir)
        frames = read_colmap(src, Path(cfg.images), cfg.ignore_distortion)
        default = src.resolve().parent.name if src.name.isdigit() else src.resolve().name
    else:
        src = Path(cfg.transforms)
        frames = read_nerfstudio(src)
        default = src.resolve().parent.name
    clip = cfg.clip or "".join(c if c.isalnum() or c in "-_" else "_" for c in default)
    cam = write_clip(frames, Path(cfg.out_root), clip, cfg.split, src.resolve().as_uri(), cfg.fps)
    return {"camera_file": str(cam), "frames_folder": str(Path(cfg.out_root) / "frames" / cfg.split / clip),
            "frames": len(frames), "clip": clip}


def _run(cfg: ColmapImportConfig | NerfstudioImportConfig, args: argparse.Namespace) -> int:
    res = main(cfg)
    print(f"wrote {res['camera_file']} and {res['frames']} frames; next: python -m annotate index {cfg.out_root} "
          "MANIFEST.csv")
    return 0


def command(kind: Literal["colmap", "nerfstudio"] = "colmap") -> Command:
    """``python -m annotate import-colmap`` (kind "colmap") or ``import-nerfstudio`` (kind "nerfstudio")."""
    common = {"--clip": "clip", "--split": "split", "--fps": "fps"}
    if kind == "colmap":
        return Command(ColmapImportConfig, _run, "python -m annotate import-colmap", "A COLMAP model as a "
                       "RealEstate10K clip (camera file and timestamp-named frames).",
                       positionals=("model_dir", "out_root"),
                       flags={"--images": "images", "--ignore-distortion": "ignore_distortion", **common},
                       errors=(ImportError_, OSError))
    return Command(NerfstudioImportConfig, _run, "python -m annotate import-nerfstudio", "A nerfstudio "
                   "transforms.json as a RealEstate10K clip (camera file and timestamp-named frames).",
                   positionals=("transforms", "out_root"), flags=common, errors=(ImportError_, OSError))


def cli_colmap(argv: list[str] | None = None) -> int:
    return command("colmap").main(argv)


def cli_nerfstudio(argv: list[str] | None = None) -> int:
    return command("nerfstudio").main(argv)
