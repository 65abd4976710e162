"""Cut downloaded RealEstate10K videos at the camera files' timestamps.

    python -m annotate extract RE10K_ROOT [--height 360] [--workers N] [--crf 18] [--config YAML] [key=value ...]

For every camera file ``RE10K_ROOT/RealEstate10K/{split}/{clip}.txt`` (or ``RE10K_ROOT/{split}/``) whose video
``RE10K_ROOT/videos/{youtube_id}.{mp4,webm,mkv}`` exists, keep for each camera line the decoded frame whose
presentation time (relative to the video stream's start) is nearest the line's timestamp, and write
``RE10K_ROOT/video_clips/{split}/{youtube_id}/{clip}.mp4`` with exactly one frame per camera line (the layout
``annotate index`` reads). A line with no frame within half a frame interval, or outside the video, makes the
clip a failed row of ``video_clips/extract_log.csv`` (no clip file is written). Each video is decoded once
for all its clips, seeking to each group of clips; videos are cut in parallel processes. Rerunning skips
clips whose file exists (files appear atomically, so a killed run leaves no partial clip).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from annotate.command import Command
from annotate.files import atomic_write_text
from annotate.index import camera_dirs
from annotate.log import get_logger, progress_bar
from annotate.re10k import CameraFileError, read_camera_file, youtube_id
from annotate.video import VIDEO_SUFFIXES, write_video

log = get_logger()

LOG_COLUMNS = ("split", "clip_id", "youtube_id", "status", "frames", "max_error_us", "reason", "seconds")
SEGMENT_GAP_S = 5.0  # clips closer than this are decoded in one sweep instead of seeking again
SEGMENT_MAX_S = 60.0  # ...unless the sweep would span more than this (its frames are held in memory)


@dataclass
class ExtractConfig:
    root: str = ""  # RealEstate10K root: RealEstate10K/{split}/*.txt and videos/; the command's word
    height: int = 360  # output height in pixels (width keeps the aspect ratio, even); 0 = the video's own
    workers: int = 0  # parallel processes, each cutting one video at a time; 0 = one per CPU core
    crf: int = 18  # libx264 quality of the written clips (lower = better, larger)
    # more libx264 settings of the written clips: no B-frame is a reference picture, so the trainer's reader of a
    # sample's frames skips them (11.9 against 7.4 samples/s per core, 18 % smaller files; README, bench-train)
    x264_params: str = "b-pyramid=none:bframes=7"
    fps: float = 30.0  # frame rate written into the clip files (RealEstate10K lines are ~video frames)


@dataclass
class ClipJob:
    split: str
    clip_id: str
    youtube_id: str
    stamps_us: np.ndarray
    out: Path


def find_video(videos: Path, yt: str) -> Path | None:
    for s in VIDEO_SUFFIXES:
        p = videos / f"{yt}{s}"
        if p.is_file():
            return p
    return None


def plan(root: Path) -> tuple[dict[Path, list[ClipJob]], list[dict], int, int]:
    """(clips to cut per video, failed rows for unreadable camera files, clips done, clips without video)."""
    per_video: dict[Path, list[ClipJob]] = {}
    bad: list[dict] = []
    done = no_video = 0
    videos = root / "videos"
    for split, folder in camera_dirs(root):
        for cam in sorted(folder.glob("*.txt")):
            try:
                traj = read_camera_file(cam)
            except CameraFileError as e:
                bad.append(log_row(split, cam.stem, "", "failed", reason=f"malformed camera file: {e}"))
                continue
            yt = youtube_id(traj.url)
            out = root / "video_clips" / split / yt / f"{cam.stem}.mp4"
            if out.is_file():
                done += 1
                continue
            video = find_video(videos, yt) if yt else None
            if video is None:
                no_video += 1
                continue
            per_video.setdefault(video, []).append(ClipJob(split, cam.stem, yt, traj.timestamps_us, out))
    return per_video, bad, done, no_video


def log_row(split: str, clip: str, yt: str, status: str, frames: int = 0, max_error_us: float = float("nan"),
            reason: str = "", seconds: float = 0.0) -> dict:
    return {"split": split, "clip_id": clip, "youtube_id": yt, "status": status, "frames": frames,
            "max_error_us": "" if max_error_us != max_error_us else int(round(max_error_us)),
            "reason": " ".join(reason.split()), "seconds": round(seconds, 3)}


def nearest_frames(times_us: np.ndarray, stamps_us: np.ndarray, interval_us: float
                   ) -> tuple[np.ndarray, np.ndarray, str]:
    """For each timestamp the index of the frame whose time is nearest, the absolute errors, and '' or the
    reason the clip fails (a timestamp with no frame within half a frame interval, or outside the video)."""
    right = np.clip(np.searchsorted(times_us, stamps_us), 0, len(times_us) - 1)
    left = np.clip(right - 1, 0, len(times_us) - 1)
    pick = np.where(np.abs(times_us[left] - stamps_us) <= np.abs(times_us[right] - stamps_us), left, right)
    err = np.abs(times_us[pick] - stamps_us).astype(np.float64)
    half = interval_us / 2
    bad = np.flatnonzero(err > half)
    if len(bad):
        i = int(bad[0])
        t = int(stamps_us[i])
        where = ("after the video's last frame" if t > times_us[-1] else
                 "before the video's first frame" if t < times_us[0] else "in a gap between frames")
        return pick, err, (f"timestamp {t} us (line {i + 2}) has no frame within half a frame interval "
                           f"({half:.0f} us; nearest {err[i]:.0f} us away, {where}); {len(bad)} such line(s)")
    return pick, err, ""


def cut_video(video: Path, jobs: list[ClipJob], cfg: ExtractConfig) -> list[dict]:
    """Cut every clip of one video; one log row per clip. Decodes each group of nearby clips once."""
    import av

    t0 = time.perf_counter()
    rows: list[dict] = []
    try:
        container = av.open(str(video))
    except (av.error.FFmpegError, OSError) as e:
        return [log_row(j.split, j.clip_id, j.youtube_id, "failed", reason=f"unreadable video {video}: {e}")
                for j in jobs]
    with container:
        if not container.streams.video:
            return [log_row(j.split, j.clip_id, j.youtube_id, "failed", reason=f"{video}: no video stream")
                    for j in jobs]
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = stream.time_base
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(30)
        interval_us = 1e6 / float(rate)
        start_pts = stream.start_time if stream.start_time is not None else 0
        height = cfg.height or stream.codec_context.height
        width = int(round(stream.codec_context.width * height / stream.codec_context.height / 2)) * 2

        def to_us(pts: int) -> int:
            return int(round((pts - start_pts) * tb * 1_000_000))

        # Group clips whose time ranges are close, and decode each group once after one seek.
        jobs = sorted(jobs, key=lambda j: int(j.stamps_us[0]))
        groups: list[list[ClipJob]] = []
        for j in jobs:
            g = groups[-1] if groups else []
            if g and (j.stamps_us[0] - max(int(c.stamps_us[-1]) for c in g) < SEGMENT_GAP_S * 1e6
                      and max(int(j.stamps_us[-1]), *(int(c.stamps_us[-1]) for c in g)) - int(g[0].stamps_us[0])
                      < SEGMENT_MAX_S * 1e6):
                groups[-1].append(j)
            else:
                groups.append([j])
        for group in groups:
            lo = min(int(j.stamps_us[0]) for j in group) - interval_us
            hi = max(int(j.stamps_us[-1]) for j in group) + interval_us
            try:
                times, imgs = decode_range(container, stream, lo, hi, to_us, start_pts, width, height)
            except (av.error.FFmpegError, OSError) as e:
                rows += [log_row(j.split, j.clip_id, j.youtube_id, "failed", reason=f"{video}: decoding failed "
                                 f"({e.__class__.__name__}: {e})") for j in group]
                continue
            for j in group:
                t1 = time.perf_counter()
                if not len(times):
                    rows.append(log_row(j.split, j.clip_id, j.youtube_id, "failed",
                                        reason=f"{video}: no frames near {int(j.stamps_us[0])} us (outside the video)"))
                    continue
                pick, err, why = nearest_frames(times, j.stamps_us, interval_us)
                if why:
                    rows.append(log_row(j.split, j.clip_id, j.youtube_id, "failed", max_error_us=float(err.max()),
                                        reason=f"{video}: {why}"))
                    continue
                j.out.parent.mkdir(parents=True, exist_ok=True)
                write_video(j.out, np.stack([imgs[k] for k in pick]), fps=cfg.fps, crf=cfg.crf,
                            x264_params=cfg.x264_params)
                rows.append(log_row(j.split, j.clip_id, j.youtube_id, "ok", frames=len(pick),
                                    max_error_us=float(err.max()), seconds=time.perf_counter() - t1))
    spent = time.perf_counter() - t0
    for r in rows:  # decoding is shared by the clips of a video: spread it evenly
        r["seconds"] = round(spent / max(len(rows), 1), 3)
    return rows


def decode_range(container, stream, lo_us: float, hi_us: float, to_us, start_pts: int, width: int,
                 height: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Presentation times (us) and resized RGB frames of every frame in [lo_us, hi_us] (plus the frames just
    outside, so the nearest frame of a boundary timestamp is always among them)."""
    target = start_pts + int(max(lo_us, 0) / 1e6 / stream.time_base)
    container.seek(max(target, start_pts), stream=stream, backward=True, any_frame=False)
    times: list[int] = []
    imgs: list[np.ndarray] = []
    before = None
    for frame in container.decode(stream):
        if frame.pts is None:
            continue
        t = to_us(frame.pts)
        if t < lo_us:
            before = (t, frame)  # the last frame before the range: a candidate for the first timestamp
            continue
        if before is not None:
            times.append(before[0])
            imgs.append(before[1].reformat(width, height, format="rgb24").to_ndarray())
            before = None
        times.append(t)
        imgs.append(frame.reformat(width, height, format="rgb24").to_ndarray())
        if t > hi_us:
            break
    if before is not None:  # the whole range lies after the last frame
        times.append(before[0])
        imgs.append(before[1].reformat(width, height, format="rgb24").to_ndarray())
    order = np.argsort(times, kind="stable")
    return np.asarray(times, np.int64)[order], [imgs[i] for i in order]


def read_log(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {f"{r['split']}/{r['clip_id']}": r for r in csv.DictReader(f)}


def write_log(path: Path, rows: dict[str, dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(LOG_COLUMNS), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows[k] for k in sorted(rows))
    atomic_write_text(path, buf.getvalue())


@dataclass
class ExtractResult:
    ok: int = 0
    failed: int = 0
    already_done: int = 0
    without_video: int = 0
    frames: int = 0
    seconds: float = 0.0
    max_error_us: float = 0.0
    log: str = ""


def extract(root: str | os.PathLike, cfg: ExtractConfig | None = None, progress: bool = True) -> ExtractResult:
    """Cut every clip whose video is downloaded and whose clip file does not exist yet; update the log."""
    cfg = cfg or ExtractConfig()
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    t0 = time.perf_counter()
    per_video, bad, done, no_video = plan(root)
    log_path = root / "video_clips" / "extract_log.csv"
    rows = read_log(log_path)
    res = ExtractResult(already_done=done, without_video=no_video, log=str(log_path))
    for r in bad:
        rows[f"{r['split']}/{r['clip_id']}"] = r
    workers = max(1, min(cfg.workers or os.cpu_count() or 1, len(per_video) or 1))
    last_write = time.perf_counter()
    with progress_bar("cutting videos", len(per_video), enabled=progress) as bar:
        with ProcessPoolExecutor(workers) as pool:
            futs = {pool.submit(cut_video, v, jobs, cfg): (v, jobs) for v, jobs in per_video.items()}
            for fut in as_completed(futs):
                video, jobs = futs[fut]
                try:
                    got = fut.result()
                except Exception as e:  # noqa: BLE001 - a crashed worker fails that video's clips, not the run
                    got = [log_row(j.split, j.clip_id, j.youtube_id, "failed",
                                   reason=f"{video}: {e.__class__.__name__}: {e}") for j in jobs]
                for r in got:
                    rows[f"{r['split']}/{r['clip_id']}"] = r
                    if r["status"] == "ok":
                        res.ok += 1
                        res.frames += int(r["frames"])
                        res.max_error_us = max(res.max_error_us, float(r["max_error_us"]))
                    else:
                        res.failed += 1
                bar.advance()
                if time.perf_counter() - last_write > 30:  # a killed run keeps most of its log
                    write_log(log_path, rows)
                    last_write = time.perf_counter()
    res.failed += len(bad)
    write_log(log_path, rows)
    res.seconds = time.perf_counter() - t0
    return res


def main(cfg: ExtractConfig) -> ExtractResult:
    """Cut the clips of ``cfg.root`` (:func:`extract`)."""
    return extract(cfg.root, cfg)


def _run(cfg: ExtractConfig, args: argparse.Namespace) -> int:
    res = main(cfg)
    print(f"cut {res.ok} clip(s) ({res.frames} frames, largest timestamp error {res.max_error_us:.0f} us), "
          f"{res.failed} failed, {res.already_done} already cut, {res.without_video} without a downloaded video; "
          f"{res.seconds:.1f} s; log: {res.log}")
    return 0


def command() -> Command:
    return Command(ExtractConfig, _run, "python -m annotate extract", __doc__.split("\n\n")[0],
                   positionals=("root",), errors=(OSError, ValueError))


def cli(argv: list[str] | None = None) -> int:
    return command().main(argv)


if __name__ == "__main__":
    sys.exit(cli())
