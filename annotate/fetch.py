"""Download the YouTube videos of RealEstate10K's camera files, once each, with yt-dlp (as a library).

    python -m annotate fetch RE10K_ROOT [--max-height 720] [--min-height 360] [--workers 4] [--retries 3]
        [--config YAML] [key=value ...]

For every camera file ``RE10K_ROOT/RealEstate10K/{split}/*.txt`` (or ``RE10K_ROOT/{split}/*.txt``) the video of
its URL line goes to ``RE10K_ROOT/videos/{youtube_id}.{ext}`` (video only, mp4 preferred, the best height in
[min, max]; lower if nothing in range exists). yt-dlp writes ``*.part`` files and renames them when complete,
so only complete files count as done and a rerun skips them (and resumes partial ones). Each video gets a
row in ``videos/fetch_log.csv``: ``ok``, ``unavailable`` (removed, 404: about 15-20 % of RealEstate10K),
``private``, or ``error`` with the reason. Unavailable and private videos are not asked for again unless
``--retry-unavailable``; errors are retried with exponential back-off, and again on the next run.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from annotate.command import Command
from annotate.extract import VIDEO_SUFFIXES, find_video
from annotate.files import atomic_write_text
from annotate.index import camera_dirs, first_line
from annotate.log import get_logger, progress_bar
from annotate.re10k import youtube_id

log = get_logger()

LOG_COLUMNS = ("youtube_id", "status", "attempts", "bytes", "file", "reason", "seconds", "clips")
GONE = ("video unavailable", "this video is unavailable", "has been removed", "http error 404", "http error 410",
        "account associated with this video has been terminated", "no longer available", "is not available",
        "copyright claim", "violating youtube")
PRIVATE = ("private video", "this video is private", "sign in if you've been granted access")


@dataclass
class FetchConfig:
    root: str = ""  # RealEstate10K root holding RealEstate10K/{train,test}/*.txt; the command's word
    max_height: int = 720  # highest video height to download
    min_height: int = 360  # preferred lowest height (a lower one is taken if nothing in range exists)
    workers: int = 4  # videos downloaded at the same time (be kind to the site: keep it small)
    retries: int = 3  # further attempts after an error (not after unavailable / private)
    backoff_s: float = 5.0  # wait before retry n: backoff_s * 2**(n-1)
    url_template: str = "https://www.youtube.com/watch?v={youtube_id}"  # where a video id is fetched from
    retry_unavailable: bool = False  # ask again for videos logged unavailable / private
    socket_timeout_s: float = 30.0  # yt-dlp's network timeout per request


def video_format(cfg: FetchConfig) -> str:
    """yt-dlp format selector: video only, mp4 first, height in [min, max] (``?``: also when unknown)."""
    lo, hi = cfg.min_height, cfg.max_height
    return (f"bv*[ext=mp4][height<=?{hi}][height>=?{lo}]/bv*[height<=?{hi}][height>=?{lo}]/"
            f"b[ext=mp4][height<=?{hi}]/bv*[height<=?{hi}]/b[height<=?{hi}]")


def classify(message: str) -> str:
    m = message.lower()
    if any(p in m for p in PRIVATE):
        return "private"
    if any(p in m for p in GONE):
        return "unavailable"
    return "error"


class _Quiet:
    """yt-dlp logger: keeps its chatter out of the progress display, errors go to our debug log."""

    def debug(self, msg):
        log.debug("yt-dlp: %s", msg)

    info = warning = debug

    def error(self, msg):
        log.debug("yt-dlp error: %s", msg)


def download_one(yt: str, videos: Path, cfg: FetchConfig) -> dict:
    """Download one video with retries; returns its log row."""
    import yt_dlp

    url = cfg.url_template.format(youtube_id=yt)
    opts = {"format": video_format(cfg), "outtmpl": str(videos / f"{yt}.%(ext)s"), "quiet": True,
            "no_warnings": True, "noprogress": True, "logger": _Quiet(), "continuedl": True, "nopart": False,
            "retries": 0, "fragment_retries": 2, "extractor_retries": 0, "socket_timeout": cfg.socket_timeout_s,
            "noplaylist": True, "overwrites": False, "cachedir": False}
    t0 = time.perf_counter()
    reason, status = "", "error"
    attempt = 0
    for attempt in range(1, cfg.retries + 2):
        try:
            with yt_dlp.YoutubeDL(opts) as ydl:
                ydl.download([url])
            path = find_video(videos, yt)
            if path is None:
                raise yt_dlp.utils.DownloadError(f"yt-dlp finished but wrote no {yt}.{{{','.join(VIDEO_SUFFIXES)}}}")
            return row(yt, "ok", attempt, path.stat().st_size, path.name, "", time.perf_counter() - t0)
        except (yt_dlp.utils.YoutubeDLError, OSError) as e:
            reason = " ".join(str(e).replace("ERROR: ", "").split())
            status = classify(reason)
            if status != "error":
                break
            if attempt <= cfg.retries:
                time.sleep(cfg.backoff_s * 2 ** (attempt - 1))
    return row(yt, status, attempt, 0, "", f"{url}: {reason}", time.perf_counter() - t0)


def row(yt: str, status: str, attempts: int, size: int, file: str, reason: str, seconds: float) -> dict:
    return {"youtube_id": yt, "status": status, "attempts": attempts, "bytes": size, "file": file,
            "reason": reason[:500], "seconds": round(seconds, 3), "clips": 0}


def wanted_videos(root: Path) -> dict[str, int]:
    """youtube_id -> number of camera files that use it."""
    ids: dict[str, int] = {}
    for _, folder in camera_dirs(root):
        for cam in sorted(folder.glob("*.txt")):
            yt = youtube_id(first_line(cam))
            if yt:
                ids[yt] = ids.get(yt, 0) + 1
            else:
                log.warning("%s: no YouTube id in the URL line; skipped", cam)
    return ids


def read_log(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {r["youtube_id"]: r for r in csv.DictReader(f)}


def write_log(path: Path, rows: dict[str, dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(LOG_COLUMNS), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows[k] for k in sorted(rows))
    atomic_write_text(path, buf.getvalue())


@dataclass
class FetchResult:
    counts: dict
    skipped: int
    seconds: float
    log: str


def fetch(root: str | os.PathLike, cfg: FetchConfig | None = None, progress: bool = True) -> FetchResult:
    cfg = cfg or FetchConfig()
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    if cfg.workers < 1 or cfg.retries < 0:
        raise ValueError(f"workers must be >= 1 and retries >= 0 (got {cfg.workers}, {cfg.retries})")
    t0 = time.perf_counter()
    videos = root / "videos"
    videos.mkdir(exist_ok=True)
    log_path = videos / "fetch_log.csv"
    rows = read_log(log_path)
    ids = wanted_videos(root)
    todo, skipped = [], 0
    for yt in ids:
        path = find_video(videos, yt)
        prev = rows.get(yt, {}).get("status")
        if path is not None:
            if prev != "ok":
                rows[yt] = row(yt, "ok", 0, path.stat().st_size, path.name, "found on disk", 0.0)
            skipped += 1
        elif prev in ("unavailable", "private") and not cfg.retry_unavailable:
            skipped += 1
        else:
            todo.append(yt)
    for yt, n in ids.items():
        if yt in rows:
            rows[yt]["clips"] = n
    counts = {"ok": 0, "unavailable": 0, "private": 0, "error": 0}
    lock = threading.Lock()
    last = time.perf_counter()
    with progress_bar("downloading videos", len(todo), enabled=progress) as bar:
        with ThreadPoolExecutor(cfg.workers) as pool:  # bounded concurrency: at most `workers` downloads
            futs = {pool.submit(download_one, yt, videos, cfg): yt for yt in todo}
            for fut in as_completed(futs):
                r = fut.result()
                r["clips"] = ids[r["youtube_id"]]
                with lock:
                    rows[r["youtube_id"]] = r
                    counts[r["status"]] += 1
                bar.advance()
                if time.perf_counter() - last > 30:
                    write_log(log_path, rows)
                    last = time.perf_counter()
    write_log(log_path, rows)
    return FetchResult(counts, skipped, time.perf_counter() - t0, str(log_path))


FLAGS = {"--max-height": "max_height", "--min-height": "min_height", "--workers": "workers", "--retries": "retries",
         "--backoff": "backoff_s", "--url-template": "url_template", "--retry-unavailable": "retry_unavailable"}


def main(cfg: FetchConfig) -> FetchResult:
    """Download the videos of ``cfg.root``'s camera files (:func:`fetch`)."""
    return fetch(cfg.root, cfg)


def _run(cfg: FetchConfig, args: argparse.Namespace) -> int:
    res = main(cfg)
    c = res.counts
    print(f"downloaded {c['ok']} video(s); {c['unavailable']} unavailable, {c['private']} private, "
          f"{c['error']} error(s); {res.skipped} already done or known gone; {res.seconds:.1f} s; log: {res.log}")
    return 0


def command() -> Command:
    return Command(FetchConfig, _run, "python -m annotate fetch", __doc__.split("\n\n")[0], positionals=("root",),
                   flags=FLAGS, errors=(OSError, ValueError))


def cli(argv: list[str] | None = None) -> int:
    return command().main(argv)


if __name__ == "__main__":
    sys.exit(cli())
