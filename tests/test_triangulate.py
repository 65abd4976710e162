"""Triangulation pipelines (issue 15): keyframes + guided matching + projection against the sequential one."""

import numpy as np
import pytest

from annotate.camera import c2w_to_w2c, make_pose, rot_y, rotation_angle
from annotate.clip import ClipConfig, DepthStage, finish_stage, triangulate_stage
from annotate.manifest import resolve_paths
from annotate.synth import load_ground_truth, read_manifest_rows
from annotate.triangulate import (
    SfmConfig,
    cpu_seconds,
    keyframe_pairs,
    known_geometry,
    select_keyframes,
    triangulate,
    visible_ratios,
)


def _noisy(depth_path, out_path, seed=0):
    """The noisy depth of tests/test_clip_scale.py: x lognormal(0, 0.1), 5% outlier pixels."""
    rng = np.random.default_rng(seed)
    depth = np.load(depth_path)["depth"]
    noisy = depth * np.exp(rng.normal(0.0, 0.1, size=depth.shape))
    out = rng.random(depth.shape) < 0.05
    noisy[out] = rng.uniform(0.2, 15.0, size=out.sum())
    np.savez(out_path, depth=noisy.astype(np.float32))
    return out_path


@pytest.fixture(scope="module")
def both_pipelines(scale_clips, tmp_path_factory):
    """Stage 1 of the RealEstate10K-trajectory clip (24 frames, 320x180) with the old and the new pipeline."""
    row = [resolve_paths(r, scale_clips) for r in read_manifest_rows(scale_clips / "manifest.csv")
           if r["clip_id"].endswith("re10k")][0]
    recs, cpu = {}, {}
    for name in ("sequential", "keyframes"):
        cfg = ClipConfig()
        cfg.sfm.pipeline = name
        cfg.sfm.tmp_dir = str(tmp_path_factory.mktemp(f"sfm_{name}"))
        c0 = cpu_seconds()
        recs[name] = (cfg, triangulate_stage(row, cfg))
        cpu[name] = cpu_seconds() - c0
    noisy = _noisy(row["depth_path"], tmp_path_factory.mktemp("noisy") / "noisy.npz")
    return row, recs, load_ground_truth(scale_clips)[row["clip_id"]]["scale"], noisy, cpu


def test_keyframes_pipeline_keeps_the_accuracy(both_pipelines):
    row, recs, true, noisy, _ = both_pipelines
    out = {}
    for name, (cfg, rec) in recs.items():
        assert rec["status"] == "ok", rec["error"]
        for depth, tol in (("exact", 0.01), ("noisy", 0.03)):
            r = dict(rec, depth_path=str(noisy)) if depth == "noisy" else dict(rec)
            o = finish_stage(DepthStage(cfg.depth)(r), cfg)
            assert o["status"] == "ok", o["error"]
            assert abs(o["scale"] / true - 1) < tol, (name, depth, o["scale"], true)
            valid = np.isfinite(o["frame_scale"])
            assert np.median(np.abs(o["frame_scale"][valid] / true - 1)) < tol, (name, depth)
            out[name, depth] = valid.sum()
    for depth in ("exact", "noisy"):
        assert out["keyframes", depth] >= out["sequential", depth], depth
    assert out["keyframes", "exact"] == 24
    new = recs["keyframes"][1]
    assert new["obs_projected"].any() and not recs["sequential"][1]["obs_projected"].any()
    # every in-between frame got observations by projection, none of them matched there
    proj_frames = set(np.unique(new["obs_frame"][new["obs_projected"] == 1]))
    matched_frames = set(np.unique(new["obs_frame"][new["obs_projected"] == 0]))
    assert proj_frames and not proj_frames & matched_frames and proj_frames | matched_frames == set(range(24))


def test_keyframes_pipeline_costs_less_cpu(both_pipelines):
    row, recs, true, noisy, cpu = both_pipelines
    assert 0 < cpu["keyframes"] < cpu["sequential"], cpu  # process CPU time: stable on a shared machine


def _turning_path(n=50):
    """Camera walking forward, turning 30 degrees between frames 20 and 35 (2 degrees per frame)."""
    c2w = []
    for i in range(n):
        yaw = np.deg2rad(30) * np.clip((i - 20) / 15, 0, 1)
        c2w.append(make_pose(rot_y(yaw), [0, 0, 0.05 * i]))
    return c2w_to_w2c(np.stack(c2w))[:, :3]


def test_keyframes_follow_stride_and_rotation():
    w2c = _turning_path()
    keys = select_keyframes(w2c, stride=5, max_rotation_deg=6.0)
    assert keys[0] == 0 and keys[-1] == 49 and np.all(np.diff(keys) >= 1) and np.all(np.diff(keys) <= 5)
    turn = rotation_angle(w2c[keys[:-1], :, :3], w2c[keys[1:], :, :3])
    assert np.rad2deg(turn).max() <= 6.0 + 1e-9
    assert np.all(np.diff(keys)[keys[:-1] < 15] == 5)  # straight part: the stride
    assert (np.diff(keys)[(keys[:-1] >= 20) & (keys[:-1] < 33)] <= 3).all()  # the turn: closer keyframes
    pairs = keyframe_pairs(w2c[keys], overlap=3, max_angle_deg=10.0)
    assert all(0 < j - i <= 3 for i, j in pairs)
    axes = w2c[keys][:, 2, :3]
    for i in range(len(keys)):
        for j in range(i + 1, min(i + 4, len(keys))):
            assert ((i, j) in pairs) == (np.degrees(np.arccos(np.clip(axes[i] @ axes[j], -1, 1))) < 10.0)


def test_known_geometry_is_the_epipolar_constraint():
    rng = np.random.default_rng(0)
    w2c = _turning_path()[[3, 24]]
    k = np.array([[200.0, 0, 160], [0, 200, 90], [0, 0, 1]])
    tvg = known_geometry(w2c[0], w2c[1], k, k)
    pts = rng.uniform([-2, -1, 3], [2, 1, 6], size=(50, 3))
    proj = [(k @ (pts @ m[:, :3].T + m[:, 3]).T).T for m in w2c]
    x1, x2 = (p / p[:, 2:] for p in proj)
    line = x1 @ tvg.F.T  # epipolar lines in image 2
    dist = np.abs(np.sum(line * x2, 1)) / np.linalg.norm(line[:, :2], axis=1)
    assert dist.max() < 1e-6
    np.testing.assert_allclose(tvg.cam2_from_cam1.matrix()[:, :3], w2c[1][:, :3] @ w2c[0][:, :3].T, atol=1e-12)


def test_visibility_test_drops_occluded_projections():
    # keyframes 0 and 4 measure scale 2 with 30 points each; frames 1-3 get projections: 30 visible (ratio
    # 2 +- 5%), 10 occluded (something 40% closer: ratio 1.2), 5 without depth
    rng = np.random.default_rng(1)
    frame, ratios, proj = [], [], []
    for f in (0, 4):
        frame += [f] * 30
        ratios += list(2 * np.exp(rng.normal(0, 0.02, 30)))
        proj += [0] * 30
    for f in (1, 2, 3):
        frame += [f] * 45
        ratios += list(2 * np.exp(rng.uniform(-0.05, 0.05, 30))) + [1.2] * 10 + [np.nan] * 5
        proj += [1] * 45
    frame, ratios, proj = np.array(frame), np.array(ratios), np.array(proj, np.uint8)
    out = visible_ratios(frame, ratios, proj, 5, 20, 0.3)
    np.testing.assert_array_equal(out[proj == 0], ratios[proj == 0])  # matched observations untouched
    kept = np.isfinite(out) & (proj == 1)
    assert kept.sum() == 90 and np.all(np.abs(out[kept] / 2 - 1) < 0.06)
    # no keyframe with 20 points on its own: the pooled keyframe ratios are the reference
    out = visible_ratios(frame, ratios, proj, 5, 40, 0.3)
    assert (np.isfinite(out) & (proj == 1)).sum() == 90
    # fewer matched ratios than min_points in all: nothing to test against, projections dropped
    assert not np.isfinite(visible_ratios(frame, ratios, proj, 5, 100, 0.3)[proj == 1]).any()
    # the sequential pipeline has no projections: ratios pass through
    assert visible_ratios(frame, ratios, np.zeros_like(proj), 5, 20, 0.3) is ratios


def test_unknown_pipeline_is_a_clear_error():
    with pytest.raises(ValueError, match="clip.sfm.pipeline: unknown pipeline 'fast'; choose from keyframes"):
        triangulate(np.zeros((2, 8, 8, 3), np.uint8), np.full((2, 4), 0.5), np.zeros((2, 3, 4)),
                    SfmConfig(pipeline="fast"))


def test_small_forward_clip_falls_back_to_sequential(tmp_path):
    """A 96x64 forward walk leaves the keyframes too little parallax: without the fallback the clip fails with
    too few points, with it (the default) the sequential pipeline recovers the true scale."""
    from annotate.synth import SynthConfig, generate

    sample = generate(SynthConfig(out=str(tmp_path / "s"), clips=1, frames=16, width=96, height=64, seed=3,
                                  trajectories=["walk"], workers=1))
    row = resolve_paths(read_manifest_rows(sample / "manifest.csv")[0], sample)
    true = load_ground_truth(sample)[row["clip_id"]]["scale"]
    cfg = ClipConfig()
    cfg.sfm.fallback_sequential = False
    rec = triangulate_stage(row, cfg)
    assert rec["status"] == "failed" and "too few 3D points" in rec["error"]
    cfg = ClipConfig()
    assert cfg.sfm.pipeline == "keyframes" and cfg.sfm.fallback_sequential
    rec = triangulate_stage(row, cfg)
    assert rec["status"] == "ok", rec["error"]
    assert not rec["obs_projected"].any()  # the sequential pipeline's observations
    rec = finish_stage(DepthStage(cfg.depth)(rec), cfg)
    assert rec["status"] == "ok", rec["error"]
    assert rec["scale"] == pytest.approx(true, rel=0.01)
    assert np.isfinite(rec["frame_scale"]).sum() == 16
