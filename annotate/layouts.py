"""RealEstate10K layouts found on people's disks, turned into what ``annotate run`` reads.

* pixelSplat/MVSplat chunks ``{split}/*.torch`` (+ ``index.json``): a list of dicts with ``key`` (clip id),
  ``url``, ``timestamps`` (int64 us), ``cameras`` (float [V, 18]: the camera file's columns 2-19) and
  ``images`` (uint8 tensors of JPEG bytes). Loaded with ``torch.load(weights_only=True)`` only. The camera
  file is written beside the manifest; the frames stay in the chunk (``CHUNK.torch#KEY``, see
  :mod:`annotate.video`).
* frame folders named by timestamp (``frames/{split}/{clip}/{timestamp_us}.png``): frames are matched to
  camera lines by timestamp *value*. Lines without a frame are dropped when at least ``min_frame_fraction``
  of them have one (a camera file of the covered lines and a ``.frames`` list are written beside the
  manifest, so the output's ``timestamps_us`` says which lines were annotated); otherwise the ``.frames``
  list keeps the gaps and the clip becomes a failed row saying how many frames are missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annotate.files import atomic_path
from annotate.log import get_logger
from annotate.re10k import CameraFileError, CameraTrajectory, read_camera_file, write_camera_file
from annotate.video import FRAME_LIST_SUFFIX, VideoError, list_images, load_chunk, write_frame_list

log = get_logger()

CHUNK_SUFFIX = ".torch"


@dataclass
class ChunkClip:
    key: str
    chunk: Path
    trajectory: CameraTrajectory
    num_images: int


def chunk_trajectory(clip: dict, where: str) -> CameraTrajectory:
    """The camera file's content of one chunk entry; ValueError naming ``where`` when malformed."""
    try:
        stamps = np.asarray(clip["timestamps"].numpy(), np.int64).reshape(-1)
        cams = np.asarray(clip["cameras"].double().numpy(), np.float64)
    except (KeyError, AttributeError) as e:
        raise ValueError(f"{where}: chunk entry lacks tensor {e}") from None
    if cams.ndim != 2 or cams.shape[1] != 18 or len(cams) != len(stamps):
        raise ValueError(f"{where}: cameras have shape {tuple(cams.shape)}, expected [{len(stamps)}, 18]")
    return CameraTrajectory(str(clip.get("url", "")), stamps, cams[:, :4].copy(), cams[:, 6:].reshape(-1, 3, 4).copy())


def iter_chunk_clips(folder: Path) -> Iterator[ChunkClip]:
    """Every clip of every ``*.torch`` chunk in ``folder`` (chunks in name order)."""
    for chunk in sorted(folder.glob(f"*{CHUNK_SUFFIX}")):
        try:
            clips = load_chunk(chunk)
        except VideoError as e:
            log.warning("skipping %s", e)
            continue
        for n, clip in enumerate(clips):
            key = str(clip.get("key", ""))
            where = f"{chunk} entry {n} (key {key!r})"
            try:
                traj = chunk_trajectory(clip, where)
            except ValueError as e:
                log.warning("skipping %s", e)
                continue
            yield ChunkClip(key, chunk, traj, len(clip.get("images", [])))


def timestamp_named(images: list[Path], stamps: np.ndarray) -> dict[int, Path] | None:
    """``{timestamp: image}`` when the folder's frames are named by camera timestamp (all names integers,
    at least half of them a camera line's timestamp), else None (named by index: natural order)."""
    if not images or not all(p.stem.isdigit() for p in images):
        return None
    by_value = {int(p.stem): p for p in images}
    hits = len(by_value.keys() & set(int(t) for t in stamps))
    return by_value if hits and hits * 2 >= len(by_value) else None


@dataclass
class Matched:
    pose_path: Path
    video_path: Path
    depth_path: Path | None
    covered: int
    lines: int
    note: str = ""


def match_frame_folder(cam: Path, folder: Path, depth: Path | None, side: Path, min_frame_fraction: float) -> Matched:
    """Pair a frame folder with its camera file. Index-named folders (and timestamp-named folders that hold
    exactly the camera lines' frames) are used as they are; otherwise camera file, ``.frames`` list and
    depth are written under ``side`` for the lines that have frames (see the module doc)."""
    keep = Matched(cam, folder, depth, 0, 0)
    try:
        traj = read_camera_file(cam)
    except CameraFileError:
        return keep  # `run` reports the malformed file as the clip's failure
    images = list_images(folder)
    by_value = timestamp_named(images, traj.timestamps_us)
    keep.covered = keep.lines = len(traj)
    if by_value is None:
        return keep
    have = np.array([int(t) in by_value for t in traj.timestamps_us])
    extra = len(by_value) - int(have.sum())
    keep.covered = int(have.sum())
    if have.all() and extra == 0:
        return keep  # natural order of the names is timestamp order
    side.mkdir(parents=True, exist_ok=True)
    frames = side / f"{cam.stem}{FRAME_LIST_SUFFIX}"
    if extra:
        log.info("%s: %d frame(s) match no camera line of %s; ignored", folder, extra, cam)
    if keep.covered < min_frame_fraction * len(traj):
        # Keep the gaps: reading fails, so `run` writes a failed row saying how many frames are missing.
        write_frame_list(frames, [(t, by_value.get(int(t))) for t in traj.timestamps_us],
                         f"only {keep.covered} of {len(traj)} camera lines have a frame "
                         f"(min_frame_fraction {min_frame_fraction:g})")
        keep.video_path, keep.note = frames, "too few frames"
        return keep
    sub = CameraTrajectory(traj.url, traj.timestamps_us[have], traj.intrinsics[have], traj.w2c[have])
    pose = side / cam.name
    write_camera_file(pose, sub)
    write_frame_list(frames, [(int(t), by_value[int(t)]) for t in sub.timestamps_us],
                     f"{keep.covered} of {len(traj)} camera lines have a frame; camera file: {cam.name} here")
    keep.pose_path, keep.video_path, keep.note = pose, frames, "partial" if keep.covered < len(traj) else ""
    if depth is not None:
        keep.depth_path = subset_depth(depth, have, side / f"{cam.stem}.npz")
    return keep


def subset_depth(depth: Path, have: np.ndarray, out: Path) -> Path | None:
    """The covered lines' maps of a per-line depth file (or the file itself if it already has one map per
    covered line); None, with a warning, when it fits neither."""
    try:
        with np.load(depth) as z:
            maps = z["depth"]
    except (OSError, KeyError, ValueError) as e:
        log.warning("%s: unreadable depth (%s); the clip will use the depth model", depth, e)
        return None
    if len(maps) == int(have.sum()):
        return depth
    if len(maps) != len(have):
        log.warning("%s: %d depth maps for %d camera lines; the clip will use the depth model",
                    depth, len(maps), len(have))
        return None
    with atomic_path(out, keep_suffix=True) as tmp:  # keeps .npz: np.savez_compressed would append one
        np.savez_compressed(tmp, depth=maps[have])
    return out
