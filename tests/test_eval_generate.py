"""`python -m eval generate` -> `eval run` -> `eval report` end to end on tiny clips (the `make eval --tiny` path):
the evaluation set's layout, its cameras, resuming, and the Table 1 columns with success rates."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from annotate.camera import relative_to, scale_translation, w2c_to_c2w
from annotate.video import read_frames
from eval.cli import main
from eval.trajectory import load_camera


class TinyDetector(nn.Module):
    """Stand-in with the StyleGAN-V TorchScript I3D's call signature (FVD 'where weights are given')."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 8, 3, stride=2)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3, 4))


@pytest.fixture(scope="module")
def generated(train_annotations, tmp_path_factory, one_torch_thread):
    exp = tmp_path_factory.mktemp("eval") / "exp"
    args = ["generate", "--tiny", "--annotations", str(train_annotations["annotation_dir"]),
            "--manifest", str(train_annotations["manifest"]), "--out", str(exp), "--frames", "8", "--stride", "2",
            "--height", "32", "--width", "32", "--steps", "2", "--batch-size", "2", "--no-progress"]
    assert main(args) == 0
    return exp, args


def test_generate_writes_what_run_reads(generated, train_annotations):
    exp, _ = generated
    test_ids = sorted(r["clip_id"] for r in train_annotations["rows"] if r["split"] == "test" and r["status"] == "ok")
    assert test_ids
    for sub, ext in (("samples", ".mp4"), ("gt_video", ".mp4"), ("camera_data", ".txt")):
        assert sorted(p.stem for p in (exp / sub).glob(f"*{ext}")) == test_ids, sub
    settings = json.loads((exp / "generate.json").read_text())
    assert settings["resolved"]["noise_shaping"] is True and settings["resolved"]["depth"] == "manifest"
    assert settings["resolved"]["camera_units"] == "condition_frame"  # RealCam: metric cameras
    rows = {r["clip_id"]: r for r in train_annotations["rows"]}
    for name in test_ids:
        assert read_frames(exp / "samples" / f"{name}.mp4").shape == (8, 32, 32, 3)
        assert read_frames(exp / "gt_video" / f"{name}.mp4").shape == (8, 32, 32, 3)
        cam = load_camera(exp / "camera_data" / f"{name}.txt")
        assert len(cam) == 8 and not cam.intrinsics_normalized
        # frames 0, 2, ..., 14 relative to frame 0, in metres (the condition frame's scale)
        r = rows[name]
        w2c = np.asarray(r["w2c"], np.float64).reshape(-1, 3, 4)[0:16:2]
        scale = float(np.asarray(r["frame_scale"])[0])
        scale = scale if np.isfinite(scale) and scale > 0 else float(r["scale"])  # train/data.py's fallback
        expect = scale_translation(relative_to(w2c_to_c2w(w2c), 0), scale)
        np.testing.assert_allclose(cam.c2w, expect, atol=1e-5)


def test_generate_resumes(generated, train_annotations):
    exp, _ = generated
    before = {p: p.stat().st_mtime_ns for p in (exp / "samples").iterdir()}
    from eval.generate import GenerateConfig, run_generate
    from train.inference.model import ModelSource

    # a finished clip is skipped: nothing regenerated, files untouched
    res = run_generate(GenerateConfig(out_dir=str(exp), annotation_dir=str(train_annotations["annotation_dir"]),
                                      manifest=str(train_annotations["manifest"]),
                                      model=ModelSource(tiny=True), frames=8, stride=2, height=32, width=32, steps=2,
                                      show_progress=False))
    assert res["generated"] == 0 and res["skipped_done"] == len(before)
    assert {p: p.stat().st_mtime_ns for p in (exp / "samples").iterdir()} == before


def test_run_and_report_write_table1_columns(generated, tmp_path):
    exp, _ = generated
    det = tmp_path / "i3d_torchscript.pt"
    torch.manual_seed(0)
    torch.jit.script(TinyDetector().eval()).save(str(det))
    res = tmp_path / "results"
    main(["run", str(exp), "--out", str(res), "--trials", "1", "--no-affine", "--no-progress",
          "--styleganv-i3d", str(det)])
    summary = json.loads((res / "summary.json").read_text())
    assert summary["num_videos"] == len(list((exp / "camera_data").glob("*.txt"))) and "success_rate" in summary
    assert "FVD_styleganv" in summary  # a value, or NaN with fvd_error when too few clips for a covariance
    assert main(["report", str(res), "--out", str(tmp_path / "table"), "--no-plots"]) == 0
    with open(tmp_path / "table" / "table.csv") as f:
        header = next(csv.reader(f))
    for col in ("RotErr", "TransErr_rel", "CamMC_rel", "TransErr_abs", "CamMC_abs", "FVD_styleganv"):
        assert any(col in h for h in header), (col, header)
    assert any("success" in h.lower() for h in header), header
