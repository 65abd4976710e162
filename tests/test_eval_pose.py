"""Pose estimation (eval.pose_estimation) on a synthetic clip rendered by annotate.synth along a known
trajectory, with exact depth. About 15 s on one core."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from annotate.camera import relative_to
from annotate.synth import SynthConfig, make_clip
from annotate.video import read_frames
from eval.metrics import absolute_metrics, camera_metrics, max_translation_norm, relative_metrics
from eval.pose_estimation import (
    PoseEstimationConfig,
    PoseEstimationError,
    VideoPoseEstimator,
    estimate_poses,
    estimate_trials,
)
from eval.trajectory import load_camera

FRAMES, WIDTH, HEIGHT = 20, 256, 144
# Plain SIFT: ~5x faster extraction on the CPU than the reference's affine-shape + DSP SIFT, with at least
# the same accuracy on these synthetic clips (measured on five trajectory kinds, two seeds each:
# RotErr 0.015-0.035 vs 0.017-0.057, TransErr_rel 0.06-0.11 vs 0.075-0.17).
FAST = PoseEstimationConfig(estimate_affine_shape=False, domain_size_pooling=False)


class ExactDepth:
    """A DepthPredictor returning the renderer's exact metric depth of the first frames."""

    def __init__(self, depth: np.ndarray):
        self.depth = depth
        self.calls: list[tuple[int, ...]] = []

    def predict(self, frames: np.ndarray) -> np.ndarray:
        self.calls.append(frames.shape)
        return self.depth[: len(frames)].astype(np.float32)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    cfg = SynthConfig(out=str(out), frames=FRAMES, width=WIDTH, height=HEIGHT, trajectories=["orbit"], seed=0)
    row = make_clip(cfg, 0, out)
    cam = load_camera(out / row["pose_path"])
    frames = read_frames(out / row["video_path"])
    depth = np.load(out / row["depth_path"])["depth"]
    intr = cam.intrinsics_px(WIDTH, HEIGHT)[0]
    truth = row["_truth"]
    with VideoPoseEstimator(frames, intr, FAST, depth0=depth[0]) as est:
        trials = [est.run(seed) for seed in (0, 1)]
    return dict(cam=cam, frames=frames, depth=depth, intr=intr, truth=truth, trials=trials,
                metric_c2w=np.array(truth["c2w_metric_rel0"]))


def test_estimated_trajectory_matches_ground_truth(clip):
    for est in clip["trials"]:
        assert est.registered.all() and est.num_points3d > 300
        np.testing.assert_allclose(est.c2w[0], np.eye(4), atol=1e-9)
        m = relative_metrics(est.c2w, clip["cam"].c2w)
        # Measured on this clip (20 frames, 256x144, libx264 crf 12), seeds 0 and 1: RotErr 0.024 / 0.029 rad
        # summed over 20 frames (~0.08 deg per frame), TransErr_rel 0.084 / 0.060, CamMC_rel 0.091 / 0.074;
        # over the five synthetic trajectory kinds and both SIFT settings at most 0.057 / 0.17 / 0.19. The
        # bounds leave room for that spread and platform differences while staying ~5x below the
        # published models' errors (RotErr 0.39, TransErr_rel 1.29 over 16 frames).
        assert m["RotErr"] < 0.08, m
        assert m["TransErr_rel"] < 0.25, m
        assert m["CamMC_rel"] < 0.3, m


def test_perturbed_trajectory_gives_the_expected_increase(clip):
    est, gt = clip["trials"][0].c2w, relative_to(clip["cam"].c2w, 0)
    base = relative_metrics(est, gt)
    # Perturb the ground truth: frame i turned by 0.02 i rad about its own y axis and moved sideways.
    n = len(gt)
    angles = 0.02 * np.arange(n)
    pert = gt.copy()
    pert[:, :3, :3] = gt[:, :3, :3] @ Rotation.from_rotvec(np.outer(angles, [0, 1, 0])).as_matrix()
    pert[:, :3, 3] += np.outer(np.linspace(0, 0.3, n), [1, 0, 0]) * max_translation_norm(gt)
    shift = relative_metrics(pert, gt)
    assert shift["RotErr"] == pytest.approx(angles.sum(), rel=1e-6)  # 3.8 rad
    got = relative_metrics(est, pert)
    # The geodesic angle and the per-frame distances of normalised positions are metrics, so the
    # triangle inequality pins the increase down to within the estimate's own error.
    assert abs(got["RotErr"] - shift["RotErr"]) <= base["RotErr"] + 1e-6
    assert abs(got["TransErr_rel"] - shift["TransErr_rel"]) <= base["TransErr_rel"] + 1e-6
    assert got["RotErr"] > 20 * base["RotErr"] and got["TransErr_rel"] > 5 * base["TransErr_rel"]


def test_metric_scale_from_exact_depth(clip):
    truth_max = max_translation_norm(clip["metric_c2w"])
    for est in clip["trials"]:
        assert est.num_scale_points > 100
        # Measured: +1.1 % / +1.3 % on this clip (seeds 0 / 1), within 2.3 % on every synthetic trajectory kind.
        assert max_translation_norm(est.metric_c2w()) / truth_max == pytest.approx(1.0, abs=0.03)
        # Same statement through the absolute metrics: the estimate in metres vs the metric truth.
        ab = absolute_metrics(est.c2w, clip["cam"].c2w, pred_scale=est.metric_scale, gt_scale=clip["truth"]["scale"])
        rel = relative_metrics(est.c2w, clip["cam"].c2w)
        assert ab["TransErr_abs"] < rel["TransErr_rel"] + 0.3
        wrong = absolute_metrics(est.c2w, clip["cam"].c2w, pred_scale=1.5 * est.metric_scale,
                                 gt_scale=clip["truth"]["scale"])
        assert wrong["TransErr_abs"] > ab["TransErr_abs"] + 2.0
    scales = [e.metric_scale for e in clip["trials"]]
    assert np.ptp(scales) / np.mean(scales) < 0.03


def test_trials_with_depth_predictor_object_and_failures(clip):
    depth = ExactDepth(clip["depth"])
    frames = clip["frames"][:8]
    outcomes = estimate_trials(frames, clip["intr"], FAST, num_trials=1, base_seed=3, depth=depth)
    assert depth.calls == [(1, HEIGHT, WIDTH, 3)]  # frame 0 only, once per video
    (o,) = outcomes
    assert o.ok and o.seed == 3 and o.estimate.metric_scale > 0, o.error
    m = camera_metrics(o.estimate.c2w, clip["cam"].c2w[:8])
    assert m.RotErr < 0.08
    # Unrelated noise frames: no reconstruction; the failure is reported, not raised.
    noise = np.random.default_rng(0).integers(0, 256, size=(4, 64, 64, 3), dtype=np.uint8)
    (bad,) = estimate_trials(noise, [50.0, 50.0, 32.0, 32.0], FAST, num_trials=1)
    assert not bad.ok and bad.estimate is None and bad.error
    with pytest.raises(PoseEstimationError):
        estimate_poses(noise, [50.0, 50.0, 32.0, 32.0], FAST)
    with pytest.raises(ValueError, match="uint8"):
        estimate_poses(noise.astype(np.float32), [50.0, 50.0, 32.0, 32.0], FAST)


def test_unregistered_frames_fail_the_trial_or_are_reported(clip):
    noise = np.random.default_rng(5).integers(0, 256, size=(3, HEIGHT, WIDTH, 3), dtype=np.uint8)
    frames = np.concatenate([clip["frames"][:8], noise])
    with VideoPoseEstimator(frames, clip["intr"], FAST) as est:
        with pytest.raises(PoseEstimationError, match=r"3 of 11 frames not registered.*\[8, 9, 10\]"):
            est.run(0)
        est.config = replace(FAST, allow_unregistered=True)
        e = est.run(0)
    assert e.missing_frames == [8, 9, 10] and e.registered[:8].all()
    assert np.isnan(e.c2w[8:]).all() and np.isfinite(e.c2w[:8]).all()
    assert relative_metrics(e.c2w[:8], clip["cam"].c2w[:8])["RotErr"] < 0.08
