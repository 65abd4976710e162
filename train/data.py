"""Training clips from an annotation folder (contract shards) plus the annotation job's input manifest.

One sample = ``frames`` frames of a kept clip (status ok, keep true) of one split:
- stride uniform in ``stride_range`` (training) or ``val_stride``; reduced to ``(n - 1) // (frames - 1)`` when
  the clip is too short; random start (validation: start 0);
- only the sample's frames are decoded (:func:`annotate.video.read_frames` with indices: seek + early stop, one
  decoder thread since the loader runs one worker process per core), resized keeping the aspect ratio and
  centre-cropped to (height, width) by :func:`annotate.images.resize_crop` (bilinear, antialiased: the one
  resize inference uses too), intrinsics by :class:`ResizeCrop` (the authors' ``_resize_for_rectangle_crop`` rule);
  ``video`` is float [3, F, H, W] in [-1, 1], or uint8 with ``uint8=True`` (the trainer's training set: the
  worker skips the float conversion, :func:`to_unit_range` scales it on the GPU, to the same values);
- condition frame uniform over the sampled frames (training, ``rand_cond_frame``) or frame 0;
- cameras: c2w relative to the condition frame, translations multiplied by the scale of ``scale_source``:
  ``condition_frame`` = ``frame_scale`` of the condition frame (as the released RealCam-I2V code); when that is
  NaN (too few points in that frame) the clip ``scale`` is used instead; ``clip`` = the clip ``scale``;
  ``relative`` = unscaled (CamI2V / CameraCtrl / MotionCtrl baselines). ``auto`` is resolved per camera kind
  by train/config.py; a dataset built directly with ``auto`` uses ``condition_frame``;
- concatenation mode (training with ``modes``, train/camera/modes.py): drawn per sample from the given
  probabilities; interpolation and continuation use condition frame 0, and continuation gives the first
  ``num_given`` frames, uniform in 1..frames//2. Validation is always basic. With the default (basic only) no
  random number is drawn for it, so samples are the same as before modes existed.

Determinism: the sampler yields ``(epoch, index)`` and every random choice of a sample comes from
``numpy.random.default_rng([seed, epoch, index])``, so a resumed run draws the same samples in any worker.
An unreadable video is skipped (the next clip is tried) and counted: ``dataset.skipped`` in-process, and each
sample's ``skipped`` field (summed by the trainer, since workers have their own copies).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from annotate.camera import ResizeCrop, relative_to, scale_translation, to_4x4, w2c_to_c2w
from annotate.images import resize_crop
from annotate.manifest import read_manifest, resolve_path
from annotate.output import read_table
from annotate.video import VideoError, read_frames

from .camera.modes import BASIC, CONTINUATION, MODE_NAMES, parse_modes
from .config import DataConfig

log = logging.getLogger("realcam.train")

COLUMNS = ["clip_id", "split", "num_frames", "timestamps_us", "intrinsics", "w2c", "frame_scale", "scale",
           "status", "keep"]


def load_captions(path: str) -> dict[str, str]:
    if not path:
        return {}
    p = Path(path)
    if p.suffix.lower() == ".json":
        raw = json.loads(p.read_text())
    else:
        with open(p, newline="", encoding="utf-8-sig") as f:
            raw = {r["clip_id"]: r["caption"] for r in csv.DictReader(f)}
    out = {}
    for k, v in raw.items():
        if isinstance(v, list):  # CameraCtrl json: "clip.mp4": [caption]
            v = v[0] if v else ""
        out[Path(k).stem if k.endswith(".mp4") else k] = str(v)
    return out


def load_clips(cfg: DataConfig, split: str) -> list[dict]:
    """Kept clips of ``split`` with their video paths (manifest paths are relative to the manifest)."""
    table = read_table(cfg.annotation_dir, COLUMNS)
    rows, _ = read_manifest(cfg.manifest)
    base = Path(cfg.manifest).parent
    videos = {r["clip_id"]: resolve_path(r["video_path"], base) for r in rows}
    clips, short, no_video = [], 0, 0
    for r in table.to_pylist():
        if r["split"] != split or r["status"] != "ok" or not r["keep"]:
            continue
        if r["num_frames"] < cfg.frames:
            short += 1
            continue
        if r["clip_id"] not in videos:
            no_video += 1
            continue
        ts = np.asarray(r["timestamps_us"], np.float64)
        fps = float(1e6 / np.median(np.diff(ts))) if len(ts) > 1 and np.median(np.diff(ts)) > 0 else 30.0
        clips.append({"clip_id": r["clip_id"], "video_path": videos[r["clip_id"]], "num_frames": r["num_frames"],
                      "intrinsics": np.asarray(r["intrinsics"], np.float64).reshape(-1, 4),
                      "w2c": np.asarray(r["w2c"], np.float64).reshape(-1, 3, 4),
                      "frame_scale": np.asarray(r["frame_scale"], np.float64), "scale": float(r["scale"]),
                      "fps": fps})
    if short or no_video:
        log.warning("split %s: skipped %d clips shorter than %d frames, %d without a manifest video",
                    split, short, cfg.frames, no_video)
    clips.sort(key=lambda c: c["clip_id"])  # stable order, independent of shard layout
    return clips


def choose_frames(rng: np.random.Generator, n: int, frames: int, stride_range: tuple[int, int] | int,
                  random_start: bool) -> tuple[np.ndarray, int]:
    if isinstance(stride_range, int):
        stride = stride_range
    else:
        stride = int(rng.integers(stride_range[0], stride_range[1] + 1))
    stride = max(1, min(stride, (n - 1) // max(frames - 1, 1)))
    span = (frames - 1) * stride
    start = int(rng.integers(0, n - span)) if random_start else 0
    return start + stride * np.arange(frames), stride


def condition_scale(clip: dict, frame_index: int, source: str) -> float:
    if source == "relative":
        return 1.0
    if source in ("condition_frame", "auto"):
        s = float(clip["frame_scale"][frame_index])
        if math.isfinite(s) and s > 0:
            return s
    return clip["scale"]  # "clip", or the NaN fallback of "condition_frame"


def read_sample_frames(path: str, indices: list[int]) -> np.ndarray:
    """The loader's reader: only these frames, one decoder thread (the loader runs one worker per core; FFmpeg's
    default of a thread per core in every worker would also decode frames past the last wanted one)."""
    return read_frames(path, indices, threads=1)


def to_unit_range(video: torch.Tensor) -> torch.Tensor:
    """The model's pixel range: uint8 -> float [-1, 1] (x / 127.5 - 1, as inference), on whatever device the video
    is (the trainer scales its uint8 batches on the GPU); a float video is already in it and is returned as it is."""
    if video.dtype != torch.uint8:
        return video
    return video.float().div_(127.5).sub_(1.0)


def to_model_video(frames: np.ndarray, out_hw: tuple[int, int], uint8: bool = False) -> tuple[torch.Tensor, ResizeCrop]:
    """uint8 [F, H0, W0, 3] -> [3, F, H, W] and the plan: float in [-1, 1] (:func:`to_unit_range`), or with ``uint8``
    the resized uint8 pixels as a view (the collate's stack makes the batch contiguous; no float in the worker)."""
    small, plan = resize_crop(frames, out_hw)  # uint8 in, uint8 out: the same pixels inference gets
    video = torch.from_numpy(small).permute(3, 0, 1, 2)
    return (video if uint8 else to_unit_range(video.contiguous())), plan


class CameraVideoDataset(Dataset):
    def __init__(self, cfg: DataConfig, split: str | None = None, train: bool = True, seed: int = 0,
                 clips: list[dict] | None = None, modes: str | dict = "basic=1.0", uint8: bool = False):
        self.cfg, self.train, self.seed = cfg, train, seed
        self.uint8 = uint8  # "video" as uint8 [0, 255] (the trainer scales it on its device) instead of [-1, 1]
        probs = parse_modes(modes) if train else {"basic": 1.0}
        self.mode_ids = np.array([MODE_NAMES.index(m) for m in probs])
        self.mode_probs = np.array(list(probs.values()))
        self.split = split or (cfg.split if train else cfg.val_split)
        self.clips = clips if clips is not None else load_clips(cfg, self.split)
        if train is False and cfg.val_max_clips:
            self.clips = self.clips[: cfg.val_max_clips]
        self.captions = load_captions(cfg.captions)
        self.skipped = 0
        self.skipped_ids: list[str] = []
        self.read = read_sample_frames  # (path, indices) -> uint8 [F, H, W, 3]; bench_train swaps in others

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, key) -> dict:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        rng = np.random.default_rng([self.seed, epoch, index])
        skipped = 0
        for attempt in range(self.cfg.max_skips + 1):
            clip = self.clips[(index + attempt) % len(self.clips)]
            try:
                sample = self.load(clip, rng)
            except VideoError as e:
                skipped += 1
                self.skipped += 1
                self.skipped_ids.append(clip["clip_id"])
                log.warning("skipping unreadable video of %s (%s)", clip["clip_id"], e)
                continue
            sample["skipped"] = skipped
            return sample
        raise RuntimeError(f"{self.cfg.max_skips + 1} unreadable videos in a row from index {index}")

    def load(self, clip: dict, rng: np.random.Generator) -> dict:
        cfg = self.cfg
        stride_opt = tuple(cfg.stride_range) if self.train else cfg.val_stride
        idx, stride = choose_frames(rng, clip["num_frames"], cfg.frames, stride_opt, self.train)
        cond = int(rng.integers(0, cfg.frames)) if self.train and cfg.rand_cond_frame else 0
        mode, num_given = BASIC, 1
        if len(self.mode_ids) > 1 or self.mode_ids[0] != BASIC:
            mode = int(rng.choice(self.mode_ids, p=self.mode_probs))
            if mode != BASIC:
                cond = 0  # interpolation / continuation start from frame 0
            if mode == CONTINUATION:
                num_given = int(rng.integers(1, max(1, cfg.frames // 2) + 1))
        frames = self.read(clip["video_path"], idx.tolist())  # only these frames are decoded (seek + early stop)
        video, plan = to_model_video(frames, (cfg.height, cfg.width), self.uint8)
        scale = condition_scale(clip, int(idx[cond]), cfg.scale_source)
        c2w = scale_translation(relative_to(w2c_to_c2w(clip["w2c"][idx]), cond), scale)
        return {
            "video": video,
            "c2w": torch.from_numpy(to_4x4(c2w)).float(),
            "intrinsics": torch.from_numpy(plan.intrinsics(clip["intrinsics"][idx])).float(),
            "cond_index": cond,
            "mode": mode,
            "num_given": num_given,
            "stride": stride,
            "fps": max(1, int(clip["fps"] // stride)),
            "scale": scale,
            "caption": self.captions.get(clip["clip_id"], ""),
            "clip_id": clip["clip_id"],
            "frame_indices": torch.from_numpy(idx),
        }


def collate(samples: list[dict]) -> dict:
    out = {}
    for k in samples[0]:
        vals = [s[k] for s in samples]
        if isinstance(vals[0], torch.Tensor):
            out[k] = torch.stack(vals)
        elif isinstance(vals[0], int | float):
            out[k] = torch.tensor(vals)
        else:
            out[k] = vals
    return out


class ResumableSampler(Sampler):
    """Shuffled, rank-sharded ``(epoch, index)`` keys with a resumable position.

    Each epoch is a permutation of ``range(n)`` seeded by (seed, epoch), cut to a multiple of
    ``world * batch_size`` (drop_last, so every rank takes the same number of steps), then dealt out
    round-robin by rank. ``position`` counts batches of this rank already consumed in ``epoch``.
    """

    def __init__(self, n: int, batch_size: int, rank: int = 0, world: int = 1, seed: int = 0, shuffle: bool = True):
        self.n, self.batch_size, self.rank, self.world = n, batch_size, rank, world
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.position = 0, 0
        if self.batches_per_epoch == 0:
            raise ValueError(f"{n} clips are fewer than one global batch ({world} x {batch_size})")

    @property
    def batches_per_epoch(self) -> int:
        return self.n // (self.world * self.batch_size)

    def epoch_keys(self, epoch: int) -> list[tuple[int, int]]:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n) if self.shuffle else np.arange(self.n)
        order = order[: self.batches_per_epoch * self.world * self.batch_size]
        return [(epoch, int(i)) for i in order[self.rank::self.world]]

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.position) * self.batch_size

    def __iter__(self):
        keys = self.epoch_keys(self.epoch)
        yield from keys[self.position * self.batch_size:]

    def advance(self) -> None:
        """Call after each consumed batch."""
        self.position += 1
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
