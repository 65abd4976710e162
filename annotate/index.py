"""Build a clip manifest from a RealEstate10K download.

    python -m annotate index RE10K_ROOT OUT_MANIFEST.csv [--min-frame-fraction 0.9] [key=value ...]   (or .parquet)

Camera files: ``ROOT/{split}/{clip}.txt`` or ``ROOT/RealEstate10K/{split}/{clip}.txt``.
Frames, first match wins: ``ROOT/video_clips/{split}/{youtube_id}/{clip}.mp4`` (youtube_id from the camera
file's URL line; what ``annotate extract`` writes), ``ROOT/frames/{split}/{clip}/`` (images named by
timestamp in microseconds, matched to camera lines by value, or by index, sorted naturally),
``ROOT/{split}/{clip}.mp4``, or a folder of images ``ROOT/{split}/{clip}/`` (all also under
``ROOT/RealEstate10K/``). pixelSplat/MVSplat chunks ``ROOT/{split}/*.torch`` hold cameras and frames of
many clips (see :mod:`annotate.layouts`). Optional precomputed depth in every layout:
``ROOT/depth/{split}/{clip}.npz``.
Camera files and frame lists that ``run`` needs but the download lacks (clips from chunks, clips whose frames
cover only part of the camera lines) are written to ``OUT_MANIFEST.clips/{split}/``.
Clips without frames are left out of the manifest and listed in ``OUT_MANIFEST.missing.txt``.
Paths in the manifest are relative to its folder.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from annotate.command import Command
from annotate.files import atomic_write_text
from annotate.layouts import CHUNK_SUFFIX, iter_chunk_clips, match_frame_folder
from annotate.log import get_logger
from annotate.manifest import relative_path, write_manifest
from annotate.re10k import write_camera_file, youtube_id
from annotate.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES

log = get_logger()

NOT_SPLITS = {"video_clips", "videos", "frames", "depth", "RealEstate10K"}


@dataclass
class IndexConfig:
    root: str = ""  # RealEstate10K download (camera files and videos or frame folders); the command's first word
    out_manifest: str = ""  # manifest to write (.csv, or .parquet); the command's second word
    # A clip whose frames cover only part of its camera lines is annotated on the covered lines when at
    # least this fraction has frames; otherwise it becomes a failed row saying how many are missing.
    min_frame_fraction: float = 0.9


@dataclass
class IndexResult:
    rows: list[dict] = field(default_factory=list)
    missing: list[dict] = field(default_factory=list)  # clip_id, split, pose_path (absolute)
    manifest: str = ""
    partial: list[dict] = field(default_factory=list)  # clip_id, split, covered, lines, note
    chunk_clips: int = 0


def camera_dirs(root: Path) -> list[tuple[str, Path]]:
    """(split, folder) for every folder of camera files, in both layouts."""
    found = []
    for base in (root / "RealEstate10K", root):
        if not base.is_dir():
            continue
        for d in sorted(base.iterdir()):
            if d.is_dir() and d.name not in NOT_SPLITS and any(d.glob("*.txt")):
                found.append((d.name, d))
    return found


def chunk_dirs(root: Path) -> list[tuple[str, Path]]:
    """(split, folder) for every folder of pixelSplat/MVSplat ``.torch`` chunks."""
    found = []
    for base in (root / "RealEstate10K", root):
        if base.is_dir():
            found += [(d.name, d) for d in sorted(base.iterdir())
                      if d.is_dir() and d.name not in NOT_SPLITS and any(d.glob(f"*{CHUNK_SUFFIX}"))]
    return found


def first_line(path: Path) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.readline().strip()
    except OSError:
        return ""


def find_frames(root: Path, split: str, clip: str, yt: str) -> Path | None:
    cands = []
    for base in (root, root / "RealEstate10K"):
        if yt:
            cands += [base / "video_clips" / split / yt / f"{clip}{s}" for s in VIDEO_SUFFIXES]
        cands += [base / "video_clips" / split / f"{clip}{s}" for s in VIDEO_SUFFIXES]
        cands.append(base / "frames" / split / clip)
        cands += [base / split / f"{clip}{s}" for s in VIDEO_SUFFIXES]
        cands.append(base / split / clip)
    for c in cands:
        if c.is_file():
            return c
        if c.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in c.iterdir()):
            return c
    return None


def index(root: str | os.PathLike, out_manifest: str | os.PathLike, quiet: bool = False,
          cfg: IndexConfig | None = None) -> IndexResult:
    """Scan ``root``, write the manifest, its ``.missing.txt`` sidecar and (where needed) camera files and
    frame lists under ``OUT_MANIFEST.clips/``; print what was found (unless ``quiet``)."""
    cfg = cfg or IndexConfig()
    if not 0 < cfg.min_frame_fraction <= 1:
        raise ValueError(f"min_frame_fraction must be in (0, 1], got {cfg.min_frame_fraction}")
    root, out_manifest = Path(root), Path(out_manifest)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    side = out_manifest.with_name(out_manifest.name + ".clips")
    res = IndexResult(manifest=str(out_manifest))
    seen: dict[str, str] = {}

    def rel(p: Path) -> str:
        return relative_path(p, out_manifest)

    def depth_of(split: str, clip: str) -> Path | None:
        d = root / "depth" / split / f"{clip}.npz"
        return d if d.is_file() else None

    def first_time(clip: str, split: str) -> bool:
        if clip in seen:  # the same clip in several layouts: the first (RealEstate10K/, then files) wins
            if seen[clip] != split:
                log.warning("clip %s is in splits %s and %s; keeping %s", clip, seen[clip], split, seen[clip])
            return False
        seen[clip] = split
        return True

    for split, folder in camera_dirs(root):
        for cam in sorted(folder.glob("*.txt")):
            clip = cam.stem
            if not first_time(clip, split):
                continue
            frames = find_frames(root, split, clip, youtube_id(first_line(cam)))
            if frames is None:
                res.missing.append({"clip_id": clip, "split": split, "pose_path": str(cam)})
                continue
            pose, depth = cam, depth_of(split, clip)
            if frames.is_dir():
                m = match_frame_folder(cam, frames, depth, side / split, cfg.min_frame_fraction)
                pose, frames, depth = m.pose_path, m.video_path, m.depth_path
                if m.note:
                    res.partial.append({"clip_id": clip, "split": split, "covered": m.covered, "lines": m.lines,
                                        "note": m.note})
            res.rows.append({"clip_id": clip, "split": split, "pose_path": rel(pose), "video_path": rel(frames),
                             "depth_path": rel(depth) if depth is not None else ""})
    for split, folder in chunk_dirs(root):
        for c in iter_chunk_clips(folder):
            if not first_time(c.key, split):
                continue
            pose = side / split / f"{c.key}.txt"
            write_camera_file(pose, c.trajectory)
            depth = depth_of(split, c.key)
            res.chunk_clips += 1
            res.rows.append({"clip_id": c.key, "split": split, "pose_path": rel(pose),
                             "video_path": f"{rel(c.chunk)}#{c.key}",
                             "depth_path": rel(depth) if depth is not None else ""})
    write_manifest(res.rows, out_manifest)
    missing_side = out_manifest.with_name(out_manifest.name + ".missing.txt")
    atomic_write_text(missing_side, "".join(f"{m['clip_id']}\t{m['split']}\t{m['pose_path']}\n" for m in res.missing))
    if not quiet:
        print_result(res)
    return res


def print_result(res: IndexResult) -> None:
    by_split: dict[str, int] = {}
    for r in res.rows:
        by_split[r["split"]] = by_split.get(r["split"], 0) + 1
    print(f"wrote {res.manifest}: {len(res.rows)} clips ({', '.join(f'{k} {v}' for k, v in sorted(by_split.items()))})"
          + (f", {res.chunk_clips} from .torch chunks" if res.chunk_clips else ""))
    short = [p for p in res.partial if p["note"] == "too few frames"]
    if len(res.partial) > len(short):
        print(f"{len(res.partial) - len(short)} clip(s) with frames for only part of their camera lines: "
              "annotated on the covered lines")
    for p in short[:20]:
        print(f"  {p['split']}/{p['clip_id']}: only {p['covered']} of {p['lines']} camera lines have a frame "
              "(will be a failed row)")
    if res.missing:
        print(f"{len(res.missing)} clip(s) without a video, not in the manifest (listed in "
              f"{res.manifest}.missing.txt):")
        for m in res.missing[:20]:
            print(f"  {m['split']}/{m['clip_id']}")
        if len(res.missing) > 20:
            print(f"  ... and {len(res.missing) - 20} more")


def main(cfg: IndexConfig) -> IndexResult:
    """Index ``cfg.root`` into ``cfg.out_manifest`` (:func:`index`; prints what was found)."""
    return index(cfg.root, cfg.out_manifest, cfg=cfg)


def command() -> Command:
    return Command(IndexConfig, lambda cfg, args: main(cfg), "python -m annotate index", __doc__.split("\n\n")[0],
                   positionals=("root", "out_manifest"),
                   errors=(OSError, ValueError))


def cli(argv: list[str] | None = None) -> int:
    return command().main(argv)


if __name__ == "__main__":
    sys.exit(cli())
