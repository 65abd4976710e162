"""Frames in and out: videos through PyAV (FFmpeg) and image folders, shared by annotate, train and eval."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


class VideoError(ValueError):
    """Unreadable or unsuitable frames; the message names the file."""


def list_images(folder: str | os.PathLike) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def count_frames(path: str | os.PathLike) -> int:
    """Frames in a video (decoded, not the container's estimate) or images in a folder."""
    path = Path(path)
    if path.is_dir():
        return len(list_images(path))
    return sum(1 for _ in iter_frames(path))


def iter_frames(path: str | os.PathLike, indices: set[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, uint8 [H, W, 3])`` for every frame (or only ``indices``) of a video or image folder."""
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file or folder")
    if path.is_dir():
        for i, p in enumerate(list_images(path)):
            if indices is None or i in indices:
                try:
                    with Image.open(p) as im:
                        yield i, np.asarray(im.convert("RGB"))
                except OSError as e:
                    raise VideoError(f"{p}: unreadable image ({e})") from None
        return
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                if indices is None or i in indices:
                    yield i, frame.to_ndarray(format="rgb24")
    except (av.error.FFmpegError, OSError) as e:
        raise VideoError(f"{path}: unreadable video ({e.__class__.__name__}: {e})") from None


def read_frames(path: str | os.PathLike, indices: list[int] | None = None) -> np.ndarray:
    """All frames (or the given indices, in that order) as uint8 ``[N, H, W, 3]``."""
    want = None if indices is None else set(indices)
    got = dict(iter_frames(path, want))
    order = sorted(got) if indices is None else list(indices)
    missing = [i for i in order if i not in got]
    if missing:
        raise VideoError(f"{path}: has {len(got)} readable frames, frame {missing[0]} requested")
    if not order:
        raise VideoError(f"{path}: no frames")
    return np.stack([got[i] for i in order])


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 30.0, crf: int = 12,
                codec: str = "libx264") -> None:
    """Write uint8 ``[N, H, W, 3]`` frames as an mp4, one video frame per array frame, atomically."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 [N,H,W,3] frames, got {frames.dtype} {frames.shape}")
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    h, w = frames.shape[1:3]
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream(codec, rate=int(round(fps)))
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "medium"}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
