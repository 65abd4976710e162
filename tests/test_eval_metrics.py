"""Camera metrics (eval.metrics), camera-file loading (eval.trajectory), the trial merge rule and the
camera-metrics CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from annotate.camera import c2w_to_w2c, orthonormality_error, quat_to_rotmat, relative_to, w2c_to_c2w
from annotate.re10k import read_camera_file
from eval.cli import main
from eval.metrics import METRIC_NAMES, absolute_metrics, camera_metrics, relative_metrics, rot_err
from eval.pose_estimation import aggregate_trials, summarize
from eval.trajectory import load_camera

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = sorted((ROOT / "tests" / "fixtures" / "re10k_poses").glob("*.txt"))


def random_c2w(rng: np.random.Generator, n: int = 8, extent: float = 1.0) -> np.ndarray:
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, :3, :3] = quat_to_rotmat(rng.normal(size=(n, 4)))
    c2w[:, :3, 3] = rng.normal(scale=extent, size=(n, 3))
    return c2w


def rigid(rng: np.random.Generator) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = quat_to_rotmat(rng.normal(size=4))
    m[:3, 3] = rng.normal(scale=3.0, size=3)
    return m


def c2w_from(rots: list[np.ndarray], centres: list[list[float]]) -> np.ndarray:
    out = np.tile(np.eye(4), (len(rots), 1, 1))
    for i, (r, c) in enumerate(zip(rots, centres)):
        out[i, :3, :3], out[i, :3, 3] = r, c
    return out


def rz(deg: float) -> np.ndarray:
    return Rotation.from_euler("z", deg, degrees=True).as_matrix()


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_identical_real_trajectories_give_zero(path):
    c2w = w2c_to_c2w(read_camera_file(path).w2c)
    m = camera_metrics(c2w, c2w.copy())
    # RealEstate10K rotations are orthonormal only to ~1e-8 (float32 origin, 9 decimals); the reference's
    # acos((tr - 1) / 2) turned that into ~1.5e-4 rad per frame (up to 2.9e-3 summed over these files).
    # The atan2 form is exactly 0 for identical rotations, orthonormal or not.
    assert m.RotErr == 0
    assert m.TransErr_rel == 0 and m.CamMC_rel == 0 and m.TransErr_abs == 0 and m.CamMC_abs == 0
    # Read through the evaluation's loader (rotations projected onto the nearest orthonormal ones).
    cam = load_camera(path)
    assert camera_metrics(cam.c2w, load_camera(path).c2w).RotErr == 0
    assert orthonormality_error(cam.w2c[:, :, :3]).max() < 1e-14
    assert np.abs(cam.w2c - read_camera_file(path).w2c).max() < 1e-7  # only the 9-decimal rounding moved


def test_identical_exact_rotations_give_zero():
    c2w = random_c2w(np.random.default_rng(0), 16)
    m = camera_metrics(c2w, c2w.copy())
    assert m.RotErr == 0
    assert max(m.TransErr_rel, m.CamMC_rel, m.TransErr_abs, m.CamMC_abs) == 0


def test_quarter_turn_about_z_in_one_frame():
    eye = np.eye(3)
    centres = [[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]]
    gt = c2w_from([eye] * 4, centres)
    pred = c2w_from([eye, eye, rz(90), eye], centres)
    m = camera_metrics(pred, gt)
    assert m.RotErr == pytest.approx(math.pi / 2, abs=1e-12)
    assert m.TransErr_rel == pytest.approx(0, abs=1e-12)
    # ||Rz(90) - I||_F = ||[[-1,-1,0],[1,-1,0],[0,0,0]]|| = 2; translations agree.
    assert m.CamMC_rel == pytest.approx(2.0, abs=1e-12)
    # The same turn seen after a yaw of the whole trajectory: relative poses make it invisible.
    world = c2w_from([rz(30)], [[5, 0, 0]])
    assert camera_metrics(world @ pred, gt).RotErr == pytest.approx(math.pi / 2, abs=1e-9)


def test_known_translation_offset_relative_and_absolute():
    eye = np.eye(3)
    gt = c2w_from([eye] * 4, [[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]])
    pred = c2w_from([eye] * 4, [[0, 0, 0], [1, 1, 0], [2, 0, 0], [3, 0, 0]])
    rel = relative_metrics(pred, gt)
    # Both largest norms are 3: the only difference is (0, 1, 0) / 3 in frame 1.
    assert rel["RotErr"] == pytest.approx(0, abs=1e-7)
    assert rel["TransErr_rel"] == pytest.approx(1 / 3, rel=1e-9)
    assert rel["CamMC_rel"] == pytest.approx(1 / 3, rel=1e-9)
    # Absolute: prediction in metres x2, ground truth x1, both divided by the ground truth's largest norm (3).
    ab = absolute_metrics(pred, gt, pred_scale=2.0, gt_scale=1.0)
    expected = math.sqrt(5) / 3 + 2 / 3 + 1  # frames 1, 2, 3: (1/3, 2/3), (2/3, 0), (1, 0)
    assert ab["TransErr_abs"] == pytest.approx(expected, rel=1e-9)
    assert ab["CamMC_abs"] == pytest.approx(expected, rel=1e-9)
    # The 1e-9 guard: a trajectory without translation gives finite numbers.
    still = c2w_from([eye] * 4, [[0, 0, 0]] * 4)
    assert np.isfinite(list(camera_metrics(still, still).as_dict().values())).all()


@pytest.mark.parametrize("a,b", [(0, 1), (2, 3), (4, 5)])
def test_rot_err_matches_independent_scipy_computation(a, b):
    ga, gb = (w2c_to_c2w(read_camera_file(FIXTURES[i]).w2c) for i in (a, b))
    ra, rb = relative_to(ga, 0)[:, :3, :3], relative_to(gb, 0)[:, :3, :3]
    expected = sum(Rotation.from_matrix(x.T @ y).magnitude() for x, y in zip(ra, rb))
    got = camera_metrics(ga, gb).RotErr
    assert got > 0.05
    # No acos floor any more: agrees with scipy to the files' non-orthonormality (~1e-8 per frame), and
    # exactly orthonormalised (load_camera) to rounding.
    assert got == pytest.approx(expected, abs=1e-6)
    oa, ob = (relative_to(load_camera(FIXTURES[i]).c2w, 0)[:, :3, :3] for i in (a, b))
    exact = sum(Rotation.from_matrix(x.T @ y).magnitude() for x, y in zip(oa, ob))
    assert rot_err(relative_to(load_camera(FIXTURES[b]).c2w, 0), relative_to(load_camera(FIXTURES[a]).c2w, 0)) \
        == pytest.approx(exact, abs=1e-12)
    # Translation part, computed here from scratch.
    ta = np.einsum("ij,nj->ni", ga[0, :3, :3].T, ga[:, :3, 3] - ga[0, :3, 3])
    tb = np.einsum("ij,nj->ni", gb[0, :3, :3].T, gb[:, :3, 3] - gb[0, :3, 3])
    ta /= np.linalg.norm(ta, axis=1).max() + 1e-9
    tb /= np.linalg.norm(tb, axis=1).max() + 1e-9
    # Different algebra (R0^T (c_i - c0) here, [R0^T | -R0^T t0] @ c2w_i there) agrees to the files'
    # non-orthonormality (~1e-7).
    assert camera_metrics(ga, gb).TransErr_rel == pytest.approx(np.linalg.norm(ta - tb, axis=1).sum(), rel=1e-6)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), s_pred=st.floats(1e-2, 1e2), s_gt=st.floats(1e-2, 1e2))
def test_relative_metrics_scale_invariant(seed, s_pred, s_gt):
    # Exact up to the 1e-9 added to every normalising norm: relative error ~1e-9 / extent, hence rel=1e-6.
    rng = np.random.default_rng(seed)
    pred, gt = random_c2w(rng), random_c2w(rng)
    base = relative_metrics(pred, gt)
    ps, gs = pred.copy(), gt.copy()
    ps[:, :3, 3] *= s_pred
    gs[:, :3, 3] *= s_gt
    scaled = relative_metrics(ps, gs)
    for k in base:
        assert scaled[k] == pytest.approx(base[k], rel=1e-6, abs=1e-9)
    # Absolute metrics: a common scale cancels; pred_scale acts like scaling the file.
    ab = absolute_metrics(pred, gt, s_pred, s_gt)
    ab2 = absolute_metrics(ps, gs)
    ab3 = absolute_metrics(pred, gt, s_pred * 7.0, s_gt * 7.0)
    for k in ab:
        assert ab2[k] == pytest.approx(ab[k], rel=1e-6, abs=1e-9)
        assert ab3[k] == pytest.approx(ab[k], rel=1e-6, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_metrics_independent_of_world_frame_and_rotation_err_symmetric(seed):
    rng = np.random.default_rng(seed)
    pred, gt = random_c2w(rng), random_c2w(rng)
    base = camera_metrics(pred, gt).as_dict()
    moved = camera_metrics(rigid(rng)[None] @ pred, rigid(rng)[None] @ gt).as_dict()
    for k in METRIC_NAMES:
        assert moved[k] == pytest.approx(base[k], rel=1e-6, abs=1e-6)
    assert camera_metrics(gt, pred).RotErr == pytest.approx(base["RotErr"], rel=1e-9, abs=1e-9)
    assert all(v >= 0 for v in base.values())


def test_length_mismatch_is_a_clear_error():
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="differ in length"):
        camera_metrics(random_c2w(rng, 5), random_c2w(rng, 6))


def test_load_camera_reads_both_layouts(tmp_path):
    traj = read_camera_file(FIXTURES[0])
    w, h = 256, 256
    intr_px = traj.intrinsics * np.array([w, h, w, h])
    rows = np.concatenate([intr_px, np.zeros((len(traj), 2)), traj.w2c.reshape(-1, 12)], axis=1)
    np.savetxt(tmp_path / "clip.txt", rows)
    cd = load_camera(tmp_path / "clip.txt")
    re = load_camera(FIXTURES[0])
    assert not cd.intrinsics_normalized and re.intrinsics_normalized
    np.testing.assert_allclose(cd.c2w, re.c2w, atol=1e-12)
    np.testing.assert_allclose(cd.intrinsics_px(w, h), re.intrinsics_px(w, h), atol=1e-9)
    np.testing.assert_allclose(c2w_to_w2c(cd.c2w)[:, :3], traj.w2c, atol=1e-7)  # orthonormalised on read


def test_aggregate_pooled_ten_std_rule_and_failures():
    rng = np.random.default_rng(0)
    names = ["RotErr", "TransErr_rel"]
    per_video: dict = {f"v{i:02d}": [dict(zip(names, 1 + 0.01 * rng.normal(size=2))) for _ in range(5)]
                       for i in range(40)}
    per_video["v00"][2] = {"RotErr": 50.0, "TransErr_rel": 1.0}  # a wild trial: > 10 pooled std away
    per_video["dead"] = ["sample: GLOMAP failed", "sample: GLOMAP failed"]
    per_video["half"] = ["gt_video: 3 of 16 frames not registered", {"RotErr": 1.0, "TransErr_rel": math.nan}]
    agg = aggregate_trials(per_video, names, k_std=10)
    assert agg["v00"].num_outliers == 1 and agg["v00"].ok
    assert agg["v00"].means["RotErr"] == pytest.approx(np.mean([t["RotErr"] for k, t in enumerate(per_video["v00"])
                                                                if k != 2]))
    assert not agg["dead"].ok and agg["dead"].errors == ["sample: GLOMAP failed"] * 2
    assert agg["half"].ok and agg["half"].num_failed == 1 and math.isnan(agg["half"].means["TransErr_rel"])
    s = summarize(agg, names)
    assert s["num_videos"] == 42 and s["num_succeeded"] == 41
    assert s["success_rate"] == pytest.approx(41 / 42)
    assert list(s["failures"]) == ["dead"]
    assert s["RotErr"] == pytest.approx(np.mean([a.means["RotErr"] for a in agg.values() if a.ok]))


def test_cli_camera_metrics(tmp_path, capsys):
    a, b = str(FIXTURES[0]), str(FIXTURES[1])
    assert main(["camera-metrics", a, b]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == set(METRIC_NAMES)
    c2w_a, c2w_b = (w2c_to_c2w(read_camera_file(p).w2c) for p in (a, b))
    assert out["RotErr"] == pytest.approx(camera_metrics(c2w_a, c2w_b).RotErr)
    # Scales only touch the absolute metrics.
    assert main(["camera-metrics", a, a, "--pred-scale", "2", "--gt-scale", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["TransErr_rel"] == 0 and out["TransErr_abs"] > 1
    # A file with fewer frames: a clear error, exit status 2.
    lines = Path(b).read_text().splitlines()
    short = tmp_path / "short.txt"
    short.write_text("\n".join(lines[:10]) + "\n")
    assert main(["camera-metrics", a, str(short)]) == 2
    assert "frame counts differ" in capsys.readouterr().err


def test_cli_subprocess_entry_point():
    r = subprocess.run([sys.executable, "-m", "eval", "camera-metrics", str(FIXTURES[2]), str(FIXTURES[2])],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["CamMC_rel"] == 0 and out["RotErr"] == 0  # was 1.5e-3 with the acos formula (issue 12)


@pytest.mark.parametrize("flag,value", [("--pred-scale", "nan"), ("--pred-scale", "inf"), ("--pred-scale", "-2"),
                                        ("--gt-scale", "0"), ("--gt-scale", "-inf"), ("--pred-scale", "0")])
def test_cli_refuses_bad_scales(flag, value, capsys):
    a = str(FIXTURES[0])
    assert main(["camera-metrics", a, a, f"{flag}={value}"]) == 2  # "=" form: "-inf" is not an option
    cap = capsys.readouterr()
    assert cap.out == ""  # no JSON with null or absurd numbers
    err = cap.err.strip()
    assert "\n" not in err and err.startswith(f"error: {flag} must be a finite number > 0") and value in err


def test_cli_bad_scale_exit_status_subprocess():
    r = subprocess.run([sys.executable, "-m", "eval", "camera-metrics", str(FIXTURES[1]), str(FIXTURES[1]),
                        "--gt-scale", "0"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == ["error: --gt-scale must be a finite number > 0 (metres per unit), got 0.0"]
