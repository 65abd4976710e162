"""Inference trajectories (train/inference/trajectory.py): presets, keyframes, loops, RealEstate10K files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from annotate.camera import camera_centres, look_at, orthonormality_error, rotation_angle, w2c_to_c2w
from annotate.re10k import read_camera_file
from train.inference.trajectory import (
    Trajectory,
    continuation_trajectory,
    keyframe_trajectory,
    load_trajectory,
    preset_trajectory,
    re10k_trajectory,
    write_re10k,
)

INTR = np.array([128.0, 128.0, 128.0, 128.0])
HW = (256, 256)


def _rot_ok(c2w):
    assert orthonormality_error(c2w[:, :3, :3]).max() < 1e-9
    np.testing.assert_allclose(c2w[:, 3], np.tile([0, 0, 0, 1.0], (len(c2w), 1)), atol=0)


@pytest.mark.parametrize("axis,name", [(0, "truck"), (1, "pedestal"), (2, "dolly")])
@pytest.mark.parametrize("dist", [0.5, -1.25])
def test_translation_presets_move_the_stated_metres(axis, name, dist):
    traj = preset_trajectory(f"{name}:distance={dist}", 16, INTR)
    c = camera_centres(traj.c2w)
    np.testing.assert_allclose(c[0], 0, atol=1e-12)
    np.testing.assert_allclose(c[-1][axis], dist, atol=1e-12)
    assert np.abs(np.delete(c, axis, axis=1)).max() < 1e-12
    steps = np.linalg.norm(np.diff(c, axis=0), axis=1)
    np.testing.assert_allclose(steps, abs(dist) / 15, atol=1e-12)  # constant speed
    np.testing.assert_allclose(traj.c2w[:, :3, :3], np.tile(np.eye(3), (16, 1, 1)), atol=1e-12)
    assert traj.intrinsics is None


def test_pan_tilt_turn_in_place_by_the_stated_angle():
    pan = preset_trajectory("pan:angle=40", 9, INTR)
    _rot_ok(pan.c2w)
    assert np.abs(camera_centres(pan.c2w)).max() < 1e-12
    assert np.degrees(rotation_angle(pan.c2w[0, :3, :3], pan.c2w[-1, :3, :3])) == pytest.approx(40, abs=1e-9)
    assert pan.c2w[-1, 0, 2] > 0  # optical axis turned towards +x: to the right
    tilt = preset_trajectory("tilt:angle=10", 9, INTR)
    assert np.degrees(rotation_angle(np.eye(3), tilt.c2w[-1, :3, :3])) == pytest.approx(10, abs=1e-9)
    assert tilt.c2w[-1, 1, 2] > 0  # looks down (+y)


def test_orbit_keeps_radius_and_looks_at_centre():
    r, ang = 2.5, 50.0
    traj = preset_trajectory(f"orbit:angle={ang},radius={r}", 17, INTR)
    _rot_ok(traj.c2w)
    centre = np.array([0, 0, r])
    c = camera_centres(traj.c2w)
    np.testing.assert_allclose(np.linalg.norm(c - centre, axis=1), r, atol=1e-12)
    fwd = traj.c2w[:, :3, 2]
    to_centre = (centre - c) / np.linalg.norm(centre - c, axis=1, keepdims=True)
    np.testing.assert_allclose(fwd, to_centre, atol=1e-12)
    chord = np.linalg.norm(c[-1] - c[0])
    assert chord == pytest.approx(2 * r * np.sin(np.radians(ang) / 2), abs=1e-12)
    assert c[-1, 0] > 0  # positive angle: camera moves right
    # radius defaults to the scene depth
    d = preset_trajectory("orbit:angle=30", 5, INTR, scene_depth=3.0)
    np.testing.assert_allclose(np.linalg.norm(camera_centres(d.c2w) - [0, 0, 3.0], axis=1), 3.0, atol=1e-12)


def test_zoom_scales_focal_length_only():
    traj = preset_trajectory("zoom:factor=2", 5, INTR)
    np.testing.assert_allclose(traj.c2w, np.tile(np.eye(4), (5, 1, 1)))
    np.testing.assert_allclose(traj.intrinsics[:, 0], [128, 160, 192, 224, 256])
    np.testing.assert_allclose(traj.intrinsics[:, 2:], 128)


def test_preset_errors():
    with pytest.raises(ValueError, match="unknown preset"):
        preset_trajectory("spin", 4, INTR)
    with pytest.raises(ValueError, match="takes"):
        preset_trajectory("dolly:angle=3", 4, INTR)


@pytest.mark.parametrize("spec", ["dolly:distance=0.8", "orbit:angle=40,radius=2", "pan:angle=30", "zoom:factor=2"])
def test_preset_loops_return_to_start(spec):
    traj = preset_trajectory(spec, 17, INTR, loop=True)
    np.testing.assert_allclose(traj.c2w[-1], traj.c2w[0], atol=1e-12)
    out = preset_trajectory(spec, 9, INTR)
    np.testing.assert_allclose(traj.c2w[8], out.c2w[-1], atol=1e-12)  # turning point = end of the one-way path
    np.testing.assert_allclose(traj.c2w[:9][::-1], traj.c2w[8:], atol=1e-12)  # symmetric out and back
    assert (traj.intrinsics is None) == (out.intrinsics is None) == (not spec.startswith("zoom"))
    if spec.startswith("zoom"):  # zoom moves the focal length, not the camera: its loop is in the intrinsics
        np.testing.assert_allclose(traj.intrinsics[-1], traj.intrinsics[0], atol=1e-12)
        np.testing.assert_allclose(traj.intrinsics[8], out.intrinsics[-1], atol=1e-12)
        np.testing.assert_allclose(traj.intrinsics[:9][::-1], traj.intrinsics[8:], atol=1e-12)
        assert out.intrinsics[-1, 0] == pytest.approx(2 * out.intrinsics[0, 0])


def _keyframes():
    return [
        {"t": 0.0, "c2w": np.eye(4).tolist()},
        {"t": 1.0, "position": [0.4, 0.0, 0.3], "look_at": [0.0, 0.0, 3.0]},
        {"t": 3.0, "position": [-0.5, -0.2, 1.0], "look_at": [0.3, 0.1, 4.0]},
    ]


def test_keyframe_interpolation_passes_through_keys_and_stays_orthonormal():
    kfs = _keyframes()
    # 13 frames over t in [0, 3]: frame 4 is t = 1, frame 12 is t = 3
    traj = keyframe_trajectory(kfs, 13)
    _rot_ok(traj.c2w)
    np.testing.assert_allclose(traj.c2w[0], np.eye(4), atol=1e-12)
    np.testing.assert_allclose(traj.c2w[4], look_at([0.4, 0.0, 0.3], [0.0, 0.0, 3.0]), atol=1e-12)
    np.testing.assert_allclose(traj.c2w[12], look_at([-0.5, -0.2, 1.0], [0.3, 0.1, 4.0]), atol=1e-12)
    # centres are piecewise linear between keys, rotations turn at constant speed
    c = camera_centres(traj.c2w)
    np.testing.assert_allclose(c[2], 0.5 * (c[0] + c[4]), atol=1e-12)
    a = [rotation_angle(traj.c2w[i, :3, :3], traj.c2w[i + 1, :3, :3]) for i in range(4)]
    np.testing.assert_allclose(a, a[0], atol=1e-9)


def test_keyframe_loop_returns_to_start_through_turning_key():
    traj = keyframe_trajectory(_keyframes(), 25, loop=True)
    _rot_ok(traj.c2w)
    np.testing.assert_allclose(traj.c2w[-1], traj.c2w[0], atol=1e-12)
    np.testing.assert_allclose(traj.c2w[12], look_at([-0.5, -0.2, 1.0], [0.3, 0.1, 4.0]), atol=1e-12)


def test_keyframes_relative_to_first_and_json_file(tmp_path):
    first = look_at([1.0, 0.0, 0.0], [1.0, 0.0, 5.0])
    kfs = [{"c2w": first.tolist()}, {"position": [1.0, 0.0, 1.0], "look_at": [1.0, 0.0, 5.0]}]
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keyframes": kfs, "ease": True}))
    traj = load_trajectory(str(path), 5, INTR, HW)
    np.testing.assert_allclose(traj.c2w[0], np.eye(4), atol=1e-12)
    np.testing.assert_allclose(camera_centres(traj.c2w)[-1], [0, 0, 1.0], atol=1e-12)
    # ease: slow start
    assert np.linalg.norm(camera_centres(traj.c2w)[1]) < 0.25 - 1e-3


def test_re10k_write_read_roundtrip_and_resampling(tmp_path):
    traj = preset_trajectory("orbit:angle=30,radius=2", 16, INTR)
    path = tmp_path / "cam.txt"
    write_re10k(path, traj, INTR, HW, stride=2)
    cam = read_camera_file(path)
    assert len(cam) == 16
    np.testing.assert_allclose(cam.intrinsics, 0.5)
    np.testing.assert_array_equal(cam.timestamps_us, np.round(np.arange(16) * 2 / 30 * 1e6))
    np.testing.assert_allclose(w2c_to_c2w(cam.w2c), traj.c2w, atol=1e-8)
    # every second line, 8 frames
    sub = re10k_trajectory(path, 8, stride=2)
    np.testing.assert_allclose(sub.c2w, traj.c2w[::2], atol=1e-8)
    # too short for the stride: resampled over the whole file by SE(3) interpolation, still ends at the end
    long = re10k_trajectory(path, 31, stride=3)
    _rot_ok(long.c2w)
    np.testing.assert_allclose(long.c2w[-1], traj.c2w[-1], atol=1e-8)
    np.testing.assert_allclose(long.c2w[::2], traj.c2w, atol=1e-4)  # timestamps are rounded to us
    loop = re10k_trajectory(path, 31, stride=1, loop=True)
    np.testing.assert_allclose(loop.c2w[-1], np.eye(4), atol=1e-8)
    np.testing.assert_allclose(loop.c2w[15], traj.c2w[-1], atol=1e-4)


def test_continuation_trajectory_reuses_previous_tail():
    prev = preset_trajectory("dolly:distance=1.5", 16, INTR).c2w  # 0.1 m per frame
    motion = preset_trajectory("truck:distance=0.7", 8, INTR)  # 0.1 m per frame
    traj = continuation_trajectory(prev, 3, motion)
    assert len(traj) == 8
    c = camera_centres(traj.c2w)
    np.testing.assert_allclose(c[:3], [[0, 0, 0], [0, 0, 0.1], [0, 0, 0.2]], atol=1e-12)
    np.testing.assert_allclose(c[3:], [[0.1 * k, 0, 0.2] for k in range(1, 6)], atol=1e-12)
    assert isinstance(traj, Trajectory)
