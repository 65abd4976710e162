"""Metric depth for annotation: one predictor interface, sampled only at keypoints.

Two sources: Depth Anything V2 metric through transformers (a hub id or a local folder), and depth
precomputed per clip (the manifest's ``depth_path``: ``.npz`` with ``depth`` float32 ``[F, H, W]`` metres,
any H x W; 0 or NaN invalid). Full depth maps are dropped batch by batch as soon as the keypoints of
their frames are sampled.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

log = logging.getLogger("realcam")

DEFAULT_MODEL = "depth-anything/Depth-Anything-V2-Metric-Indoor-Large-hf"


@dataclass
class DepthConfig:
    model: str = DEFAULT_MODEL  # hub id or local folder of a transformers Depth Anything (V2 metric) model
    batch_size: int = 8
    input_size: int | None = None  # shorter side given to the model (multiple of 14); None = the processor's (518)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    fp16: bool | None = None  # None = fp16 on CUDA, fp32 on CPU
    local_files_only: bool = False  # True: never contact the hub (also implied by HF_HUB_OFFLINE=1)


class DepthPredictor(Protocol):
    max_depth: float | None

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


class PrecomputedDepth:
    """Depth maps from a clip's ``.npz`` (array ``depth`` ``[F, H, W]``), memory-mapped where possible."""

    max_depth = None

    def __init__(self, path: str | os.PathLike, num_frames: int):
        self.path = Path(path)
        try:
            with np.load(self.path) as z:
                if "depth" not in z:
                    raise ValueError(f"{self.path}: no array named 'depth' (has {sorted(z.files)})")
                self.depth = z["depth"]
        except (OSError, EOFError) as e:
            raise ValueError(f"{self.path}: unreadable depth file ({e})") from None
        if self.depth.ndim != 3 or len(self.depth) != num_frames:
            raise ValueError(f"{self.path}: depth has shape {self.depth.shape}, expected [{num_frames}, H, W]")

    def maps(self, frames: list[int]) -> np.ndarray:
        return self.depth[frames].astype(np.float32)


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
