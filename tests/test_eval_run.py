"""The folder evaluation (eval.run), the report (eval.report) and their CLI, on synthetic clips:
a perfect "generator" (sample = ground-truth video), one whose camera drifts in yaw and overshoots the
path by 30 %, and a clip whose sample is missing. About 40 s on one core."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

from annotate.camera import c2w_to_w2c
from annotate.synth import Room, make_trajectory, render
from annotate.video import write_video
from eval.cli import main
from eval.metrics import METRIC_NAMES, absolute_metrics, relative_metrics
from eval.pose_estimation import PoseEstimationConfig
from eval.report import ReportConfig, write_report
from eval.run import EvalRunConfig, discover_clips, run_evaluation

N, W, H = 16, 256, 144
FAST = PoseEstimationConfig(estimate_affine_shape=False, domain_size_pooling=False)
YAW_STEP = 0.015  # rad per frame of the drifting sample
OVERSHOOT = 1.3


class Depth0:
    """Exact metric depth of frame 0, which both videos of a clip share."""

    def __init__(self, depth0: np.ndarray):
        self.depth0 = depth0

    def predict(self, frames: np.ndarray) -> np.ndarray:
        return np.repeat(self.depth0[None], len(frames), axis=0)


@pytest.fixture(scope="module")
def exp(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    rng = np.random.default_rng([7, 0])
    room = Room.random(rng)
    c2w, _ = make_trajectory("orbit", rng, room, N)
    intr_px = np.array([0.5 * W, 0.5 * W, 0.5 * W, 0.5 * H])
    drift = c2w.copy()
    drift[:, :3, :3] = c2w[:, :3, :3] @ Rotation.from_rotvec(np.outer(YAW_STEP * np.arange(N), [0, 1, 0])).as_matrix()
    drift[:, :3, 3] = c2w[0, :3, 3] + OVERSHOOT * (c2w[:, :3, 3] - c2w[0, :3, 3])
    gt_frames, depth = zip(*(render(room, c, intr_px, W, H) for c in c2w))
    drift_frames = [render(room, c, intr_px, W, H)[0] for c in drift]
    for sub in ("samples", "gt_video", "camera_data"):
        (root / sub).mkdir()
    # camera_data as the reference writes it: pixel intrinsics, 0 0, w2c; here in "relative" units (/2.5).
    file_c2w = c2w.copy()
    file_c2w[:, :3, 3] /= 2.5
    rows = np.concatenate([np.tile(intr_px, (N, 1)), np.zeros((N, 2)), c2w_to_w2c(file_c2w)[:, :3].reshape(N, 12)], 1)
    for name in ("a_perfect", "b_drift", "c_nosample"):
        np.savetxt(root / "camera_data" / f"{name}.txt", rows, fmt="%.10f")
        write_video(root / "gt_video" / f"{name}.mp4", np.stack(gt_frames))
    write_video(root / "samples" / "a_perfect.mp4", np.stack(gt_frames))
    write_video(root / "samples" / "b_drift.mp4", np.stack(drift_frames))
    return dict(root=root, c2w=c2w, drift=drift, depth0=depth[0])


@pytest.fixture(scope="module")
def api_run(exp, tmp_path_factory):
    out = tmp_path_factory.mktemp("results") / "ours"
    # Inline executor: the Ray path (and resume) is tests/test_eval_ray.py's; the numbers are the same.
    cfg = EvalRunConfig(exp_dir=str(exp["root"]), out_dir=str(out), num_trials=2, pose=FAST, show_progress=False,
                        executor="local")
    return out, run_evaluation(cfg, depth=Depth0(exp["depth0"]))


def test_discover_clips_matches_by_stem(exp):
    clips = discover_clips(exp["root"])
    assert [c.name for c in clips] == ["a_perfect", "b_drift", "c_nosample"]
    assert clips[2].missing == ["sample"] and not clips[0].missing


def test_run_metrics_success_rate_and_files(exp, api_run):
    out, summary = api_run
    assert summary["num_videos"] == 3 and summary["num_succeeded"] == 2
    assert summary["success_rate"] == pytest.approx(2 / 3)
    assert list(summary["failures"]) == ["c_nosample"] and "missing sample" in summary["failures"]["c_nosample"][0]
    clips = {r["clip"]: r for r in json.loads((out / "clips.json").read_text())}
    perfect, drift = clips["a_perfect"], clips["b_drift"]
    assert perfect["ok"] and drift["ok"] and not clips["c_nosample"]["ok"]
    # Perfect generator: only the estimation noise (see test_eval_pose for the measured levels).
    assert perfect["RotErr"] < 0.08 and perfect["TransErr_rel"] < 0.25
    assert perfect["TransErr_abs"] < 0.3 and perfect["CamMC_abs"] < 0.35
    # Drifting generator: the true errors of its trajectory, to within the estimation noise.
    truth_rel = relative_metrics(exp["drift"], exp["c2w"])
    truth_abs = absolute_metrics(exp["drift"], exp["c2w"])  # both metric: depth gives both scales
    assert truth_rel["RotErr"] == pytest.approx(YAW_STEP * N * (N - 1) / 2, rel=1e-6)  # 1.8 rad
    assert drift["RotErr"] == pytest.approx(truth_rel["RotErr"], abs=0.1)
    assert drift["TransErr_rel"] < 0.3  # a pure overshoot is invisible to the relative metric ...
    assert truth_abs["TransErr_abs"] > 2.0  # ... and not to the absolute one
    assert drift["TransErr_abs"] == pytest.approx(truth_abs["TransErr_abs"], abs=0.4)
    # Files: every trial listed, with the failures' reasons; trajectories for the plots.
    with open(out / "trials.csv") as f:
        trials = list(csv.DictReader(f))
    assert len(trials) == 6 and {t["status"] for t in trials if t["clip"] == "c_nosample"} == {"failed"}
    assert all(t["status"] == "ok" for t in trials if t["clip"] != "c_nosample")
    assert all(float(t["scale_sample"]) > 0 for t in trials if t["status"] == "ok")
    assert sorted(p.name for p in (out / "trajectories").glob("*.npz")) == ["a_perfect.npz", "b_drift.npz"]
    saved = json.loads((out / "summary.json").read_text())
    assert saved["config"]["num_trials"] == 2 and set(METRIC_NAMES) <= set(saved)


def test_cli_run_estimate_and_report(exp, api_run, tmp_path, capsys, tiny_depth_model):
    out_cli = tmp_path / "cli_results"
    # No depth source: absolute metrics are not computed (null in JSON), relative ones are.
    rc = main(["run", str(exp["root"]), "--out", str(out_cli), "--trials", "1", "--no-affine", "--limit", "1",
               "--no-progress", "--executor", "local"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_videos"] == 1 and summary["success_rate"] == 1.0
    assert summary["RotErr"] < 0.08 and summary["TransErr_abs"] is None and "absolute" in summary["note"]

    # One video; metric scale from a Depth Anything V2 model (tiny, random weights: any positive scale).
    rc = main(["estimate-poses", str(exp["root"] / "samples" / "b_drift.mp4"),
               str(exp["root"] / "camera_data" / "b_drift.txt"), "--trials", "1", "--no-affine",
               "--depth-model", str(tiny_depth_model), "--depth-device", "cpu"])
    assert rc == 0
    (trial,) = json.loads(capsys.readouterr().out)
    assert trial["ok"] and trial["RotErr"] == pytest.approx(YAW_STEP * N * (N - 1) / 2, abs=0.1)
    assert trial["metric_scale"] > 0 and trial["missing_frames"] == []

    report = tmp_path / "report"
    rc = main(["report", str(api_run[0]), str(out_cli), "--out", str(report), "--names", "drift-test", "no-depth"])
    assert rc == 0
    md = (report / "table.md").read_text()
    assert "| Method | RotErr↓ | TransErr_rel↓ | CamMC_rel↓ | TransErr_abs↓ | CamMC_abs↓ | FVD (VideoGPT)↓ | " \
           "FVD (StyleGAN-V)↓ | Success |" in md
    assert "2/3 (66.7%)" in md and "1/1 (100.0%)" in md and "c_nosample" in md
    with open(report / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["drift-test", "no-depth"]
    assert float(rows[0]["RotErr"]) == pytest.approx(api_run[1]["RotErr"])
    assert math.isnan(float(rows[1]["TransErr_abs"])) and math.isnan(float(rows[0]["FVD_videogpt"]))
    pngs = sorted(report.glob("plots/*/*.png"))
    assert [p.relative_to(report).as_posix() for p in pngs] == [
        "plots/drift-test/a_perfect.png", "plots/drift-test/b_drift.png", "plots/no-depth/a_perfect.png"]
    with Image.open(pngs[1]) as im:
        assert im.size[0] > 300 and im.size[1] > 300


def test_report_python_api_without_plots(api_run, tmp_path):
    res = write_report(ReportConfig(results=[str(api_run[0])], out_dir=str(tmp_path), plots=False))
    assert res["plots"] == [] and res["rows"][0]["num_clips"] == 3
    with pytest.raises(FileNotFoundError, match="summary.json"):
        write_report(ReportConfig(results=[str(tmp_path / "nothing")], out_dir=str(tmp_path)))


def test_cli_run_fvd_only(exp, tmp_path, capsys):
    import torch

    from tests.test_eval_fvd import TinyDetector

    torch.manual_seed(0)
    detector = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(TinyDetector().eval()).save(str(detector))
    out = tmp_path / "fvd_results"
    assert main(["run", str(exp["root"]), "--out", str(out), "--fvd-only", "--styleganv-i3d", str(detector),
                 "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    # Pairs of (gt_video, sample): the clip without a sample takes no part.
    assert summary["fvd_num_videos"] == 2 and summary["FVD_styleganv"] > 0 and "FVD_videogpt" not in summary
    assert "RotErr" not in summary and json.loads((out / "summary.json").read_text())["FVD_styleganv"] > 0
