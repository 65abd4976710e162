"""Camera conventions: property tests of poses and interpolation, hand-checked intrinsics, projections and
Plücker rays, and the torch twins against the numpy functions."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.transform import Rotation

from annotate.camera import (
    ResizeCrop,
    backproject,
    c2w_to_w2c,
    interpolate_poses,
    intrinsics_matrix,
    intrinsics_matrix_torch,
    intrinsics_to_normalized,
    intrinsics_to_pixels,
    invert_rigid,
    invert_rigid_torch,
    look_at,
    make_pose,
    metric_c2w,
    nearest_rotation,
    orthonormality_error,
    plucker_embedding,
    project,
    quat_to_rotmat,
    random_rotation,
    relative_to,
    rot_x,
    rot_y,
    rotation_angle,
    rotmat_to_quat,
    scale_translation,
    skew,
    skew_torch,
    to_4x4,
    unproject,
    w2c_to_c2w,
)
from annotate.re10k import read_camera_file

from .conftest import RE10K_DIR

floats = st.floats(-10, 10, allow_nan=False, width=64)


@st.composite
def poses(draw, n=None):
    n = n or draw(st.integers(1, 6))
    q = draw(arrays(np.float64, (n, 4), elements=st.floats(-1, 1, width=64)))
    q[np.linalg.norm(q, axis=1) < 1e-3] = [1, 0, 0, 0]
    t = draw(arrays(np.float64, (n, 3), elements=floats))
    m = np.tile(np.eye(4), (n, 1, 1))
    m[:, :3, :3] = quat_to_rotmat(q)
    m[:, :3, 3] = t
    return m


@given(poses())
def test_c2w_w2c_round_trip(c2w):
    w2c = c2w_to_w2c(c2w)
    np.testing.assert_allclose(w2c @ c2w, np.tile(np.eye(4), (len(c2w), 1, 1)), atol=1e-9)
    np.testing.assert_allclose(w2c_to_c2w(w2c), c2w, atol=1e-9)
    np.testing.assert_allclose(w2c_to_c2w(w2c[:, :3, :]), c2w, atol=1e-9)


@given(poses(), st.data())
def test_relative_poses(c2w, data):
    k = data.draw(st.integers(0, len(c2w) - 1))
    rel = relative_to(c2w, k)
    np.testing.assert_allclose(rel[k], np.eye(4), atol=1e-9)
    # Relative poses do not depend on the world frame: moving the world leaves them unchanged.
    world = data.draw(poses(1))[0]
    np.testing.assert_allclose(relative_to(world[None] @ c2w, k), rel, atol=1e-7)
    # c2w[k] @ rel[i] recovers c2w[i].
    np.testing.assert_allclose(c2w[k][None] @ rel, c2w, atol=1e-7)


@given(poses(), st.floats(0.01, 100))
def test_metric_scaling_touches_translation_only(c2w, s):
    scaled = scale_translation(c2w, s)
    np.testing.assert_array_equal(scaled[:, :3, :3], c2w[:, :3, :3])
    np.testing.assert_allclose(scaled[:, :3, 3], s * c2w[:, :3, 3], rtol=1e-12)
    # Scaling a world uniformly by 1/s and the translations by s gives back the metric trajectory.
    shrunk = c2w.copy()
    shrunk[:, :3, 3] /= s
    np.testing.assert_allclose(metric_c2w(c2w_to_w2c(shrunk), s), relative_to(c2w, 0), atol=1e-7)


def test_real_files_relative_and_metric():
    traj = read_camera_file(sorted(RE10K_DIR.glob("*.txt"))[0])
    m = metric_c2w(traj.w2c, 2.0)
    np.testing.assert_allclose(m[0], np.eye(4), atol=1e-12)
    rel = relative_to(w2c_to_c2w(traj.w2c), 0)
    np.testing.assert_allclose(m[:, :3, 3], 2 * rel[:, :3, 3], atol=1e-12)
    assert orthonormality_error(m[:, :3, :3]).max() < 1e-6


def test_intrinsics_pixels_round_trip_and_resize_crop():
    intr = np.array([0.4748, 0.8441, 0.5, 0.5])
    px = intrinsics_to_pixels(intr, 640, 360)
    np.testing.assert_allclose(px, [303.872, 303.876, 320, 180])
    np.testing.assert_allclose(intrinsics_to_normalized(px, 640, 360), intr)
    # 640x360 -> 256x256: resize to (256, int(640*256/360)=455), crop left (455-256)//2 = 99.
    plan = ResizeCrop.plan((360, 640), (256, 256))
    assert plan.resized_hw == (256, 455) and plan.top == 0 and plan.left == 99
    np.testing.assert_allclose(plan.intrinsics(intr), [0.4748 * 455, 0.8441 * 256, 128, 128])
    # Portrait source into landscape target: the width matches, the height is cropped.
    plan = ResizeCrop.plan((640, 360), (320, 512))
    assert plan.resized_hw == (int(640 * 512 / 360), 512) and plan.left == 0
    assert plan.top == (plan.resized_hw[0] - 320) // 2


def test_plucker_hand_computed():
    # Camera at x = 1, f = 2, principal point at the image centre of a 4x4 image.
    c2w = torch.eye(4)[None]
    c2w[0, :3, 3] = torch.tensor([1.0, 0, 0])
    intr = torch.tensor([[2.0, 2.0, 2.0, 2.0]])
    emb = plucker_embedding(c2w, intr, 4, 4)
    assert emb.shape == (1, 6, 4, 4)
    assert plucker_embedding(c2w[0], intr[0], 4, 4).shape == (6, 4, 4)  # unbatched
    # Pixel (row 1, col 2) has centre (2.5, 1.5): direction (0.25, -0.25, 1) normalised.
    d = np.array([0.25, -0.25, 1.0]) / np.linalg.norm([0.25, -0.25, 1.0])
    np.testing.assert_allclose(emb[0, 3:, 1, 2].numpy(), d, atol=1e-6)
    np.testing.assert_allclose(emb[0, :3, 1, 2].numpy(), np.cross([1.0, 0, 0], d), atol=1e-6)
    # A 90-degree turn about camera y: camera z (forward) becomes world x; the moment stays o x d.
    rot = torch.tensor([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])
    c2w2 = c2w.clone()
    c2w2[0, :3, :3] = rot
    emb2 = plucker_embedding(c2w2, intr, 4, 4)
    np.testing.assert_allclose(emb2[0, 3:, 1, 2].numpy(), rot.numpy() @ d, atol=1e-6)
    np.testing.assert_allclose(emb2[0, :3, 1, 2].numpy(), np.cross([1.0, 0, 0], rot.numpy() @ d), atol=1e-6)
    dirs = emb2[0, 3:].reshape(3, -1).numpy()
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=0), 1, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(poses(n=4), st.integers(5, 40))
def test_interpolation_hits_keyframes_and_stays_orthonormal(keys, n):
    num = 3 * n + 1  # keyframe times land exactly on output samples
    times = np.array([0, n, 2 * n, 3 * n]) / (3 * n)
    out = interpolate_poses(keys, num, key_times=times)
    for i, idx in enumerate([0, n, 2 * n, 3 * n]):
        np.testing.assert_array_equal(out[idx], to_4x4(keys[i]))
    assert orthonormality_error(out[:, :3, :3]).max() < 1e-9
    np.testing.assert_array_equal(out[:, 3], np.tile([0, 0, 0, 1.0], (num, 1)))


@settings(max_examples=40, deadline=None)
@given(poses(n=3))
def test_interpolation_constant_angular_speed(keys):
    n = 8
    out = interpolate_poses(keys, 2 * n + 1)
    for seg in range(2):
        block = out[seg * n:(seg + 1) * n + 1]
        steps = rotation_angle(block[:-1, :3, :3], block[1:, :3, :3])
        total = rotation_angle(keys[seg, :3, :3], keys[seg + 1, :3, :3])
        np.testing.assert_allclose(steps, total / n, atol=1e-6)
        # Camera centres move linearly.
        centres = block[:, :3, 3]
        np.testing.assert_allclose(np.diff(centres, axis=0), np.diff(centres, axis=0)[:1].repeat(n, 0), atol=1e-9)


def test_interpolation_is_not_matrix_lerp_and_eases():
    a = np.eye(4)
    b = np.eye(4)
    b[:3, :3] = quat_to_rotmat(np.array([np.cos(np.pi / 4), 0, np.sin(np.pi / 4), 0]))  # 90 deg about y
    mid = interpolate_poses(np.stack([a, b]), 3)[1]
    np.testing.assert_allclose(rotation_angle(a[:3, :3], mid[:3, :3]), np.pi / 4, atol=1e-12)
    lerp = 0.5 * (a + b)
    assert orthonormality_error(lerp[:3, :3]) > 0.1 and orthonormality_error(mid[:3, :3]) < 1e-12
    eased = interpolate_poses(np.stack([a, b]), 11, ease=True)
    angles = rotation_angle(a[:3, :3], eased[:, :3, :3])
    steps = np.diff(angles)
    assert steps[0] < steps[5] and steps[-1] < steps[5]  # slow in, slow out
    np.testing.assert_allclose(eased[[0, -1]], np.stack([a, b]), atol=1e-12)


def _random_rigid(n: int, seed: int = 0) -> np.ndarray:
    """Rigid transforms built with scipy and numpy only (independent of annotate.camera)."""
    rng = np.random.default_rng(seed)
    m = np.tile(np.eye(4), (n, 1, 1))
    m[:, :3, :3] = Rotation.random(n, rng=rng).as_matrix()
    m[:, :3, 3] = rng.normal(scale=3.0, size=(n, 3))
    return m


def test_closed_form_rigid_inverse_numpy_and_torch():
    m = _random_rigid(16)
    inv = invert_rigid(m)
    np.testing.assert_allclose(inv, np.linalg.inv(m), atol=1e-12)
    np.testing.assert_allclose(invert_rigid(m[:, :3, :]), inv, atol=0)  # 3x4 input
    # The torch twin: the same numbers in float64, float32 to its precision; dtype kept, shape [..., 4, 4].
    t64 = invert_rigid_torch(torch.from_numpy(m))
    assert t64.dtype == torch.float64 and t64.shape == (16, 4, 4)
    np.testing.assert_allclose(t64.numpy(), inv, atol=1e-12)
    t32 = invert_rigid_torch(torch.from_numpy(m[:, :3, :]).float()[None])
    assert t32.dtype == torch.float32 and t32.shape == (1, 16, 4, 4)
    np.testing.assert_allclose(t32[0].numpy(), inv, atol=1e-5)


def test_relative_to_frame_is_exactly_the_identity_for_rounded_rotations():
    # Camera files keep 9 decimals, so R R^T = I only to ~1e-9; the reference frame is still exactly I.
    c2w = _random_rigid(5, seed=1).round(9)
    rel = relative_to(c2w, 2)
    np.testing.assert_array_equal(rel[2], np.eye(4))
    np.testing.assert_allclose(rel, np.linalg.inv(c2w[2])[None] @ c2w, atol=1e-8)


def test_rotation_angle_matches_acos_where_acos_is_well_conditioned():
    rng = np.random.default_rng(3)
    r1, r2 = Rotation.random(200, rng=rng).as_matrix(), Rotation.random(200, rng=rng).as_matrix()
    acos = np.arccos(np.clip((np.einsum("nji,nji->n", r1, r2) - 1) / 2, -1, 1))
    ours = rotation_angle(r1, r2)
    ok = (acos > 1e-3) & (acos < np.pi - 1e-3)
    np.testing.assert_allclose(ours[ok], acos[ok], atol=1e-10)
    # Near 0 and pi, where acos loses digits: a known tiny angle is recovered, identical inputs give exactly 0.
    for theta in (1e-9, 1e-6, np.pi - 1e-7):
        got = rotation_angle(np.eye(3), Rotation.from_euler("z", theta).as_matrix())
        assert got == pytest.approx(theta, rel=1e-6)
    rounded = r1.round(9)
    assert not rotation_angle(rounded, rounded).any()


def test_quaternions_known_values_and_round_trip():
    # 90 degrees about y: (w, x, y, z) = (cos 45, 0, sin 45, 0); the matrix written out by hand.
    ry90 = np.array([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])
    np.testing.assert_allclose(rotmat_to_quat(ry90), [np.sqrt(0.5), 0, np.sqrt(0.5), 0], atol=1e-15)
    np.testing.assert_allclose(quat_to_rotmat(np.array([2.0, 0, 2.0, 0])), ry90, atol=1e-15)  # normalised first
    np.testing.assert_allclose(rot_y(np.pi / 2), ry90, atol=1e-15)
    rots = Rotation.random(50, rng=np.random.default_rng(4)).as_matrix().reshape(5, 10, 3, 3)
    q = rotmat_to_quat(rots)
    assert q.shape == (5, 10, 4) and (q[..., 0] >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1, atol=1e-12)
    np.testing.assert_allclose(quat_to_rotmat(q), rots, atol=1e-12)
    np.testing.assert_allclose(quat_to_rotmat(-q), rots, atol=1e-12)  # q and -q: the same rotation


def test_random_rotation_is_the_synthetic_clips_historical_draw():
    # The synthetic clips' world transform: four normal draws read as (w, x, y, z), the matrix by hand.
    q = np.random.default_rng(7).normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    want = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
    rng = np.random.default_rng(7)
    np.testing.assert_allclose(random_rotation(rng), want, atol=1e-14)
    assert rng.normal() == np.random.default_rng(7).normal(size=5)[4]  # exactly four draws consumed


def test_axis_rotations_and_look_at_known_poses():
    # Tilt up: rot_x(a) turns the optical axis (camera z) towards -y (up, since y points down).
    np.testing.assert_allclose(rot_x(np.pi / 2) @ [0, 0, 1], [0, -1, 0], atol=1e-15)
    np.testing.assert_allclose(rot_y(np.pi / 2) @ [0, 0, 1], [1, 0, 0], atol=1e-15)
    # Looking from (1, 2, 3) along world +x, world -y up: camera x = world -z, y = world +y, z = world +x.
    c2w = look_at([1.0, 2, 3], [5.0, 2, 3])
    np.testing.assert_allclose(c2w[:3, :3], [[0, 0, 1], [0, 1, 0], [-1, 0, 0]], atol=1e-15)
    np.testing.assert_allclose(c2w[:3, 3], [1, 2, 3])
    np.testing.assert_array_equal(make_pose(np.eye(3), [1, 2, 3]), to_4x4(np.c_[np.eye(3), [1, 2, 3]]))
    with pytest.raises(ValueError, match="coincide"):
        look_at([0, 0, 0], [0, 0, 0])
    with pytest.raises(ValueError, match="parallel"):
        look_at([0, 0, 0], [0, -1, 0])


def test_backproject_and_project_hand_computed():
    intr = np.array([2.0, 4.0, 1.0, 1.0])  # fx, fy, cx, cy of a 2x2 image
    depth = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    pts = backproject(depth, intr)
    # Pixel (row 1, col 0): centre (0.5, 1.5) -> ((0.5 - 1) / 2 * 3, (1.5 - 1) / 4 * 3, 3).
    np.testing.assert_allclose(pts[1, 0], [-0.75, 0.375, 3.0])
    np.testing.assert_allclose(unproject(0.5, 1.5, 1.0, intr), [-0.25, 0.125, 1.0])
    uv, z = project(pts, intr)
    np.testing.assert_allclose(uv, np.stack(np.meshgrid([0.5, 1.5], [0.5, 1.5], indexing="xy"), -1), atol=1e-12)
    np.testing.assert_allclose(z, depth)


def test_torch_twins_match_numpy():
    rng = np.random.default_rng(5)
    intr = rng.uniform(10, 500, size=(3, 4))
    np.testing.assert_array_equal(intrinsics_matrix_torch(torch.from_numpy(intr)).numpy(), intrinsics_matrix(intr))
    t, v = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    np.testing.assert_allclose(skew(t) @ v[..., None], np.cross(t, v)[..., None], atol=1e-12)
    np.testing.assert_array_equal(skew_torch(torch.from_numpy(t)).numpy(), skew(t))


def test_nearest_rotation_is_the_polar_factor():
    # M = R (I + S) with S small and symmetric: I + S is symmetric positive definite, so R is M's polar factor.
    rng = np.random.default_rng(6)
    rots = Rotation.random(8, rng=rng).as_matrix()
    a = rng.normal(scale=1e-3, size=(8, 3, 3))
    m = rots @ (np.eye(3) + a + np.swapaxes(a, -1, -2))
    np.testing.assert_allclose(nearest_rotation(m), rots, atol=1e-12)
    assert orthonormality_error(nearest_rotation(m)).max() < 1e-14
