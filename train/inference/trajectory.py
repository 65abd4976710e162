"""Camera trajectories for inference: presets, JSON keyframes, RealEstate10K files, loops, continuations.

Every trajectory is a list of c2w [F, 4, 4] in metres, relative to the condition camera (frame 0 is the
identity; OpenCV axes: x right, y down, z forward), plus optional per-frame pixel intrinsics [F, 4] (only the
``zoom`` preset changes them; None = the image's intrinsics). Keyframes are interpolated by
:func:`annotate.camera.interpolate_poses` (true SE(3): slerp rotations, linear centres), not the reference's
element-wise matrix lerp (``camera_pose_lerp`` in the authors' ``CameraControl/data/utils.py``).

Presets (``name`` or ``name:key=value,...``; s runs 0 -> 1 over the clip, or 0 -> 1 -> 0 with ``loop``):

    dolly:distance=0.5       move along the optical axis by `distance` metres (negative: back out)
    truck:distance=0.5       move sideways along camera x by `distance` metres (negative: left)
    pedestal:distance=0.3    move along camera y (down) by `distance` metres (negative: up)
    pan:angle=30             turn in place about camera y by `angle` degrees (positive: to the right)
    tilt:angle=15            turn in place about camera x (positive: look down)
    orbit:angle=30,radius=2  circle the point `radius` metres ahead (the scene's centre depth when radius is
                             not given) by `angle` degrees, always looking at it; positive: camera moves right
    zoom:factor=1.5          optical zoom: the camera stays put and fx, fy scale from 1 to `factor`

JSON keyframes: ``[{"t": 0, "c2w": [[...4x4...]]}, {"t": 1, "position": [x, y, z], "look_at": [x, y, z]}, ...]``
or ``{"keyframes": [...], "ease": false}``. ``t`` is any increasing time (rescaled to the clip); omitted
times are evenly spaced. ``position``/``look_at`` are metres in the condition camera's frame; ``up``
(default [0, -1, 0], i.e. camera y as close to "down" = +y as possible) may be given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annotate.camera import (  # rot_x, rot_y, make_pose, look_at: also this module's public names (editor, tests)
    c2w_to_w2c,
    interpolate_poses,
    intrinsics_to_normalized,
    intrinsics_to_pixels,
    look_at,
    make_pose,
    relative_to,
    rot_x,
    rot_y,
    scale_translation,
    to_4x4,
    w2c_to_c2w,
)
from annotate.re10k import CameraTrajectory, read_camera_file, write_camera_file

PRESETS = ("dolly", "truck", "pedestal", "pan", "tilt", "orbit", "zoom")
FPS_ORI = 30.0  # RealEstate10K timestamps: frames of a 30 fps source


@dataclass
class Trajectory:
    c2w: np.ndarray  # [F, 4, 4] metres, frame 0 = the condition camera (identity unless continuing)
    intrinsics: np.ndarray | None = None  # pixel fx fy cx cy [F, 4]; None = the image's, every frame

    def __len__(self) -> int:
        return len(self.c2w)

    def intrinsics_for(self, image_intr: np.ndarray) -> np.ndarray:
        if self.intrinsics is not None:
            return np.asarray(self.intrinsics, np.float64)
        return np.tile(np.asarray(image_intr, np.float64), (len(self), 1))

    def scaled(self, factor: float) -> Trajectory:
        """Translations x factor (the reference's trace_scale_factor); rotations untouched."""
        return Trajectory(scale_translation(self.c2w, factor), self.intrinsics)


# ------------------------------------------------------------------------------------------------ helpers


def clip_times(num_frames: int, loop: bool = False) -> np.ndarray:
    """Path parameter s of each frame: 0 -> 1, or 0 -> 1 -> 0 (out and back) when looping."""
    u = np.linspace(0.0, 1.0, num_frames)
    return 1.0 - np.abs(2.0 * u - 1.0) if loop else u


def parse_preset(spec: str) -> tuple[str, dict[str, float]]:
    name, _, rest = spec.partition(":")
    name = name.strip().lower()
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    params = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, val = item.partition("=")
        if not eq:
            raise ValueError(f"preset parameter {item!r} is not key=value")
        params[key.strip()] = float(val)
    return name, params


# ------------------------------------------------------------------------------------------------ presets


def preset_trajectory(spec: str, num_frames: int, image_intr: np.ndarray | None = None, loop: bool = False,
                      scene_depth: float | None = None, **overrides: float) -> Trajectory:
    """A named preset (see module docstring). `scene_depth` is the orbit radius when the spec gives none."""
    name, params = parse_preset(spec)
    params.update({k: float(v) for k, v in overrides.items() if v is not None})
    s = clip_times(num_frames, loop)
    poses = np.tile(np.eye(4), (num_frames, 1, 1))
    intr = None
    allowed = {"dolly": {"distance"}, "truck": {"distance"}, "pedestal": {"distance"}, "pan": {"angle"},
               "tilt": {"angle"}, "orbit": {"angle", "radius"}, "zoom": {"factor"}}[name]
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(f"preset {name} takes {sorted(allowed)}, got {sorted(unknown)}")
    if name in ("dolly", "truck", "pedestal"):
        axis = {"truck": 0, "pedestal": 1, "dolly": 2}[name]
        dist = params.get("distance", 0.3 if name == "pedestal" else 0.5)
        poses[:, axis, 3] = s * dist
    elif name in ("pan", "tilt"):
        angle = np.deg2rad(params.get("angle", 30.0 if name == "pan" else 15.0))
        rot = rot_y if name == "pan" else (lambda a: rot_x(-a))  # tilt positive: optical axis towards +y
        for i, si in enumerate(s):
            poses[i, :3, :3] = rot(si * angle)
    elif name == "orbit":
        angle = np.deg2rad(params.get("angle", 30.0))
        radius = params.get("radius", scene_depth if scene_depth is not None else 2.0)
        if radius <= 0:
            raise ValueError("orbit radius must be positive")
        centre = np.array([0.0, 0.0, radius])
        for i, si in enumerate(s):
            r = rot_y(-si * angle)  # camera moves right and turns left to keep looking at the centre
            poses[i] = make_pose(r, centre - r @ np.array([0.0, 0.0, radius]))
    elif name == "zoom":
        if image_intr is None:
            raise ValueError("the zoom preset needs the image intrinsics")
        factor = params.get("factor", 1.5)
        if factor <= 0:
            raise ValueError("zoom factor must be positive")
        intr = np.tile(np.asarray(image_intr, np.float64), (num_frames, 1))
        intr[:, :2] *= (1.0 + s * (factor - 1.0))[:, None]
    return Trajectory(poses, intr)


# ------------------------------------------------------------------------------------------------ keyframes


def keyframe_pose(kf: dict) -> np.ndarray:
    if "c2w" in kf:
        return to_4x4(np.asarray(kf["c2w"], np.float64))
    if "w2c" in kf:
        return w2c_to_c2w(np.asarray(kf["w2c"], np.float64))
    if "position" in kf and "look_at" in kf:
        return look_at(kf["position"], kf["look_at"], kf.get("up", (0.0, -1.0, 0.0)))
    raise ValueError(f"keyframe {kf} needs c2w, w2c, or position + look_at")


def keyframes_to_arrays(keyframes: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    if not keyframes:
        raise ValueError("no keyframes")
    poses = np.stack([keyframe_pose(k) for k in keyframes])
    if all("t" in k for k in keyframes):
        times = np.array([float(k["t"]) for k in keyframes])
    elif any("t" in k for k in keyframes):
        raise ValueError("give `t` for every keyframe or for none")
    else:
        times = np.arange(len(keyframes), dtype=np.float64)
    if len(times) > 1 and np.any(np.diff(times) <= 0):
        raise ValueError("keyframe times must be strictly increasing")
    return poses, times


def loop_keys(poses: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Out and back: the keyframes followed by their reverse (the turning keyframe once), times mirrored."""
    if len(poses) < 2:
        return poses, times
    back_t = 2 * times[-1] - times[-2::-1]
    return np.concatenate([poses, poses[-2::-1]]), np.concatenate([times, back_t])


def keyframe_trajectory(keyframes: list[dict], num_frames: int, loop: bool = False, ease: bool = False,
                        relative: bool = True) -> Trajectory:
    """SE(3) interpolation through the keyframes; `relative`: re-express so the first frame is the identity."""
    poses, times = keyframes_to_arrays(keyframes)
    if loop:
        poses, times = loop_keys(poses, times)
    c2w = interpolate_poses(poses, num_frames, times if len(poses) > 1 else None, ease=ease)
    if relative:
        c2w = relative_to(c2w, 0)
    return Trajectory(c2w)


def read_keyframes_json(path) -> tuple[list[dict], dict]:
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict):
        opts = {k: v for k, v in data.items() if k != "keyframes"}
        return list(data["keyframes"]), opts
    return list(data), {}


# ------------------------------------------------------------------------------------------------ RealEstate10K


def re10k_trajectory(path, num_frames: int, stride: int = 1, loop: bool = False,
                     image_hw: tuple[int, int] | None = None, use_file_intrinsics: bool = False) -> Trajectory:
    """Poses of a RealEstate10K camera file, relative to its first line, every `stride`-th line; a file too
    short for that is resampled over its full length by SE(3) interpolation (all lines as keyframes). With
    `loop` the chosen poses are followed by their reverse before resampling to `num_frames`. Translations
    stay in the file's units (multiply by a metric scale / trace scale as needed)."""
    traj = read_camera_file(path)
    return _select(relative_to(w2c_to_c2w(traj.w2c), 0), traj.intrinsics, traj.timestamps_us.astype(np.float64),
                   num_frames, stride, loop, image_hw, use_file_intrinsics)


def annotated_c2w_metric(annotation_dir, clip_id: str, num_lines: int | None = None) -> np.ndarray:
    """The clip's ``c2w_metric`` [F, 4, 4] (metres, relative to its first frame) from an annotation folder
    (annotation contract); raises ValueError naming the clip and folder when it is absent or unusable."""
    from annotate.output import read_table

    rows = [r for r in read_table(annotation_dir, ["clip_id", "status", "num_frames", "c2w_metric"]).to_pylist()
            if r["clip_id"] == clip_id]
    if not rows:
        raise ValueError(f"clip {clip_id!r} (the camera file's name) is not in the annotation folder {annotation_dir}")
    r = rows[-1]
    c2w = np.asarray(r["c2w_metric"], np.float64).reshape(-1, 4, 4) if r["c2w_metric"] else np.zeros((0, 4, 4))
    if r["status"] != "ok" or not len(c2w) or not np.isfinite(c2w).all():
        raise ValueError(f"clip {clip_id!r} in {annotation_dir} has no metric cameras (status {r['status']!r})")
    if num_lines is not None and len(c2w) != num_lines:
        raise ValueError(f"clip {clip_id!r}: the camera file has {num_lines} poses, the annotation {len(c2w)}")
    return c2w


def metric_re10k_trajectory(path, annotation_dir, num_frames: int, stride: int = 1, loop: bool = False,
                            image_hw: tuple[int, int] | None = None,
                            use_file_intrinsics: bool = False) -> Trajectory:
    """As :func:`re10k_trajectory`, in metres: the poses are the annotated ``c2w_metric`` of the clip named by
    the file's stem (same lines, same selection), so frame k of the result is c2w_metric[k * stride]."""
    traj = read_camera_file(path)
    c2w = annotated_c2w_metric(annotation_dir, Path(path).stem, len(traj.w2c))
    return _select(c2w, traj.intrinsics, traj.timestamps_us.astype(np.float64), num_frames, stride, loop,
                   image_hw, use_file_intrinsics)


def _select(c2w: np.ndarray, intr: np.ndarray, times: np.ndarray, num_frames: int, stride: int, loop: bool,
            image_hw: tuple[int, int] | None, use_file_intrinsics: bool) -> Trajectory:
    span = (num_frames - 1) * stride + 1
    if len(c2w) >= span and not loop:
        idx = np.arange(num_frames) * stride
        out, kin = c2w[idx], intr[idx]
    else:
        keys, kt = (c2w[:span], times[:span]) if len(c2w) >= span else (c2w, times)
        kin_keys = intr[: len(keys)]
        if loop:
            keys, kt = loop_keys(keys, kt)
            kin_keys = np.concatenate([kin_keys, kin_keys[-2::-1]])
        out = interpolate_poses(keys, num_frames, kt if len(keys) > 1 else None)
        grid = np.linspace(kt[0], kt[-1], num_frames)
        kin = np.stack([np.interp(grid, kt, kin_keys[:, j]) for j in range(4)], -1) if len(keys) > 1 \
            else np.repeat(kin_keys, num_frames, 0)
    intr_px = None
    if use_file_intrinsics:
        if image_hw is None:
            raise ValueError("use_file_intrinsics needs image_hw")
        intr_px = intrinsics_to_pixels(kin, image_hw[1], image_hw[0])
    return Trajectory(relative_to(out, 0), intr_px)


def to_camera_trajectory(traj: Trajectory, image_intr: np.ndarray, image_hw: tuple[int, int], stride: int = 1,
                         url: str = "realcam://generated", fps_ori: float = FPS_ORI) -> CameraTrajectory:
    """As a RealEstate10K CameraTrajectory: normalised intrinsics, w2c rows, timestamps of a 30 fps source."""
    h, w = image_hw
    intr = intrinsics_to_normalized(traj.intrinsics_for(image_intr), w, h)
    w2c = c2w_to_w2c(traj.c2w)[:, :3, :]
    stamps = np.round(np.arange(len(traj)) * stride / fps_ori * 1e6).astype(np.int64)
    return CameraTrajectory(url, stamps, intr, w2c)


def write_re10k(path, traj: Trajectory, image_intr: np.ndarray, image_hw: tuple[int, int], stride: int = 1,
                url: str = "realcam://generated") -> None:
    write_camera_file(path, to_camera_trajectory(traj, image_intr, image_hw, stride, url))


# ------------------------------------------------------------------------------------------------ continuation


def continuation_trajectory(prev_c2w: np.ndarray, num_overlap: int, motion: Trajectory) -> Trajectory:
    """Trajectory of a continuation clip: its first `num_overlap` frames are the last `num_overlap` poses of
    the previous clip (re-expressed relative to the first of them, which is the new condition frame); after
    them `motion` (relative to its own frame 0) carries on from the last overlap pose, so the clip has
    len(motion) frames: overlap + motion[1:len(motion) - num_overlap + 1]."""
    prev = to_4x4(prev_c2w)
    if not 0 < num_overlap <= len(prev):
        raise ValueError(f"num_overlap {num_overlap} must be in 1..{len(prev)}")
    tail = relative_to(prev[-num_overlap:], 0)
    n = len(motion)
    if num_overlap >= n:
        raise ValueError(f"num_overlap {num_overlap} leaves no new frames in a {n}-frame clip")
    rel = relative_to(motion.c2w, 0)
    rest = tail[-1][None] @ rel[1:n - num_overlap + 1]
    intr = None
    if motion.intrinsics is not None:
        intr = np.concatenate([np.repeat(motion.intrinsics[:1], num_overlap, 0),
                               motion.intrinsics[1:n - num_overlap + 1]])
    return Trajectory(np.concatenate([tail, rest]), intr)


# ------------------------------------------------------------------------------------------------ one entry point


def is_camera_file(spec: str) -> bool:
    """A RealEstate10K camera file (relative units unless metric scale is given), not a preset or keyframes."""
    p = Path(spec)
    return p.suffix.lower() != ".json" and p.is_file()


def load_trajectory(spec: str, num_frames: int, image_intr: np.ndarray, image_hw: tuple[int, int],
                    stride: int = 1, loop: bool = False, ease: bool | None = None,
                    scene_depth: float | None = None, annotations: str | None = None,
                    trajectory_scale: float | None = None) -> Trajectory:
    """`spec`: a preset (``orbit:angle=20``), a .json keyframe file, or a RealEstate10K .txt camera file.

    A camera file is in RealEstate10K's relative units; ``annotations`` (an annotation folder: the clip's
    ``c2w_metric``) or ``trajectory_scale`` (metres per unit) puts it in metres. Both apply to camera files only."""
    p = Path(spec)
    if is_camera_file(spec):
        if annotations is not None and trajectory_scale is not None:
            raise ValueError("give either an annotation folder or a trajectory scale for a camera file, not both")
        if annotations is not None:
            return metric_re10k_trajectory(p, annotations, num_frames, stride, loop, image_hw)
        traj = re10k_trajectory(p, num_frames, stride, loop, image_hw)
        return traj.scaled(trajectory_scale) if trajectory_scale is not None else traj
    if p.suffix.lower() == ".json" and p.exists():
        keyframes, opts = read_keyframes_json(p)
        return keyframe_trajectory(keyframes, num_frames, loop=loop or bool(opts.get("loop", False)),
                                   ease=bool(opts.get("ease", False)) if ease is None else ease)
    if p.exists():
        return re10k_trajectory(p, num_frames, stride, loop, image_hw)
    return preset_trajectory(spec, num_frames, image_intr, loop=loop, scene_depth=scene_depth)
