"""RealEstate10K layouts on people's disks (issue 13): timestamp-named and index-named frame folders,
pixelSplat/MVSplat ``.torch`` chunks, partial coverage, optional depth; through ``index`` and ``run`` they give
the same scales as the same clips in our own layout."""

from __future__ import annotations

import csv
import io
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from annotate.index import IndexConfig, index
from annotate.manifest import load, write_manifest
from annotate.re10k import CameraTrajectory, read_camera_file, write_camera_file
from annotate.video import VideoError, list_images, read_frames

BOUNDARY_US = 100_000_000  # 100 s: "100000000" sorts before "99966667" as a string


def png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def jpeg(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def across_100s(traj: CameraTrajectory) -> CameraTrajectory:
    """The same poses at 30 fps timestamps that cross 100 s in the middle of the clip."""
    n = len(traj)
    stamps = BOUNDARY_US - (n // 2) * 33_333 + np.arange(n, dtype=np.int64) * 33_333
    return CameraTrajectory(traj.url, stamps, traj.intrinsics, traj.w2c)


def test_frame_folders_sort_by_value(tmp_path):
    """Names crossing 100 s (timestamps) and 10 (indices) come back in value order, never string order."""
    stamps = across_100s(CameraTrajectory("u", np.arange(12), np.zeros((12, 4)), np.zeros((12, 3, 4)))).timestamps_us
    for name, names in (("ts", [str(t) for t in stamps]), ("idx", [str(i) for i in range(12)])):
        d = tmp_path / name
        d.mkdir()
        for i, stem in enumerate(names):
            Image.fromarray(np.full((4, 4, 3), i * 20, np.uint8)).save(d / f"{stem}.png")
        assert [p.stem for p in list_images(d)] == names
        assert sorted(names) != names  # string order would be wrong here
        assert read_frames(d)[:, 0, 0, 0].tolist() == [i * 20 for i in range(12)]


def test_chunk_is_loaded_without_unpickling(tmp_path):
    """A chunk that holds anything but tensors and plain containers is refused, not executed."""

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    bad = tmp_path / "000000.torch"
    with open(bad, "wb") as f:
        pickle.dump([{"key": "abc", "images": Payload()}], f)
    torch.save([{"key": "ok", "images": [torch.tensor(list(png(np.zeros((4, 4, 3), np.uint8))), dtype=torch.uint8)]}],
               tmp_path / "000001.torch")
    with pytest.raises(VideoError, match="unreadable chunk"):
        read_frames(f"{bad}#abc")
    assert read_frames(f"{tmp_path / '000001.torch'}#ok").shape == (1, 4, 4, 3)
    with pytest.raises(VideoError, match="no clip with key 'nope'"):
        read_frames(f"{tmp_path / '000001.torch'}#nope")


def build_layouts(sample: Path, root: Path) -> dict:
    """Two synthetic clips A, B (our own layout in ``sample``) copied into the other layouts under ``root``."""
    rows = list(csv.DictReader(open(sample / "manifest.csv")))[:2]
    a, b = rows
    trajs = {r["clip_id"]: read_camera_file(sample / r["pose_path"]) for r in rows}
    frames = {r["clip_id"]: read_frames(sample / r["video_path"]) for r in rows}
    A, B = a["clip_id"], b["clip_id"]
    cams = root / "RealEstate10K" / "train"
    cams.mkdir(parents=True)
    (root / "depth" / "train").mkdir(parents=True)

    def depth(src: dict, clip: str):
        shutil.copy(sample / src["depth_path"], root / "depth" / "train" / f"{clip}.npz")

    # Timestamp-named frames crossing 100 s; every line has its frame.
    t = across_100s(trajs[A])
    write_camera_file(cams / "A_ts.txt", t)
    (root / "frames" / "train" / "A_ts").mkdir(parents=True)
    for ts, img in zip(t.timestamps_us, frames[A]):
        Image.fromarray(img).save(root / "frames" / "train" / "A_ts" / f"{ts}.png")
    depth(a, "A_ts")
    # Index-named frames without zero padding (10.png after 9.png), beside the camera file.
    write_camera_file(cams / "A_idx.txt", trajs[A])
    (cams / "A_idx").mkdir()
    for i, img in enumerate(frames[A]):
        Image.fromarray(img).save(cams / "A_idx" / f"{i}.png")
    depth(a, "A_idx")
    # Timestamp-named, one frame missing (15/16 >= 0.9: partial), and four missing (12/16 < 0.9: failed row).
    t = across_100s(trajs[B])
    for clip, drop in (("B_part", {5}), ("B_short", {1, 2, 3, 9})):
        write_camera_file(cams / f"{clip}.txt", t)
        d = root / "frames" / "train" / clip
        d.mkdir(parents=True)
        for i, (ts, img) in enumerate(zip(t.timestamps_us, frames[B])):
            if i not in drop:
                Image.fromarray(img).save(d / f"{ts}.png")
        depth(b, clip)
    # pixelSplat/MVSplat chunk: A as PNG bytes (lossless: identical frames), B as JPEG bytes (the usual case).
    chunk = []
    for clip, src, enc in (("A_chunk", A, png), ("B_chunk", B, jpeg)):
        tr = trajs[src]
        cams18 = np.concatenate([tr.intrinsics, np.zeros((len(tr), 2)), tr.w2c.reshape(-1, 12)], axis=1)
        chunk.append({"url": tr.url, "timestamps": torch.tensor(tr.timestamps_us, dtype=torch.int64),
                      "cameras": torch.tensor(cams18, dtype=torch.float32),
                      "images": [torch.tensor(list(enc(f)), dtype=torch.uint8) for f in frames[src]],
                      "key": clip})
        depth(a if src == A else b, clip)
    (root / "train").mkdir()
    torch.save(chunk, root / "train" / "000000.torch")
    (root / "train" / "index.json").write_text('{"A_chunk": "000000.torch", "B_chunk": "000000.torch"}')
    return {"A": A, "B": B, "rows": rows, "stamps_B": t.timestamps_us}


@pytest.mark.slow
def test_layouts_through_index_and_run_give_our_scales(annot_sample, tmp_path, capsys):
    from annotate import output
    from annotate.job import JobConfig, run

    root = tmp_path / "re10k"
    info = build_layouts(annot_sample, root)
    A, B = info["A"], info["B"]
    manifest = tmp_path / "m" / "re10k.csv"
    res = index(root, manifest, cfg=IndexConfig(min_frame_fraction=0.9))
    printed = capsys.readouterr().out
    assert "2 from .torch chunks" in printed and "B_short: only 12 of 16" in printed
    rows = {r["clip_id"]: r for r in load(manifest)}
    assert set(rows) == {"A_ts", "A_idx", "B_part", "B_short", "A_chunk", "B_chunk"}
    assert rows["A_ts"]["video_path"].endswith("frames/train/A_ts")  # exact cover: the folder itself
    assert rows["B_part"]["video_path"].endswith(".frames") and rows["B_part"]["depth_path"].startswith("re10k.csv.")
    assert rows["A_chunk"]["video_path"].endswith("000000.torch#A_chunk")
    assert all(r["depth_path"] for r in rows.values()) and not res.missing
    # Our own layout in the same run: the synthetic sample's rows, paths made absolute.
    own = [dict(r, pose_path=str(annot_sample / r["pose_path"]), video_path=str(annot_sample / r["video_path"]),
                depth_path=str(annot_sample / r["depth_path"])) for r in info["rows"]]
    both = tmp_path / "m" / "both.csv"
    write_manifest([dict(r, pose_path=str(manifest.parent / r["pose_path"]),
                         video_path=str(manifest.parent / r["video_path"]),
                         depth_path=str(manifest.parent / r["depth_path"])) for r in rows.values()] + own, both)
    cfg = JobConfig(progress=False)
    cfg.ray.num_cpus, cfg.ray.object_store_mb = 2, 256
    run(both, tmp_path / "out", cfg)
    got = {r["clip_id"]: r for r in output.read_table(tmp_path / "out").to_pylist()}
    assert got[A]["status"] == got[B]["status"] == "ok"
    for clip in ("A_ts", "A_idx", "A_chunk"):  # identical frames and poses: the same scale
        assert got[clip]["status"] == "ok", got[clip]["error"]
        assert got[clip]["scale"] == pytest.approx(got[A]["scale"], rel=1e-6), clip
        np.testing.assert_allclose(got[clip]["frame_scale"], got[A]["frame_scale"], rtol=1e-5)
    assert got["B_chunk"]["scale"] == pytest.approx(got[B]["scale"], rel=0.01)  # JPEG q95 frames
    # Partial cover: annotated on the 15 lines that have frames, and says which.
    part = got["B_part"]
    assert part["status"] == "ok" and part["num_frames"] == 15
    assert list(part["timestamps_us"]) == [t for i, t in enumerate(info["stamps_B"]) if i != 5]
    assert part["scale"] == pytest.approx(got[B]["scale"], rel=0.01)
    short = got["B_short"]
    assert short["status"] == "failed" and "4 of 16 camera lines have no frame" in short["error"]
