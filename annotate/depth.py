"""Metric depth for annotation: one predictor interface, sampled only at keypoints.

Two sources: Depth Anything V2 metric through transformers (a hub id or a local folder), and depth
precomputed per clip (the manifest's ``depth_path``, see :class:`PrecomputedDepth`). Full depth maps are
dropped batch by batch as soon as the keypoints of their frames are sampled.
"""

from __future__ import annotations

import logging
import math
import os
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from annotate.log import get_logger

log = get_logger()

DEFAULT_MODEL = "depth-anything/Depth-Anything-V2-Metric-Indoor-Large-hf"


@dataclass
class DepthConfig:
    model: str = DEFAULT_MODEL  # hub id or local folder of a transformers Depth Anything (V2 metric) model
    batch_size: int = 8
    input_size: int | None = None  # shorter side given to the model (multiple of 14); None = the processor's (518)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    fp16: bool | None = None  # None = fp16 on CUDA, fp32 on CPU
    local_files_only: bool = False  # True: never contact the hub (also implied by HF_HUB_OFFLINE=1)
    # Precomputed depth files (manifest depth_path): checked before use, a refusal is the clip's failed row.
    precomputed_max_bytes: int = 2 << 30  # decompressed array size limit (a 300-frame 720p float32 clip: 1.1 GB)
    precomputed_min_side: int = 16  # maps smaller than this on the short side cannot locate keypoints
    precomputed_aspect_tol: float = 0.03  # |log(map aspect / frame aspect)|; 518x294 maps of 16:9 frames: 0.009
    precomputed_max_m: float = 1000.0  # a valid value beyond this many metres means a wrong unit or sentinel


class DepthPredictor(Protocol):
    """A depth predictor: metric depth of every frame (:class:`DepthAnythingPredictor`, or any object with
    these members; evaluation uses only ``predict``)."""

    max_depth: float | None  # the model's depth cap in metres, None without one

    def predict(self, frames: np.ndarray) -> np.ndarray:
        """uint8 ``[N, H, W, 3]`` -> float32 metric depth ``[N, H, W]`` at the frames' resolution."""


def sample_bilinear(depth: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear samples of a ``[H, W]`` map at pixel positions ``xy [N, 2]`` (COLMAP convention: the centre
    of pixel (0, 0) is at (0.5, 0.5)). NaN where any of the four neighbours is invalid (0, NaN)."""
    h, w = depth.shape
    x = np.clip(xy[:, 0] - 0.5, 0, w - 1)
    y = np.clip(xy[:, 1] - 0.5, 0, h - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), max(w - 2, 0))
    y0 = np.minimum(np.floor(y).astype(np.int64), max(h - 2, 0))
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = x - x0, y - y0
    d = depth.astype(np.float64)
    corners = np.stack([d[y0, x0], d[y0, x1], d[y1, x0], d[y1, x1]])
    weights = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy])
    bad = ~np.isfinite(corners) | (corners <= 0)
    out = (np.where(bad, 0, corners) * weights).sum(axis=0)
    return np.where(bad.any(axis=0), np.nan, out).astype(np.float32)


def depth_at_keypoints(frame_ids: np.ndarray, xy: np.ndarray, frame_hw: tuple[int, int],
                       maps: Callable[[list[int]], np.ndarray], batch_size: int) -> np.ndarray:
    """Metric depth at every observation. ``maps(frame_list)`` returns those frames' depth maps (any size;
    keypoints are rescaled to it); only ``batch_size`` maps are alive at a time."""
    out = np.full(len(frame_ids), np.nan, np.float32)
    needed = sorted(set(int(f) for f in frame_ids))
    for start in range(0, len(needed), batch_size):
        chunk = needed[start:start + batch_size]
        depth = maps(chunk)
        for f, dmap in zip(chunk, depth):
            sel = frame_ids == f
            sx, sy = dmap.shape[1] / frame_hw[1], dmap.shape[0] / frame_hw[0]
            out[sel] = sample_bilinear(dmap, xy[sel] * np.array([sx, sy], np.float32))
        del depth
    return out


DEPTH_UNITS = {"m": 1.0, "mm": 1e-3}  # the manifest's depth_unit -> metres per stored unit


class DepthFileError(ValueError):
    """A precomputed depth file that cannot be used; the message starts with the file's path."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


def _read_header(fp, path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Shape, Fortran order and dtype from a ``.npy`` header, without reading the data."""
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fp)
    raise DepthFileError(path, f"unsupported .npy format version {version[0]}.{version[1]} (numeric arrays use 1.0)")


class PrecomputedDepth:
    """A clip's precomputed metric depth: ``.npz`` with array ``depth`` or a ``.npy`` file (memory-mapped),
    ``[F, H, W]``, one map per pose line, any size with the frames' aspect ratio (keypoints are rescaled).

    Floats are metres unless ``unit`` (the manifest's ``depth_unit``) says ``mm``; integer maps are refused
    without a unit, since a ``uint16`` map is millimetres in most datasets and metres in none we know of.
    A pixel with a value <= 0 or not finite (0, NaN, inf) has no depth. Refused, with a reason that names
    the file: anything but numbers, shape or frame count wrong, more than ``precomputed_max_bytes`` once
    decompressed (read from the header before any data), maps under ``precomputed_min_side`` pixels or of
    another aspect ratio than the frames, no valid value at all, or a valid value beyond
    ``precomputed_max_m`` metres. Never unpickles.
    """

    max_depth = None

    def __init__(self, path: str | os.PathLike, num_frames: int, frame_hw: tuple[int, int] | None = None,
                 unit: str = "", cfg: DepthConfig | None = None):
        self.path = Path(path)
        self.num_frames, self.frame_hw, self.unit = num_frames, frame_hw, unit
        self.cfg = cfg or DepthConfig()
        if unit not in ("", *DEPTH_UNITS):
            raise DepthFileError(self.path, f"depth_unit {unit!r} is not one of {', '.join(DEPTH_UNITS)}")
        self.factor = DEPTH_UNITS.get(unit, 1.0)
        try:
            with open(self.path, "rb") as f:
                magic = f.read(6)
            if magic.startswith(b"PK"):
                self.depth = self._read_npz()
            elif magic == b"\x93NUMPY":
                with open(self.path, "rb") as f:
                    self._check_header(*_read_header(f, self.path))
                self.depth = np.load(self.path, mmap_mode="r", allow_pickle=False)
            else:
                raise DepthFileError(self.path, f"not a NumPy .npz or .npy file (starts with {magic!r})")
        except DepthFileError:
            raise
        except FileNotFoundError:
            raise DepthFileError(self.path, "no such file") from None
        except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as e:
            raise DepthFileError(self.path, f"unreadable depth file ({e.__class__.__name__}: {e})") from None
        self._check_values()

    def _read_npz(self) -> np.ndarray:
        with zipfile.ZipFile(self.path) as zf:
            names = zf.namelist()
            if "depth.npy" not in names:
                arrays = sorted(n.removesuffix(".npy") for n in names)
                raise DepthFileError(self.path, f"no array named 'depth' (has {arrays})")
            with zf.open("depth.npy") as fp:  # the member's own header bounds the decompressed size
                self._check_header(*_read_header(fp, self.path))
            with zf.open("depth.npy") as fp:
                return np.lib.format.read_array(fp, allow_pickle=False)

    def _check_header(self, shape: tuple[int, ...], fortran_order: bool, dtype: np.dtype) -> None:
        bad = lambda reason: DepthFileError(self.path, reason)  # noqa: E731
        if dtype.hasobject or dtype.fields is not None or dtype.kind not in "fiu":
            raise bad(f"depth has dtype {dtype}; expected floats in metres, or integers with the manifest's "
                      "depth_unit")
        if dtype.kind in "iu" and not self.unit:
            raise bad(f"integer depth ({dtype}) needs the manifest's depth_unit column (m or mm); "
                      "refusing to guess its unit")
        if len(shape) != 3 or shape[0] != self.num_frames:
            raise bad(f"depth has shape {list(shape)}, expected [{self.num_frames}, H, W] (one map per pose line)")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > self.cfg.precomputed_max_bytes:
            raise bad(f"depth {list(shape)} {dtype} is {nbytes / 2**20:.0f} MiB decompressed, above the limit of "
                      f"{self.cfg.precomputed_max_bytes / 2**20:.0f} MiB (clip.depth.precomputed_max_bytes)")
        h, w = shape[1:]
        if min(h, w) < max(1, self.cfg.precomputed_min_side):
            raise bad(f"depth maps are {w}x{h} px, need at least {self.cfg.precomputed_min_side} px on the "
                      "short side")
        if self.frame_hw:
            fh, fw = self.frame_hw
            if abs(math.log((w / h) / (fw / fh))) > self.cfg.precomputed_aspect_tol:
                raise bad(f"depth maps are {w}x{h} px (aspect {w / h:.3f}) but the frames are {fw}x{fh} "
                          f"(aspect {fw / fh:.3f}); maps must cover the whole frame")

    def _check_values(self) -> None:
        """One pass in bounded chunks (the ``.npy`` stays memory-mapped): some valid value, none implausible."""
        f, h, w = self.depth.shape
        step = max(1, (64 << 20) // max(1, h * w * 8))
        n_valid, top, top_frame = 0, 0.0, -1
        for s in range(0, f, step):
            d = np.asarray(self.depth[s:s + step], np.float64) * self.factor  # float64: no overflow to inf
            valid = np.isfinite(d) & (d > 0)
            n_valid += int(valid.sum())
            if valid.any():
                per_frame = np.where(valid, d, 0).reshape(len(d), -1).max(axis=1)
                i = int(per_frame.argmax())
                if per_frame[i] > top:
                    top, top_frame = float(per_frame[i]), s + i
        if not n_valid:
            raise DepthFileError(self.path, "no valid depth: every value is 0, negative or not finite")
        if top > self.cfg.precomputed_max_m:
            unit = f"depth_unit is {self.unit!r}" if self.unit else "no depth_unit, so metres"
            raise DepthFileError(self.path, f"depth of {top:.6g} m at frame {top_frame} is beyond the plausible "
                                 f"{self.cfg.precomputed_max_m:g} m ({unit}; wrong unit?)")

    def maps(self, frames: list[int]) -> np.ndarray:
        d = np.asarray(self.depth[frames], np.float32)
        return d * np.float32(self.factor) if self.factor != 1.0 else d


class DepthAnythingPredictor:
    """Depth Anything V2 (metric) through transformers: ``AutoModelForDepthEstimation`` from a hub id or a
    local folder, batched, fp16 on CUDA; ``max_depth`` comes from the model's config."""

    def __init__(self, cfg: DepthConfig):
        import torch
        import transformers
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        if not log.isEnabledFor(logging.DEBUG):  # quiet logging: no weight-loading bars or backend notes
            transformers.utils.logging.set_verbosity_error()
            transformers.utils.logging.disable_progress_bar()
        self.cfg = cfg
        local = cfg.local_files_only or os.environ.get("HF_HUB_OFFLINE") == "1" or Path(cfg.model).is_dir()
        device = cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.dtype = torch.float16 if (cfg.fp16 if cfg.fp16 is not None else self.device.type == "cuda") \
            else torch.float32
        try:
            self.processor = AutoImageProcessor.from_pretrained(cfg.model, local_files_only=local)
            self.model = AutoModelForDepthEstimation.from_pretrained(cfg.model, local_files_only=local,
                                                                     dtype=self.dtype)
        except OSError as e:
            raise RuntimeError(f"cannot load depth model {cfg.model!r} ({e}); give a local folder or make the "
                               "hub reachable (see README: depth weights on cluster nodes)") from None
        self.model.to(self.device).eval()
        if cfg.input_size:
            self.processor.size = {"height": cfg.input_size, "width": cfg.input_size}
        md = getattr(self.model.config, "max_depth", None)
        self.max_depth = float(md) if md else None
        log.debug("depth model %s on %s (%s), max_depth %s", cfg.model, self.device, self.dtype, self.max_depth)

    def predict(self, frames: np.ndarray) -> np.ndarray:
        import torch

        out = []
        h, w = frames.shape[1:3]
        for start in range(0, len(frames), self.cfg.batch_size):
            batch = list(frames[start:start + self.cfg.batch_size])
            inputs = self.processor(images=batch, return_tensors="pt")
            pixel_values = inputs["pixel_values"].to(self.device, self.dtype)
            with torch.inference_mode():
                outputs = self.model(pixel_values=pixel_values)
                outputs.predicted_depth = outputs.predicted_depth.float()
                post = self.processor.post_process_depth_estimation(outputs, target_sizes=[(h, w)] * len(batch))
            out.extend(p["predicted_depth"].float().cpu().numpy() for p in post)
        return np.stack(out).astype(np.float32)
