"""Benchmark of ``annotate extract``: frames cut per second from a long 720p video.

    python -m annotate.bench_extract --out bench/extract.json [--seconds 60] [--clips 8]

Renders a 720p H.264 video (a textured plane panning, ~YouTube bitrate) with ``--clips`` camera files spread
over it (RealEstate10K-like: ~100-frame clips at 30 fps), cuts them with :func:`annotate.extract.extract` at
the default output height (360) and reports decode+cut throughput, and what a full RealEstate10K cut costs at
that rate.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from annotate.command import Command
from annotate.extract import ExtractConfig, extract
from annotate.files import write_json
from annotate.re10k import CameraTrajectory, write_camera_file

# RealEstate10K as released (camera files): ~80k clips, ~10 M pose lines (frames) over ~10k videos.
RE10K_FRAMES = 10_000_000


@dataclass
class BenchExtractConfig:
    out: str = "bench/extract.json"  # the JSON result
    seconds: float = 60.0  # length of the 720p source video
    clips: int = 8  # camera files spread over the video
    clip_frames: int = 100  # camera lines (frames) per clip
    height: int = ExtractConfig.height  # output height of the cut clips


def make_video(path: Path, seconds: float, fps: int = 30, w: int = 1280, h: int = 720) -> int:
    import av

    rng = np.random.default_rng(0)
    tex = (rng.random((h // 8 + 40, w // 8 + 200, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    n = int(seconds * fps)
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "veryfast", "crf": "23"}
        s.codec_context.time_base = Fraction(1, fps)
        for k in range(n):
            x = int(k * 1.5) % (tex.shape[1] - w)
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(tex[: h, x: x + w]), format="rgb24")
            f.pts = k
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return n


def main(a: BenchExtractConfig) -> dict:
    """Render the source video and camera files, cut them, write ``a.out``; the result."""
    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
        root = Path(tmp)
        (root / "videos").mkdir()
        t0 = time.perf_counter()
        n = make_video(root / "videos" / "benchvideo0.mp4", a.seconds)
        t_make = time.perf_counter() - t0
        span = a.clip_frames / 30
        starts = np.linspace(0.5, a.seconds - span - 0.5, a.clips)
        for i, s in enumerate(starts):
            stamps = np.round((s + np.arange(a.clip_frames) / 30) * 1e6).astype(np.int64)
            write_camera_file(root / "RealEstate10K" / "train" / f"clip{i:03d}.txt",
                              CameraTrajectory("https://www.youtube.com/watch?v=benchvideo0", stamps,
                                               np.tile([0.5, 0.9, 0.5, 0.5], (len(stamps), 1)),
                                               np.tile(np.eye(3, 4), (len(stamps), 1, 1))))
        cfg = ExtractConfig(height=a.height, workers=1)  # one video: one process (videos run in parallel)
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        res = extract(root, cfg, progress=False)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
        size = (root / "videos" / "benchvideo0.mp4").stat().st_size
    fps_cut = res.frames / res.seconds if res.seconds else 0.0
    result = {
        "source": {"width": 1280, "height": 720, "frames": n, "seconds": a.seconds, "mbit_per_s":
                   round(size * 8 / a.seconds / 1e6, 2), "render_seconds": round(t_make, 1)},
        "clips": a.clips, "clip_frames": a.clip_frames, "out_height": a.height,
        "ok": res.ok, "failed": res.failed, "frames_cut": res.frames, "seconds": round(res.seconds, 2),
        "frames_cut_per_s": round(fps_cut, 1), "cpu_seconds": round(cpu, 2),
        "cpu_ms_per_frame": round(1000 * cpu / max(res.frames, 1), 2), "max_timestamp_error_us": res.max_error_us,
        "full_re10k_estimate": {"frames": RE10K_FRAMES,
                                "cpu_hours": round(RE10K_FRAMES * cpu / max(res.frames, 1) / 3600, 1),
                                "hours_one_process": round(RE10K_FRAMES / fps_cut / 3600, 1) if fps_cut else None},
        "cpu_count": os.cpu_count(),
    }
    write_json(a.out, result)
    est = result["full_re10k_estimate"]
    print(f"{res.frames} frames cut in {res.seconds:.1f} s: {fps_cut:.1f} frames/s in one process, "
          f"{result['cpu_ms_per_frame']} CPU-ms per frame; full RealEstate10K (~{RE10K_FRAMES / 1e6:.0f} M frames): "
          f"~{est['cpu_hours']} CPU-hours; wrote {a.out}")
    return result


def command() -> Command:
    return Command(BenchExtractConfig, lambda cfg, args: main(cfg), "python -m annotate.bench_extract",
                   __doc__.split("\n\n")[0], print_result=False)


def cli(argv: list[str] | None = None) -> int:
    return command().main(argv)


if __name__ == "__main__":
    sys.exit(cli())
