"""Camera conventions of the whole project; train and eval import these and never re-derive them.

Axes are OpenCV/COLMAP (x right, y down, z forward). ``w2c`` is world-to-camera (COLMAP
``cam_from_world``), ``c2w`` its inverse; matrices are row-major ``[..., 3, 4]`` or ``[..., 4, 4]``.
RealEstate10K intrinsics are normalised: fx, cx by the image width, fy, cy by its height. Pixel
centres follow COLMAP: the centre of pixel (0, 0) is at (0.5, 0.5). Metric scaling multiplies
translations and never touches rotations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.transform import Rotation, Slerp

# ----------------------------------------------------------------------------------------- poses


def to_4x4(m: np.ndarray) -> np.ndarray:
    """``[..., 3, 4]`` or ``[..., 4, 4]`` -> ``[..., 4, 4]`` (float64) with a ``0 0 0 1`` last row."""
    m = np.asarray(m, dtype=np.float64)
    if m.shape[-2:] == (4, 4):
        return m.copy()
    if m.shape[-2:] != (3, 4):
        raise ValueError(f"expected [...,3,4] or [...,4,4] poses, got shape {m.shape}")
    out = np.zeros(m.shape[:-2] + (4, 4))
    out[..., :3, :] = m
    out[..., 3, 3] = 1.0
    return out


def make_pose(rot: np.ndarray, centre) -> np.ndarray:
    """4x4 c2w from a camera-to-world rotation and the camera centre (world coordinates)."""
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = rot, centre
    return m


def invert_rigid(m: np.ndarray) -> np.ndarray:
    """Inverse of ``[R|t]`` poses in closed form, ``[R^T | -R^T t]`` (float64 ``[..., 4, 4]``).

    Rotations of camera files are orthonormal only to their 9 decimals (~1e-9), so this differs from a full
    matrix inverse by that much; :func:`relative_to` sets its reference frame to the identity exactly."""
    m = to_4x4(m)
    rot_t = np.swapaxes(m[..., :3, :3], -1, -2)
    out = np.zeros_like(m)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -(rot_t @ m[..., :3, 3:])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def invert_rigid_torch(m: torch.Tensor) -> torch.Tensor:
    """Torch twin of :func:`invert_rigid`: ``[..., 3|4, 4]`` -> ``[..., 4, 4]``, same dtype and device."""
    rot_t = m[..., :3, :3].transpose(-1, -2)
    out = torch.zeros(*m.shape[:-2], 4, 4, dtype=m.dtype, device=m.device)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -(rot_t @ m[..., :3, 3:])[..., 0]
    out[..., 3, 3] = 1
    return out


def w2c_to_c2w(w2c: np.ndarray) -> np.ndarray:
    return invert_rigid(w2c)


def c2w_to_w2c(c2w: np.ndarray) -> np.ndarray:
    return invert_rigid(c2w)


def relative_to(c2w: np.ndarray, k: int = 0) -> np.ndarray:
    """``inv(c2w[k]) @ c2w[i]`` for every i: frame k becomes the identity (exactly, see :func:`invert_rigid`)."""
    c2w = to_4x4(c2w)
    out = invert_rigid(c2w[k])[None] @ c2w
    out[k] = np.eye(4)
    return out


def scale_translation(c2w: np.ndarray, scale: float | np.ndarray) -> np.ndarray:
    """Multiply translations by ``scale`` (a scalar, or one per pose); rotations untouched."""
    out = to_4x4(c2w)
    out[..., :3, 3] *= np.asarray(scale, dtype=np.float64)[..., None]
    return out


def metric_c2w(w2c: np.ndarray, scale: float, ref: int = 0) -> np.ndarray:
    """Absolute-scale cameras (the annotation contract's step 7): c2w relative to frame ``ref``, translations
    in metres."""
    return scale_translation(relative_to(w2c_to_c2w(w2c), ref), scale)


def camera_centres(c2w: np.ndarray) -> np.ndarray:
    return to_4x4(c2w)[..., :3, 3]


def orthonormality_error(rot: np.ndarray) -> np.ndarray:
    """max |R R^T - I| per rotation; also catches reflections via |det - 1|."""
    rot = np.asarray(rot, dtype=np.float64)
    eye = np.eye(3)
    err = np.abs(rot @ np.swapaxes(rot, -1, -2) - eye).max(axis=(-1, -2))
    return np.maximum(err, np.abs(np.linalg.det(rot) - 1.0))


def nearest_rotation(rot: np.ndarray) -> np.ndarray:
    """The rotation closest in Frobenius norm to each ``[..., 3, 3]`` matrix (polar factor ``U V^T``)."""
    u, _, vt = np.linalg.svd(np.asarray(rot, np.float64))
    d = np.sign(np.linalg.det(u @ vt))  # -1 only for a reflection; flipped to keep det +1
    u[..., :, 2] *= d[..., None]
    return u @ vt


def rotation_angle(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """Geodesic angle (radians) of ``M = R1^T R2``, as ``atan2(|vee(M - M^T)| / 2, (tr M - 1) / 2)``.

    Equal to ``acos((tr M - 1) / 2)`` for rotations, but well conditioned at 0 and pi, and exactly 0 for
    identical inputs (``M`` is then exactly symmetric), where acos gives ~1e-4 for 9-decimal rotations."""
    r1, r2 = np.asarray(r1, np.float64), np.asarray(r2, np.float64)
    # Elementwise sum over k in one fixed order: m[i, j] and m[j, i] are the same sum when r1 == r2.
    m = (r1[..., :, :, None] * r2[..., :, None, :]).sum(axis=-3)
    vee = np.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1)
    cos = (m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2] - 1.0) / 2.0
    return np.arctan2(np.linalg.norm(vee, axis=-1) / 2.0, cos)


def rot_x(a: float) -> np.ndarray:
    """Rotation by ``a`` radians about camera x (right); positive turns the optical axis towards -y (up)."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], np.float64)


def rot_y(a: float) -> np.ndarray:
    """Rotation by ``a`` radians about camera y (down); positive turns the optical axis towards +x (right)."""
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float64)


def look_at(position, target, up=(0.0, -1.0, 0.0)) -> np.ndarray:
    """4x4 c2w at ``position`` whose optical axis (camera z) points at ``target`` and whose camera y (down)
    points as far from ``up`` as possible (default: world -y is up, as for the cameras: x right, y down)."""
    position, target = np.asarray(position, np.float64), np.asarray(target, np.float64)
    z = target - position
    n = np.linalg.norm(z)
    if n < 1e-12:
        raise ValueError("look_at: position and target coincide")
    z /= n
    down = -np.asarray(up, np.float64)
    x = np.cross(down, z)
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("look_at: viewing direction is parallel to `up`")
    x /= np.linalg.norm(x)
    return make_pose(np.stack([x, np.cross(z, x), z], axis=1), position)


def skew(t: np.ndarray) -> np.ndarray:
    """``[t]_x`` with ``[t]_x v = t x v``: ``[..., 3]`` -> ``[..., 3, 3]``."""
    t = np.asarray(t, np.float64)
    z = np.zeros_like(t[..., 0])
    return np.stack([
        np.stack([z, -t[..., 2], t[..., 1]], -1),
        np.stack([t[..., 2], z, -t[..., 0]], -1),
        np.stack([-t[..., 1], t[..., 0], z], -1),
    ], -2)


def skew_torch(t: torch.Tensor) -> torch.Tensor:
    """Torch twin of :func:`skew`."""
    z = torch.zeros_like(t[..., 0])
    return torch.stack([
        torch.stack([z, -t[..., 2], t[..., 1]], -1),
        torch.stack([t[..., 2], z, -t[..., 0]], -1),
        torch.stack([-t[..., 1], t[..., 0], z], -1),
    ], -2)


# ----------------------------------------------------------------------------------------- intrinsics


def intrinsics_to_pixels(intr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Normalised ``[..., 4]`` fx, fy, cx, cy -> pixels."""
    return np.asarray(intr, np.float64) * np.array([width, height, width, height], np.float64)


def intrinsics_to_normalized(intr_px: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(intr_px, np.float64) / np.array([width, height, width, height], np.float64)


def intrinsics_matrix(intr_px: np.ndarray) -> np.ndarray:
    """``[..., 4]`` pixel fx, fy, cx, cy -> ``[..., 3, 3]`` K."""
    intr_px = np.asarray(intr_px, np.float64)
    k = np.zeros(intr_px.shape[:-1] + (3, 3))
    k[..., 0, 0], k[..., 1, 1] = intr_px[..., 0], intr_px[..., 1]
    k[..., 0, 2], k[..., 1, 2] = intr_px[..., 2], intr_px[..., 3]
    k[..., 2, 2] = 1.0
    return k


def intrinsics_matrix_torch(intr_px: torch.Tensor) -> torch.Tensor:
    """Torch twin of :func:`intrinsics_matrix` (same dtype and device)."""
    k = torch.zeros(*intr_px.shape[:-1], 3, 3, dtype=intr_px.dtype, device=intr_px.device)
    k[..., 0, 0], k[..., 1, 1] = intr_px[..., 0], intr_px[..., 1]
    k[..., 0, 2], k[..., 1, 2] = intr_px[..., 2], intr_px[..., 3]
    k[..., 2, 2] = 1
    return k


def pixel_centres(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(u, v)`` ``[H, W]`` float64 coordinates of every pixel centre (COLMAP: pixel (0, 0) at (0.5, 0.5))."""
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    return u, v


def unproject(u: np.ndarray, v: np.ndarray, z, intr_px) -> np.ndarray:
    """Camera-frame points ``[..., 3]`` at z-depth ``z`` seen at pixel positions ``(u, v)``; ``z = 1`` gives the
    ray directions with unit z."""
    fx, fy, cx, cy = np.asarray(intr_px, np.float64)
    z = np.broadcast_to(np.asarray(z, np.float64), np.broadcast_shapes(np.shape(u), np.shape(z)))
    return np.stack([(u - cx) / fx * z, (v - cy) / fy * z, z], axis=-1)


def backproject(depth: np.ndarray, intr_px) -> np.ndarray:
    """Metric z-depth ``[H, W]`` -> camera-frame points ``[H, W, 3]`` through the pixel centres."""
    return unproject(*pixel_centres(*depth.shape), depth, intr_px)


def project(points: np.ndarray, intr_px) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame points ``[..., 3]`` -> pixel positions ``[..., 2]`` (COLMAP pixel centres) and their z.
    Points at z <= 0 give meaningless (or non-finite) positions: filter on z."""
    fx, fy, cx, cy = np.asarray(intr_px, np.float64)
    p = np.asarray(points, np.float64)
    z = p[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.stack([fx * p[..., 0] / z + cx, fy * p[..., 1] / z + cy], axis=-1)
    return uv, z


@dataclass(frozen=True)
class ResizeCrop:
    """Resize keeping the aspect ratio so the image covers (height, width), then centre-crop.

    As RealCam-I2V's loaders (``_resize_for_rectangle_crop`` in the authors' ``realestate10k.py``): fx, fy
    scale with the *resized* size, cx, cy with the *crop* size (not shifted by the crop offset), which for
    cx = cy = 0.5 is the centre.
    """

    resized_hw: tuple[int, int]
    top: int
    left: int
    out_hw: tuple[int, int]

    @classmethod
    def plan(cls, src_hw: tuple[int, int], out_hw: tuple[int, int]) -> ResizeCrop:
        (sh, sw), (h, w) = src_hw, out_hw
        if sw / sh > w / h:
            resized = (h, int(sw * h / sh))
        else:
            resized = (int(sh * w / sw), w)
        return cls(resized, (resized[0] - h) // 2, (resized[1] - w) // 2, (h, w))

    def intrinsics(self, intr_norm: np.ndarray) -> np.ndarray:
        """Normalised ``[..., 4]`` -> pixel fx, fy, cx, cy of the cropped image."""
        intr_norm = np.asarray(intr_norm, np.float64)
        (rh, rw), (h, w) = self.resized_hw, self.out_hw
        return intr_norm * np.array([rw, rh, w, h], np.float64)


# ----------------------------------------------------------------------------------------- Plücker rays


def plucker_embedding(c2w: torch.Tensor, intr_px: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Per-pixel Plücker rays ``[o x d, d]``: ``[..., 6, H, W]`` from ``c2w [..., 4, 4]`` (or 3x4) and
    pixel intrinsics ``[..., 4]``. Pixel centres at +0.5; computed in float32."""
    c2w = c2w.float()
    intr_px = intr_px.float()
    v, u = torch.meshgrid(
        torch.arange(height, device=c2w.device, dtype=torch.float32) + 0.5,
        torch.arange(width, device=c2w.device, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    fx, fy, cx, cy = (intr_px[..., i, None, None] for i in range(4))
    dirs = torch.stack([(u - cx) / fx, (v - cy) / fy, torch.ones_like(u).expand_as((u - cx) / fx)], dim=-1)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)  # [..., H, W, 3] in camera axes
    rot = c2w[..., :3, :3]
    dirs = torch.einsum("...ij,...hwj->...hwi", rot, dirs)
    origin = c2w[..., :3, 3][..., None, None, :].expand_as(dirs)
    emb = torch.cat([torch.linalg.cross(origin, dirs, dim=-1), dirs], dim=-1)
    return emb.movedim(-1, -3).contiguous()


# ----------------------------------------------------------------------------------------- interpolation
# Quaternions are (w, x, y, z) with w >= 0 here; scipy's Rotation is (x, y, z, w).


def rotmat_to_quat(rot: np.ndarray) -> np.ndarray:
    """Rotation matrices ``[..., 3, 3]`` -> unit quaternions ``[..., 4]`` (w, x, y, z), w >= 0."""
    rot = np.asarray(rot, np.float64)
    q = Rotation.from_matrix(rot.reshape(-1, 3, 3)).as_quat()[:, [3, 0, 1, 2]]
    q[q[:, 0] < 0] *= -1
    return q.reshape(rot.shape[:-2] + (4,))


def quat_to_rotmat(q: np.ndarray) -> np.ndarray:
    """Quaternions ``[..., 4]`` (w, x, y, z; normalised here) -> rotation matrices ``[..., 3, 3]``."""
    q = np.asarray(q, np.float64)
    rot = Rotation.from_quat(q.reshape(-1, 4)[:, [1, 2, 3, 0]]).as_matrix()
    return rot.reshape(q.shape[:-1] + (3, 3))


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation (a normalised 4D Gaussian, as scipy's ``Rotation.random``), drawn as
    (w, x, y, z): the same four draws give the same rotation as the synthetic clips have always had."""
    return quat_to_rotmat(rng.normal(size=4))


def ease_in_out(t: np.ndarray, a: float = 0.5, b: float = 0.5) -> np.ndarray:
    """Time warp by the cubic Bezier with control points (0,0), (a,0), (b,1), (1,1) (as the authors'
    ``camera_pose_lerp_bezier``, ``CameraControl/data/utils.py``), solved for the curve parameter by bisection
    (monotone for a, b in [0,1])."""
    t = np.asarray(t, np.float64)
    lo, hi = np.zeros_like(t), np.ones_like(t)

    def bez(s, p1, p2):
        return 3 * (1 - s) ** 2 * s * p1 + 3 * (1 - s) * s**2 * p2 + s**3

    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = bez(mid, a, b) < t
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    s = 0.5 * (lo + hi)
    return bez(s, 0.0, 1.0)


def interpolate_poses(
    key_c2w: np.ndarray,
    num_frames: int,
    key_times: np.ndarray | None = None,
    ease: bool = False,
    ease_ab: tuple[float, float] = (0.5, 0.5),
) -> np.ndarray:
    """SE(3) keyframe interpolation: rotations by slerp, camera centres linearly.

    ``key_c2w`` ``[K, 4, 4]`` at ``key_times`` (default evenly spaced in [0, 1]); returns ``num_frames``
    c2w poses at evenly spaced times in [0, 1], optionally warped by :func:`ease_in_out`. Unlike the
    authors' element-wise matrix lerp (``camera_pose_lerp``), every output rotation is orthonormal and turns
    at constant angular speed between keyframes.
    """
    key = to_4x4(key_c2w)
    k = len(key)
    if k == 0:
        raise ValueError("interpolate_poses needs at least one keyframe")
    if k == 1:
        return np.repeat(key, num_frames, axis=0)
    times = np.linspace(0.0, 1.0, k) if key_times is None else np.asarray(key_times, np.float64)
    if times.shape != (k,) or np.any(np.diff(times) <= 0):
        raise ValueError("key_times must be strictly increasing, one per keyframe")
    t = np.linspace(times[0], times[-1], num_frames)
    if ease:
        u = (t - times[0]) / (times[-1] - times[0])
        t = times[0] + ease_in_out(u, *ease_ab) * (times[-1] - times[0])
    seg = np.clip(np.searchsorted(times, t, side="right") - 1, 0, k - 2)
    local = (t - times[seg]) / (times[seg + 1] - times[seg])
    out = np.tile(np.eye(4), (num_frames, 1, 1))
    # scipy's Slerp: per segment the shorter arc at constant angular speed (as slerp of unit quaternions).
    out[:, :3, :3] = Slerp(times, Rotation.from_matrix(key[:, :3, :3]))(np.clip(t, times[0], times[-1])).as_matrix()
    centres = key[:, :3, 3]
    out[:, :3, 3] = (1 - local)[:, None] * centres[seg] + local[:, None] * centres[seg + 1]
    # Hit keyframes exactly (slerp round-trips through quaternions, off by ~1e-16).
    for i, ti in enumerate(times):
        out[np.isclose(t, ti, rtol=0, atol=1e-12)] = key[i]
    return out
