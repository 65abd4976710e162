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


def invert_rigid(m: np.ndarray) -> np.ndarray:
    """Inverse of ``[R|t]`` poses. A true matrix inverse, not ``[R^T | -R^T t]``: dataset rotations are
    orthonormal only to ~1e-8, and ``inv(c2w[k]) @ c2w[k]`` must be the identity exactly."""
    return np.linalg.inv(to_4x4(m))


def w2c_to_c2w(w2c: np.ndarray) -> np.ndarray:
    return invert_rigid(w2c)


def c2w_to_w2c(c2w: np.ndarray) -> np.ndarray:
    return invert_rigid(c2w)


def relative_to(c2w: np.ndarray, k: int = 0) -> np.ndarray:
    """``inv(c2w[k]) @ c2w[i]`` for every i: frame k becomes the identity."""
    c2w = to_4x4(c2w)
    return invert_rigid(c2w[k])[None] @ c2w


def scale_translation(c2w: np.ndarray, scale: float | np.ndarray) -> np.ndarray:
    """Multiply translations by ``scale`` (a scalar, or one per pose); rotations untouched."""
    out = to_4x4(c2w)
    out[..., :3, 3] *= np.asarray(scale, dtype=np.float64)[..., None]
    return out


def metric_c2w(w2c: np.ndarray, scale: float, ref: int = 0) -> np.ndarray:
    """Contract step 7: c2w relative to frame ``ref`` with translations in metres."""
    return scale_translation(relative_to(w2c_to_c2w(w2c), ref), scale)


def camera_centres(c2w: np.ndarray) -> np.ndarray:
    return to_4x4(c2w)[..., :3, 3]


def orthonormality_error(rot: np.ndarray) -> np.ndarray:
    """max |R R^T - I| per rotation; also catches reflections via |det - 1|."""
    rot = np.asarray(rot, dtype=np.float64)
    eye = np.eye(3)
    err = np.abs(rot @ np.swapaxes(rot, -1, -2) - eye).max(axis=(-1, -2))
    return np.maximum(err, np.abs(np.linalg.det(rot) - 1.0))


def rotation_angle(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """Geodesic angle (radians) between rotations, ``acos((tr(R1^T R2) - 1) / 2)``."""
    tr = np.einsum("...ji,...ji->...", np.asarray(r1, np.float64), np.asarray(r2, np.float64))
    return np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0))


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


@dataclass(frozen=True)
class ResizeCrop:
    """Resize keeping the aspect ratio so the image covers (height, width), then centre-crop.

    RealCam-I2V's loaders (reference §1.6): fx, fy scale with the *resized* size, cx, cy with the
    *crop* size (not shifted by the crop offset), which for cx = cy = 0.5 is the centre.
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


def rotmat_to_quat(rot: np.ndarray) -> np.ndarray:
    """Rotation matrices ``[..., 3, 3]`` -> unit quaternions ``[..., 4]`` (w, x, y, z), w >= 0."""
    rot = np.asarray(rot, np.float64)
    flat = rot.reshape(-1, 3, 3)
    q = np.empty((len(flat), 4))
    for n, m in enumerate(flat):
        tr = np.trace(m)
        # Branch on the largest diagonal term for numerical stability.
        if tr > 0:
            s = 2.0 * np.sqrt(tr + 1.0)
            q[n] = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
        else:
            i = int(np.argmax(np.diag(m)))
            j, k = (i + 1) % 3, (i + 2) % 3
            s = 2.0 * np.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
            q[n, 0] = (m[k, j] - m[j, k]) / s
            q[n, 1 + i] = 0.25 * s
            q[n, 1 + j] = (m[j, i] + m[i, j]) / s
            q[n, 1 + k] = (m[k, i] + m[i, k]) / s
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    q[q[:, 0] < 0] *= -1
    return q.reshape(rot.shape[:-2] + (4,))


def quat_to_rotmat(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def slerp(q0: np.ndarray, q1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical linear interpolation along the shorter arc; ``t`` broadcasts against the quaternions."""
    q0, q1 = np.asarray(q0, np.float64), np.asarray(q1, np.float64)
    t = np.asarray(t, np.float64)[..., None]
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)
    dot = np.abs(dot)
    theta = np.arccos(np.clip(dot, -1.0, 1.0))
    sin = np.sin(theta)
    small = sin < 1e-9
    safe = np.where(small, 1.0, sin)
    a = np.where(small, 1.0 - t, np.sin((1.0 - t) * theta) / safe)
    b = np.where(small, t, np.sin(t * theta) / safe)
    q = a * q0 + b * q1
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def ease_in_out(t: np.ndarray, a: float = 0.5, b: float = 0.5) -> np.ndarray:
    """Time warp by the cubic Bezier with control points (0,0), (a,0), (b,1), (1,1) (as the reference's
    ``camera_pose_lerp_bezier``), solved for the curve parameter by bisection (monotone for a, b in [0,1])."""
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
    reference's element-wise matrix lerp, every output rotation is orthonormal and turns at constant
    angular speed between keyframes.
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
    quats = rotmat_to_quat(key[:, :3, :3])
    out = np.tile(np.eye(4), (num_frames, 1, 1))
    out[:, :3, :3] = quat_to_rotmat(slerp(quats[seg], quats[seg + 1], local))
    centres = key[:, :3, 3]
    out[:, :3, 3] = (1 - local)[:, None] * centres[seg] + local[:, None] * centres[seg + 1]
    # Hit keyframes exactly (slerp round-trips through quaternions, off by ~1e-16).
    for i, ti in enumerate(times):
        out[np.isclose(t, ti, rtol=0, atol=1e-12)] = key[i]
    return out
