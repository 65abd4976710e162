"""`annotate index`: RealEstate10K layouts -> manifest (+ the clips without frames in a sidecar)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from annotate.__main__ import main
from annotate.index import index
from annotate.manifest import load, read_manifest
from annotate.re10k import youtube_id

POSES = sorted((Path(__file__).parent / "fixtures" / "re10k_poses").glob("*.txt"))


def make_root(root: Path) -> dict:
    """Four clips in the layouts people use; one of them has no frames."""
    a, b, c, d = POSES[:4]
    (root / "RealEstate10K" / "train").mkdir(parents=True)
    shutil.copy(a, root / "RealEstate10K" / "train" / a.name)  # camera files under RealEstate10K/
    yt = youtube_id(a.read_text().splitlines()[0])
    (root / "video_clips" / "train" / yt).mkdir(parents=True)
    (root / "video_clips" / "train" / yt / f"{a.stem}.mp4").write_bytes(b"video")
    (root / "test").mkdir()
    shutil.copy(b, root / "test" / b.name)  # {split}/{clip}.txt beside {split}/{clip}.mp4
    (root / "test" / f"{b.stem}.mp4").write_bytes(b"video")
    (root / "train").mkdir()
    shutil.copy(c, root / "train" / c.name)  # {split}/{clip}/ frame folder
    (root / "train" / c.stem).mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "train" / c.stem / f"{i:04d}.png")
    shutil.copy(d, root / "train" / d.name)  # no frames anywhere
    (root / "depth" / "test").mkdir(parents=True)
    np.savez(root / "depth" / "test" / f"{b.stem}.npz", depth=np.ones((1, 2, 2), np.float32))
    return {"video_clips": a.stem, "split_mp4": b.stem, "frames": c.stem, "missing": d.stem, "yt": yt}


def test_index_layouts(tmp_path, capsys):
    names = make_root(tmp_path / "re10k")
    out = tmp_path / "manifests" / "all.csv"
    res = index(tmp_path / "re10k", out)
    printed = capsys.readouterr().out
    rows = {r["clip_id"]: r for r in load(out)}  # also validates
    assert set(rows) == {names["video_clips"], names["split_mp4"], names["frames"]}
    assert [m["clip_id"] for m in res.missing] == [names["missing"]]
    assert names["missing"] in printed and "without a video" in printed
    side = (out.parent / "all.csv.missing.txt").read_text().split("\t")
    assert side[0] == names["missing"] and side[1] == "train"
    base = out.parent
    r = rows[names["video_clips"]]
    assert r["split"] == "train"
    assert (base / r["video_path"]).resolve() == \
        (tmp_path / "re10k" / "video_clips" / "train" / names["yt"] / f"{names['video_clips']}.mp4").resolve()
    assert (base / r["pose_path"]).resolve().parent.parent.name == "RealEstate10K"
    r = rows[names["split_mp4"]]
    assert r["split"] == "test" and r["video_path"].endswith(f"test/{names['split_mp4']}.mp4")
    assert (base / r["depth_path"]).is_file()
    r = rows[names["frames"]]
    assert (base / r["video_path"]).is_dir() and r["depth_path"] == ""
    assert all(not Path(v).is_absolute() for r in rows.values() for v in (r["pose_path"], r["video_path"]))


def test_index_cli_parquet(tmp_path, capsys):
    make_root(tmp_path / "re10k")
    out = tmp_path / "m.parquet"
    assert main(["index", str(tmp_path / "re10k"), str(out)]) == 0
    rows, cols = read_manifest(out)
    assert len(rows) == 3 and "depth_path" in cols
    assert "wrote" in capsys.readouterr().out
    assert main(["index", str(tmp_path / "nope"), str(tmp_path / "x.csv")]) == 2
    with open(tmp_path / "m.parquet.missing.txt") as f:
        assert len(list(csv.reader(f, delimiter="\t"))) == 1
