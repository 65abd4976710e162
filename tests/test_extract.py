"""`annotate extract` (issue 13): videos cut at the camera timestamps give exactly the frames at those times."""

from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from annotate.__main__ import main
from annotate.extract import ExtractConfig, extract, nearest_frames
from annotate.index import index
from annotate.manifest import load
from annotate.re10k import CameraTrajectory, write_camera_file
from annotate.video import read_frames, write_video

FPS = 30
FRAME_US = 1e6 / FPS


def pattern(k: int, h: int = 48, w: int = 64) -> np.ndarray:
    """Frame k shows k in binary as 8 black/white stripes: survives x264 and resizing, and neighbouring
    frames differ strongly (so the encoder cannot skip a change)."""
    bits = (k >> np.arange(8)) & 1
    return np.repeat(np.repeat(bits * 255, w // 8)[None, :, None], h, 0).repeat(3, 2).astype(np.uint8)


def frame_ids(frames: np.ndarray) -> list[int]:
    w = frames.shape[2]
    xs = ((np.arange(8) + 0.5) * w / 8).astype(int)
    return [int(((f[f.shape[0] // 2, xs, 0] > 127) * (1 << np.arange(8))).sum()) for f in frames]


def camera(path: Path, yt: str, stamps) -> None:
    n = len(stamps)
    w2c = np.tile(np.eye(3, 4), (n, 1, 1))
    write_camera_file(path, CameraTrajectory(f"https://www.youtube.com/watch?v={yt}", np.asarray(stamps, np.int64),
                                             np.tile([0.5, 0.9, 0.5, 0.5], (n, 1)), w2c))


def vfr_video(path: Path, pts: list[int]) -> None:
    """Frames at the given pts (time base 1/30 s): a gap where pts jump."""
    with av.open(str(path), mode="w") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.time_base = Fraction(1, FPS)
        for p in pts:
            f = av.VideoFrame.from_ndarray(pattern(p), format="rgb24")
            f.pts, f.time_base = p, Fraction(1, FPS)
            for pkt in s.encode(f):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def test_nearest_frames():
    times = np.array([0, 33333, 66667, 100000, 200000], np.int64)
    pick, err, why = nearest_frames(times, np.array([16000, 17000, 50001, 99000]), 33333.3)
    assert pick.tolist() == [0, 1, 2, 3] and why == ""
    assert nearest_frames(times, np.array([150000]), 33333.3)[2].startswith("timestamp 150000 us (line 2)")
    assert "after the video's last frame" in nearest_frames(times, np.array([250000]), 33333.3)[2]
    assert "before the video's first frame" in nearest_frames(times, np.array([-20000]), 33333.3)[2]


def test_extract_cuts_exact_frames_resumably(tmp_path):
    root = tmp_path / "re10k"
    (root / "videos").mkdir(parents=True)
    cams = root / "RealEstate10K" / "train"
    cams.mkdir(parents=True)
    write_video(root / "videos" / "vidAAAAAAAA.mp4",
                np.stack([pattern(k) for k in range(40)]), fps=FPS)
    vfr_video(root / "videos" / "vidBBBBBBBB.mp4", list(range(10)) + list(range(20, 30)))
    # Timestamps jittered by up to 0.45 frame from frames 3..14: the nearest frame is always the intended one.
    jitter = np.array([0.45, -0.45, 0.3, -0.2, 0.0, 0.44, -0.44, 0.1, 0.25, -0.3, 0.4, -0.1])
    want = list(range(3, 15))
    camera(cams / "clip_ok.txt", "vidAAAAAAAA", np.round((np.array(want) + jitter) * FRAME_US))
    want2 = [30, 31, 33, 35, 36, 39]  # a second clip of the same video, frames skipped
    camera(cams / "clip_ok2.txt", "vidAAAAAAAA", np.round(np.array(want2) * FRAME_US + 7))
    camera(cams / "clip_past_end.txt", "vidAAAAAAAA", np.round(np.array([37, 38, 39, 40, 41]) * FRAME_US))
    camera(cams / "clip_gap.txt", "vidBBBBBBBB", np.round(np.array([8, 9, 15, 21]) * FRAME_US))
    camera(cams / "clip_vfr_ok.txt", "vidBBBBBBBB", np.round(np.array([8, 9, 20, 21]) * FRAME_US))
    camera(cams / "clip_no_video.txt", "vidCCCCCCCC", [0, 33333])

    res = extract(root, ExtractConfig(height=32, workers=2), progress=False)
    assert (res.ok, res.failed, res.without_video, res.already_done) == (3, 2, 1, 0)
    out = root / "video_clips" / "train"
    got = read_frames(out / "vidAAAAAAAA" / "clip_ok.mp4")
    assert got.shape == (12, 32, 42, 3)  # one frame per camera line, at the requested height
    assert frame_ids(got) == want  # never a neighbouring frame
    assert frame_ids(read_frames(out / "vidAAAAAAAA" / "clip_ok2.mp4")) == want2
    assert frame_ids(read_frames(out / "vidBBBBBBBB" / "clip_vfr_ok.mp4")) == [8, 9, 20, 21]
    assert not (out / "vidAAAAAAAA" / "clip_past_end.mp4").exists()
    assert not (out / "vidBBBBBBBB" / "clip_gap.mp4").exists()
    rows = {r["clip_id"]: r for r in csv.DictReader(open(root / "video_clips" / "extract_log.csv"))}
    assert set(rows) == {"clip_ok", "clip_ok2", "clip_past_end", "clip_gap", "clip_vfr_ok"}
    assert rows["clip_ok"]["status"] == "ok" and rows["clip_ok"]["frames"] == "12"
    assert 0.43 * FRAME_US <= int(rows["clip_ok"]["max_error_us"]) <= 0.46 * FRAME_US
    past = rows["clip_past_end"]
    assert past["status"] == "failed" and "after the video's last frame" in past["reason"]
    assert "timestamp 500000 us (line 4)" in rows["clip_gap"]["reason"] and "in a gap" in rows["clip_gap"]["reason"]

    # Resume: finished clips are skipped, failed ones are tried again (and fail again), the log keeps all rows.
    mtime = (out / "vidAAAAAAAA" / "clip_ok.mp4").stat().st_mtime_ns
    res2 = extract(root, ExtractConfig(height=32, workers=1), progress=False)
    assert (res2.ok, res2.failed, res2.already_done) == (0, 2, 3)
    assert (out / "vidAAAAAAAA" / "clip_ok.mp4").stat().st_mtime_ns == mtime
    assert len(list(csv.DictReader(open(root / "video_clips" / "extract_log.csv")))) == 5
    # The cut clips are the layout `index` reads.
    index(root, tmp_path / "m.csv", quiet=True)
    assert {r["clip_id"] for r in load(tmp_path / "m.csv")} == {"clip_ok", "clip_ok2", "clip_vfr_ok"}


def test_extract_cli(tmp_path, capsys):
    assert main(["extract", str(tmp_path / "missing")]) == 2
    (tmp_path / "RealEstate10K" / "test").mkdir(parents=True)
    camera(tmp_path / "RealEstate10K" / "test" / "x.txt", "vidDDDDDDDD", [0, 33333])
    assert main(["extract", str(tmp_path), "--workers", "1"]) == 0
    assert "1 without a downloaded video" in capsys.readouterr().out
