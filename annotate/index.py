"""Build a clip manifest from a RealEstate10K download.

    python -m annotate index RE10K_ROOT OUT_MANIFEST.csv   (or .parquet)

Camera files: ``ROOT/{split}/{clip}.txt`` or ``ROOT/RealEstate10K/{split}/{clip}.txt``.
Frames, first match wins: ``ROOT/video_clips/{split}/{youtube_id}/{clip}.mp4`` (youtube_id from the camera
file's URL line), ``ROOT/{split}/{clip}.mp4``, or a folder of images ``ROOT/{split}/{clip}/`` (both also under
``ROOT/RealEstate10K/``). Optional precomputed depth: ``ROOT/depth/{split}/{clip}.npz``.
Clips without frames are left out of the manifest and listed in ``OUT_MANIFEST.missing.txt``.
Paths in the manifest are relative to its folder.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from annotate.manifest import write_manifest
from annotate.re10k import youtube_id
from annotate.video import IMAGE_SUFFIXES

log = logging.getLogger("realcam")

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi")
NOT_SPLITS = {"video_clips", "videos", "frames", "depth", "RealEstate10K"}


@dataclass
class IndexResult:
    rows: list[dict] = field(default_factory=list)
    missing: list[dict] = field(default_factory=list)  # clip_id, split, pose_path (absolute)
    manifest: str = ""


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
        cands += [base / split / f"{clip}{s}" for s in VIDEO_SUFFIXES]
        cands.append(base / split / clip)
    for c in cands:
        if c.is_file():
            return c
        if c.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in c.iterdir()):
            return c
    return None


def index(root: str | os.PathLike, out_manifest: str | os.PathLike, quiet: bool = False) -> IndexResult:
    """Scan ``root``, write the manifest and its ``.missing.txt`` sidecar, print what was found (unless
    ``quiet``); return the rows and the clips without frames."""
    root, out_manifest = Path(root), Path(out_manifest)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    base = out_manifest.resolve().parent
    res = IndexResult(manifest=str(out_manifest))
    seen: dict[str, str] = {}
    for split, folder in camera_dirs(root):
        for cam in sorted(folder.glob("*.txt")):
            clip = cam.stem
            if clip in seen:  # the same clip in both layouts: the first (RealEstate10K/) wins
                if seen[clip] != split:
                    log.warning("clip %s is in splits %s and %s; keeping %s", clip, seen[clip], split, seen[clip])
                continue
            seen[clip] = split
            frames = find_frames(root, split, clip, youtube_id(first_line(cam)))
            if frames is None:
                res.missing.append({"clip_id": clip, "split": split, "pose_path": str(cam)})
                continue
            depth = root / "depth" / split / f"{clip}.npz"
            res.rows.append({"clip_id": clip, "split": split, "pose_path": os.path.relpath(cam.resolve(), base),
                             "video_path": os.path.relpath(frames.resolve(), base),
                             "depth_path": os.path.relpath(depth.resolve(), base) if depth.is_file() else ""})
    write_manifest(res.rows, out_manifest)
    side = out_manifest.with_name(out_manifest.name + ".missing.txt")
    side.write_text("".join(f"{m['clip_id']}\t{m['split']}\t{m['pose_path']}\n" for m in res.missing))
    if not quiet:
        print_result(res)
    return res


def print_result(res: IndexResult) -> None:
    by_split: dict[str, int] = {}
    for r in res.rows:
        by_split[r["split"]] = by_split.get(r["split"], 0) + 1
    print(f"wrote {res.manifest}: {len(res.rows)} clips ({', '.join(f'{k} {v}' for k, v in sorted(by_split.items()))})")
    if res.missing:
        print(f"{len(res.missing)} clip(s) without a video, not in the manifest (listed in "
              f"{res.manifest}.missing.txt):")
        for m in res.missing[:20]:
            print(f"  {m['split']}/{m['clip_id']}")
        if len(res.missing) > 20:
            print(f"  ... and {len(res.missing) - 20} more")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", help="RealEstate10K download (camera files and videos or frame folders)")
    p.add_argument("out_manifest", help="manifest to write (.csv, or .parquet)")
    p.add_argument("-v", "--verbose", action="count", default=0)


def run_from_args(args: argparse.Namespace) -> int:
    from annotate.job import setup_logging

    setup_logging(args.verbose)
    try:
        index(args.root, args.out_manifest)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m annotate index", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run_from_args(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
