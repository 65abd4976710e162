"""Synthetic clips agree with their own geometry and follow the annotation contract's input layout."""

import json

import numpy as np
import pytest

from annotate.camera import intrinsics_to_pixels, relative_to, w2c_to_c2w
from annotate.re10k import read_camera_file
from annotate.synth import Room, SynthConfig, generate, load_ground_truth, make_trajectory, read_manifest_rows, render
from annotate.video import read_frames


def test_layout_and_camera_file_scale(scale_clips):
    rows = read_manifest_rows(scale_clips / "manifest.csv")
    truth = load_ground_truth(scale_clips)
    assert [r["clip_id"] for r in rows] == sorted(truth)
    for r in rows:
        traj = read_camera_file(scale_clips / r["pose_path"])
        frames = read_frames(scale_clips / r["video_path"])
        depth = np.load(scale_clips / r["depth_path"])["depth"]
        gt = truth[r["clip_id"]]
        assert len(traj) == len(frames) == len(depth) == gt["num_frames"] == 24
        assert frames.shape[1:] == (180, 320, 3) and depth.dtype == np.float32
        # Relative poses from the file times the true scale equal the rendered metric trajectory.
        rel = relative_to(w2c_to_c2w(traj.w2c), 0)
        rel[:, :3, 3] *= gt["scale"]
        np.testing.assert_allclose(rel, np.array(gt["c2w_metric_rel0"]), atol=2e-6 * max(1, gt["scale"]))
        # The file is really in relative units: its translations are not metric.
        assert not np.allclose(w2c_to_c2w(traj.w2c)[:, :3, 3], np.array(gt["c2w_metric_rel0"])[:, :3, 3])


def test_deterministic_for_a_seed(tmp_path):
    cfg = dict(clips=2, frames=3, width=64, height=48, seed=3, workers=1, trajectories=["walk", "re10k"])
    a = generate(SynthConfig(out=str(tmp_path / "a"), **cfg))
    b = generate(SynthConfig(out=str(tmp_path / "b"), **cfg))
    c = generate(SynthConfig(out=str(tmp_path / "c"), **(cfg | {"seed": 4})))
    for sub in ("manifest.csv", "cameras/synth_003_0000_walk.txt", "cameras/synth_003_0001_re10k.txt"):
        assert (a / sub).read_bytes() == (b / sub).read_bytes()
    np.testing.assert_array_equal(np.load(a / "depth/synth_003_0000_walk.npz")["depth"],
                                  np.load(b / "depth/synth_003_0000_walk.npz")["depth"])
    assert json.loads((a / "ground_truth.json").read_text())["clips"] == \
        json.loads((b / "ground_truth.json").read_text())["clips"]
    assert (a / "cameras/synth_003_0000_walk.txt").read_bytes() != (c / "cameras/synth_004_0000_walk.txt").read_bytes()


@pytest.mark.parametrize("kind", ["re10k", "walk", "pan", "orbit", "zoom"])
def test_depth_reprojects_with_consistent_colour(kind):
    """Back-project frame i with its depth, re-project into frame j: depth and colour agree where visible."""
    from annotate.synth import POSE_DIR

    rng = np.random.default_rng(11)
    room = Room.random(rng)
    c2w, intr = make_trajectory(kind, rng, room, 9, sorted(POSE_DIR.glob("*.txt"))[0])
    w, h = 160, 96
    intr_px = intrinsics_to_pixels(intr if intr is not None else np.array([0.5, 0.5 * w / h, 0.5, 0.5]), w, h)
    i, j = 0, 8
    img_i, dep_i = render(room, c2w[i], intr_px, w, h)
    img_j, dep_j = render(room, c2w[j], intr_px, w, h)
    fx, fy, cx, cy = intr_px
    v, u = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    cam = np.stack([(u - cx) / fx * dep_i, (v - cy) / fy * dep_i, dep_i], -1).reshape(-1, 3)
    world = cam @ c2w[i][:3, :3].T + c2w[i][:3, 3]
    w2c_j = np.linalg.inv(c2w[j])
    pj = world @ w2c_j[:3, :3].T + w2c_j[:3, 3]
    uj, vj = fx * pj[:, 0] / pj[:, 2] + cx, fy * pj[:, 1] / pj[:, 2] + cy
    inside = (pj[:, 2] > 0.1) & (uj >= 0) & (uj < w) & (vj >= 0) & (vj < h)
    ui, vi = np.floor(uj[inside]).astype(int), np.floor(vj[inside]).astype(int)
    # Visible in j: the depth rendered in j at that pixel is the re-projected point's depth.
    z_rendered = dep_j[vi, ui]
    visible = np.abs(z_rendered - pj[inside, 2]) < 0.02 * pj[inside, 2] + 0.05
    assert inside.mean() > 0.3 and visible.mean() > 0.6
    # Nearest-pixel rounding moves a point by < 1 px: compare with the median over visible points.
    ci = img_i.reshape(-1, 3)[inside][visible].astype(float)
    cj = img_j[vi[visible], ui[visible]].astype(float)
    assert np.median(np.abs(ci - cj)) < 12
    # And the geometry is exact where the point lands near a pixel centre.
    near = (np.abs(uj[inside] - ui - 0.5) < 0.05) & (np.abs(vj[inside] - vi - 0.5) < 0.05) & visible
    assert near.sum() > 20
    np.testing.assert_allclose(z_rendered[near], pj[inside][near, 2], rtol=0.02)
