"""`annotate import-colmap` / `import-nerfstudio` (issue 13): a COLMAP model and a nerfstudio transforms.json
of a synthetic clip become RealEstate10K clips that `index` finds and that give the clip's own scale."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pycolmap
import pytest
from PIL import Image

from annotate.__main__ import main
from annotate.camera import w2c_to_c2w
from annotate.clip import annotate_clip
from annotate.imports import OPENGL_TO_OPENCV
from annotate.index import index
from annotate.manifest import load, resolve_paths
from annotate.re10k import read_camera_file
from annotate.video import read_frames


@pytest.fixture(scope="module")
def source(annot_sample, tmp_path_factory):
    """The sample's first clip as image files named without zero padding (f2.png before f10.png)."""
    row = list(csv.DictReader(open(annot_sample / "manifest.csv")))[0]
    traj = read_camera_file(annot_sample / row["pose_path"])
    frames = read_frames(annot_sample / row["video_path"])
    d = tmp_path_factory.mktemp("posed")
    (d / "images").mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(d / "images" / f"f{i}.png")
    return {"row": row, "traj": traj, "frames": frames, "dir": d, "sample": annot_sample}


def colmap_model(src: dict, out: Path) -> None:
    traj, (h, w) = src["traj"], src["frames"].shape[1:3]
    rec = pycolmap.Reconstruction()
    fx, fy, cx, cy = traj.intrinsics[0] * [w, h, w, h]
    rec.add_camera_with_trivial_rig(pycolmap.Camera(model="PINHOLE", width=w, height=h, params=[fx, fy, cx, cy],
                                                    camera_id=1))
    for i in range(len(traj)):
        image = pycolmap.Image(name=f"f{i}.png", camera_id=1, image_id=i + 1)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(pycolmap.Rotation3d(traj.w2c[i, :, :3]),
                                                                 traj.w2c[i, :, 3]))
    out.mkdir(parents=True)
    rec.write_text(str(out))


def transforms_json(src: dict, path: Path) -> None:
    traj, (h, w) = src["traj"], src["frames"].shape[1:3]
    fx, fy, cx, cy = traj.intrinsics[0] * [w, h, w, h]
    c2w_gl = w2c_to_c2w(traj.w2c) @ OPENGL_TO_OPENCV
    frames = [{"file_path": f"images/f{i}.png", "transform_matrix": c2w_gl[i].tolist()}
              for i in reversed(range(len(traj)))]  # any order in the file: sorted by name on import
    path.write_text(json.dumps({"camera_model": "OPENCV", "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy,
                                "w": w, "h": h, "frames": frames}))


def test_imports_give_the_clips_scale(source, tmp_path):
    colmap_model(source, source["dir"] / "sparse" / "0")
    transforms_json(source, source["dir"] / "transforms.json")
    root = tmp_path / "root"
    assert main(["import-colmap", str(source["dir"] / "sparse" / "0"), str(root), "--images",
                 str(source["dir"] / "images"), "--clip", "from_colmap"]) == 0
    assert main(["import-nerfstudio", str(source["dir"] / "transforms.json"), str(root),
                 "--clip", "from_ns", "--split", "test"]) == 0
    for clip, split in (("from_colmap", "train"), ("from_ns", "test")):
        (root / "depth" / split).mkdir(parents=True, exist_ok=True)
        shutil.copy(source["sample"] / source["row"]["depth_path"], root / "depth" / split / f"{clip}.npz")
        got = read_camera_file(root / "RealEstate10K" / split / f"{clip}.txt")
        np.testing.assert_allclose(got.w2c, source["traj"].w2c, atol=1e-6)  # COLMAP text: quaternions
        np.testing.assert_allclose(got.intrinsics, source["traj"].intrinsics, atol=1e-8)
    manifest = tmp_path / "m.csv"
    index(root, manifest, quiet=True)
    rows = {r["clip_id"]: resolve_paths(r, manifest.parent) for r in load(manifest)}
    assert set(rows) == {"from_colmap", "from_ns"} and all(r["depth_path"] for r in rows.values())
    np.testing.assert_array_equal(read_frames(rows["from_ns"]["video_path"]), source["frames"])
    ref = annotate_clip(resolve_paths(source["row"], source["sample"]))
    assert ref["status"] == "ok"
    for clip in rows:
        res = annotate_clip(rows[clip])
        assert res["status"] == "ok", res["error"]
        assert res["scale"] == pytest.approx(ref["scale"], rel=1e-5), clip


def test_import_errors(source, tmp_path):
    colmap_model(source, tmp_path / "model")
    assert main(["import-colmap", str(tmp_path / "model"), str(tmp_path / "r"), "--images",
                 str(tmp_path / "nowhere")]) == 2  # images not found
    assert main(["import-colmap", str(tmp_path / "nope"), str(tmp_path / "r"), "--images", "."]) == 2
    (tmp_path / "t.json").write_text('{"frames": [{"file_path": "x.png"}]}')
    assert main(["import-nerfstudio", str(tmp_path / "t.json"), str(tmp_path / "r")]) == 2
