"""Synthetic ground-truth clips: textured rooms in metres, ray cast with numpy along known trajectories.

Each clip is written exactly in the annotation contract's input layout: a RealEstate10K camera file in
*relative* units (the metric world scaled by ``1 / scale`` and moved by a random rigid transform, as
RealEstate10K's SfM worlds are), an mp4 with one frame per pose line, the exact metric z-depth as
``.npz`` (array ``depth``), a manifest CSV and ``ground_truth.json`` holding each clip's true scale, so
``c2w_rel * scale == the rendered metric trajectory``.

    python -m annotate synth OUT --clips 8 --frames 28 --width 320 --height 180 --seed 0 [key=value ...]

World axes follow the cameras (x right, y down, z forward): the floor is at y = +1.5 m, 1.5 m below a
camera at height 0.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from annotate.camera import (
    c2w_to_w2c,
    camera_centres,
    interpolate_poses,
    intrinsics_to_pixels,
    look_at,
    make_pose,
    pixel_centres,
    random_rotation,
    relative_to,
    rot_y,
    scale_translation,
    to_4x4,
    unproject,
    w2c_to_c2w,
)
from annotate.command import Command
from annotate.files import atomic_path, atomic_write_text
from annotate.log import progress
from annotate.manifest import write_manifest
from annotate.re10k import CameraTrajectory, read_camera_file, write_camera_file
from annotate.video import write_video

POSE_DIR = Path(__file__).parent / "data" / "re10k_poses"
GENERATED = ("walk", "pan", "orbit", "zoom")
Trajectory = Literal["re10k", "walk", "pan", "orbit", "zoom"]  # "re10k": the real paths in POSE_DIR


@dataclass
class SynthConfig:
    out: str = "data/sample"  # folder to write the clips, manifest.csv and ground_truth.json into
    clips: int = 8  # number of clips
    frames: int = 28  # frames per clip
    width: int = 320  # frame width in pixels
    height: int = 180  # frame height in pixels
    seed: int = 0  # clip i is rendered from the random stream (seed, i)
    fx_norm: float = 0.5  # normalised focal length (by width) for generated trajectories; ~90 deg horizontal FOV
    scale_range: tuple[float, float] = (0.3, 3.0)  # true metric/relative scale, log-uniform
    trajectories: list[Trajectory] = field(default_factory=lambda: ["re10k", *GENERATED])  # cycled over clips
    test_every: int = 4  # every n-th clip goes to the `test` split
    workers: int = 0  # processes rendering clips in parallel; 0 = one per CPU core
    supersample: int = 1  # rays per pixel side for colour (depth is exact at pixel centres)
    fps: float = 30.0  # frame rate of the videos and the camera files' timestamps


# ----------------------------------------------------------------------------------------- scene


@dataclass
class Room:
    lo: np.ndarray  # room box corners, metres
    hi: np.ndarray
    boxes: np.ndarray  # [B, 2, 3] furniture boxes (lo, hi)
    perms: np.ndarray  # [3, 512] hash tables of the colour noise
    tints: np.ndarray  # [7 + B, 3] base colour per surface

    @classmethod
    def random(cls, rng: np.random.Generator, n_boxes: int = 6) -> Room:
        lo = np.array([-rng.uniform(3.5, 4.5), -rng.uniform(1.2, 1.5), -rng.uniform(5.0, 6.0)])
        hi = np.array([rng.uniform(3.5, 4.5), 1.5, rng.uniform(5.0, 6.0)])
        boxes = []
        for _ in range(n_boxes):
            size = rng.uniform([0.5, 0.4, 0.5], [1.6, 1.2, 1.6])
            # Along the walls, leaving the central corridor |x| < 1.6 where the cameras move.
            side = rng.choice([-1, 1])
            x = side * rng.uniform(1.8, hi[0] - 0.2 - size[0] / 2)
            z = rng.uniform(lo[2] + 0.8, hi[2] - 0.8)
            c = np.array([x, hi[1] - size[1] / 2, z])
            boxes.append([c - size / 2, c + size / 2])
        perms = np.stack([np.tile(rng.permutation(256), 2) for _ in range(3)])
        tints = rng.uniform(0.25, 1.0, size=(7 + n_boxes, 3))
        return cls(lo, hi, np.array(boxes), perms, tints)

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ray parameter t of the first hit (dirs need not be unit) and the surface id of every ray."""
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / dirs
            # Inside the room every ray leaves through the nearest exit plane.
            t_exit = np.where(inv > 0, (self.hi - origin) * inv, (self.lo - origin) * inv)
            t_exit = np.where(np.isfinite(t_exit), t_exit, np.inf)
            axis = np.argmin(t_exit, axis=1)
            t = t_exit[np.arange(len(dirs)), axis]
            sign = np.take_along_axis(dirs, axis[:, None], 1)[:, 0] > 0
            surface = axis * 2 + sign  # 0..5: -x +x -y +y -z +z walls
            for b, (blo, bhi) in enumerate(self.boxes):
                t1, t2 = (blo - origin) * inv, (bhi - origin) * inv
                # 0 * inf gives NaN for rays parallel to a slab inside it: NaN means "no constraint".
                tnear = np.nan_to_num(np.minimum(t1, t2), nan=-np.inf).max(axis=1)
                tfar = np.nan_to_num(np.maximum(t1, t2), nan=np.inf).min(axis=1)
                hit = (tnear <= tfar) & (tnear > 1e-6) & (tnear < t)
                t = np.where(hit, tnear, t)
                surface = np.where(hit, 7 + b, surface)
        return t, surface

    def colour(self, points: np.ndarray, surface: np.ndarray) -> np.ndarray:
        """View-independent solid texture: multi-octave value noise, contrast-stretched, per-surface tint."""
        rgb = np.zeros((len(points), 3))
        for c in range(3):
            acc = np.zeros(len(points))
            for freq, amp in ((0.7, 0.35), (1.7, 0.3), (3.9, 0.25), (8.3, 0.2)):
                acc += amp * _value_noise(points * freq + 17.0 * c, self.perms[c])
            rgb[:, c] = acc
        # Sharp-edged bands add corners that SIFT likes.
        stripes = (np.floor(points * 2.3).sum(axis=1) % 2) * 0.25
        lum = 1.0 / (1.0 + np.exp(-6.0 * (rgb - rgb.mean())))
        return np.clip(lum * self.tints[surface] + stripes[:, None] * self.tints[surface][:, ::-1], 0, 1)


def _value_noise(p: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Trilinear value noise in [0, 1] on the integer lattice, hashed through a permutation table."""
    i = np.floor(p).astype(np.int64)
    f = p - i
    f = f * f * (3.0 - 2.0 * f)
    i &= 255
    out = np.zeros(len(p))
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                h = perm[perm[perm[i[:, 0] + dx] + i[:, 1] + dy] + i[:, 2] + dz]
                wx, wy, wz = (f[:, k] if d else 1 - f[:, k] for k, d in enumerate((dx, dy, dz)))
                out += wx * wy * wz * h / 255.0
    return out


def render(room: Room, c2w: np.ndarray, intr_px: np.ndarray, width: int, height: int,
           supersample: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """One view: uint8 RGB ``[H, W, 3]`` and exact metric z-depth ``[H, W]`` at pixel centres."""
    c2w = to_4x4(c2w)

    def cast(us, vs):
        dirs = unproject(us, vs, 1.0, intr_px).reshape(-1, 3) @ c2w[:3, :3].T
        t, surf = room.intersect(c2w[:3, 3], dirs)
        return t, surf, c2w[:3, 3] + t[:, None] * dirs

    u, v = pixel_centres(height, width)
    depth, surf, pts = cast(u, v)  # camera-space direction has z = 1, so t is the z-depth
    s = supersample
    if s == 1:
        rgb = room.colour(pts, surf)
    else:
        offs = (np.arange(s) + 0.5) / s - 0.5
        rgb = sum(room.colour(*cast(u + ox, v + oy)[2:0:-1]) for oy in offs for ox in offs) / (s * s)
    img = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(height, width, 3)
    return img, depth.reshape(height, width).astype(np.float32)


# ----------------------------------------------------------------------------------------- trajectories


def make_trajectory(kind: str, rng: np.random.Generator, room: Room, num_frames: int,
                    re10k_file: Path | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Metric c2w ``[F, 4, 4]`` in room coordinates, plus normalised intrinsics for RealEstate10K paths."""
    start = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.15, 0.15), room.lo[2] + rng.uniform(1.3, 1.8)])
    heading = rng.uniform(-0.25, 0.25)
    r0 = rot_y(heading)
    intr = None
    if kind == "re10k":
        traj = read_camera_file(re10k_file)
        rel = relative_to(w2c_to_c2w(traj.w2c), 0)
        extent = np.linalg.norm(camera_centres(rel), axis=1).max()
        rel = scale_translation(rel, rng.uniform(0.8, 1.6) / max(extent, 1e-9))  # metres moved along the path
        keys = make_pose(r0, start)[None] @ rel
        intr = traj.intrinsics.mean(axis=0)
    elif kind == "walk":
        dist = rng.uniform(1.2, 2.2)
        n = 5
        s = np.linspace(0, 1, n)
        keys = np.stack([make_pose(r0 @ rot_y(0.12 * np.sin(3 * si)),
                                   start + r0 @ np.array([0.25 * np.sin(2 * si), 0.05 * np.sin(7 * si), dist * si]))
                         for si in s])
    elif kind == "pan":
        sweep = rng.uniform(0.35, 0.6) * rng.choice([-1, 1])
        side = -np.sign(sweep) * rng.uniform(0.5, 0.9)  # translation gives parallax for triangulation
        keys = np.stack([make_pose(r0 @ rot_y(sweep * si), start + r0 @ np.array([side * si, 0, 0.3 * si]))
                         for si in np.linspace(0, 1, 4)])
    elif kind == "orbit":
        target = np.array([0.0, 0.4, start[2] + rng.uniform(3.0, 4.0)])
        radius = np.linalg.norm(target[[0, 2]] - start[[0, 2]])
        a0 = np.arctan2(start[0] - target[0], start[2] - target[2])
        arc = rng.uniform(0.35, 0.55) * rng.choice([-1, 1])
        keys = []
        for a in np.linspace(a0, a0 + arc, 5):
            c = np.array([target[0] + radius * np.sin(a), start[1], target[2] + radius * np.cos(a)])
            keys.append(look_at(c, target))
        keys = np.stack(keys)
    elif kind == "zoom":
        dist = rng.uniform(1.0, 2.0)
        keys = np.stack([make_pose(r0, start), make_pose(r0, start + r0 @ np.array([0, 0, dist]))])
    else:
        raise ValueError(f"unknown trajectory kind {kind!r}; choose from re10k, {', '.join(GENERATED)}")
    return interpolate_poses(keys, num_frames, ease=kind in ("zoom", "walk")), intr


# ----------------------------------------------------------------------------------------- clips


def random_rigid(rng: np.random.Generator) -> np.ndarray:
    return make_pose(random_rotation(rng), rng.normal(scale=2.0, size=3))


def make_clip(cfg: SynthConfig, index: int, out: Path) -> dict:
    """Render clip ``index`` into ``out`` and return its manifest row plus ground truth."""
    rng = np.random.default_rng([cfg.seed, index])
    kinds = cfg.trajectories
    kind = kinds[index % len(kinds)]
    pose_files = sorted(POSE_DIR.glob("*.txt"))
    src = pose_files[(index // len(kinds)) % len(pose_files)] if kind == "re10k" else None
    room = Room.random(rng)
    c2w_metric, intr_norm = make_trajectory(kind, rng, room, cfg.frames, src)
    w, h = cfg.width, cfg.height
    if intr_norm is None:
        intr_norm = np.array([cfg.fx_norm, cfg.fx_norm * w / h, 0.5, 0.5])
    intr_px = intrinsics_to_pixels(intr_norm, w, h)
    frames, depths = zip(*(render(room, c, intr_px, w, h, cfg.supersample) for c in c2w_metric))

    scale = float(np.exp(rng.uniform(*np.log(cfg.scale_range))))
    # The camera file's world: the room moved by a random rigid transform and shrunk by 1/scale.
    world = random_rigid(rng)
    c2w_file = world[None] @ c2w_metric
    c2w_file[:, :3, 3] /= scale
    clip_id = f"synth_{cfg.seed:03d}_{index:04d}_{kind}"
    split = "test" if cfg.test_every and index % cfg.test_every == cfg.test_every - 1 else "train"
    stamps = (np.arange(cfg.frames) * 1e6 / cfg.fps).astype(np.int64) + 1_000_000
    traj = CameraTrajectory(f"https://www.youtube.com/watch?v=synth{cfg.seed:03d}{index:04d}", stamps,
                            np.tile(intr_norm, (cfg.frames, 1)), c2w_to_w2c(c2w_file)[:, :3, :])
    for sub in ("cameras", "videos", "depth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    write_camera_file(out / "cameras" / f"{clip_id}.txt", traj)
    write_video(out / "videos" / f"{clip_id}.mp4", np.stack(frames), fps=cfg.fps)
    with atomic_path(out / "depth" / f"{clip_id}.npz", keep_suffix=True) as tmp:
        np.savez_compressed(tmp, depth=np.stack(depths))
    row = {"clip_id": clip_id, "split": split, "pose_path": f"cameras/{clip_id}.txt",
           "video_path": f"videos/{clip_id}.mp4", "depth_path": f"depth/{clip_id}.npz"}
    truth = {"scale": scale, "trajectory": kind, "source": src.name if src else "",
             "num_frames": cfg.frames, "width": w, "height": h,
             "c2w_metric_rel0": relative_to(c2w_metric, 0).round(9).tolist()}
    return row | {"_truth": truth}


def generate(cfg: SynthConfig) -> Path:
    """Write ``cfg.clips`` clips, ``manifest.csv`` and ``ground_truth.json`` into ``cfg.out``."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    workers = min(cfg.workers or os.cpu_count() or 1, cfg.clips)
    bar = dict(description="rendering clips", total=cfg.clips, enabled=sys.stderr.isatty())
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor
        from functools import partial

        with ProcessPoolExecutor(workers) as pool:
            rows = list(progress(pool.map(partial(make_clip, cfg, out=out), range(cfg.clips)), **bar))
    else:
        rows = [make_clip(cfg, i, out) for i in progress(range(cfg.clips), **bar)]
    write_manifest(rows, out / "manifest.csv", ("clip_id", "split", "pose_path", "video_path", "depth_path"))
    truth = {"config": asdict(cfg), "clips": {r["clip_id"]: r["_truth"] for r in rows}}
    atomic_write_text(out / "ground_truth.json", json.dumps(truth, indent=1))
    return out


def load_ground_truth(folder: str | os.PathLike) -> dict:
    return json.loads((Path(folder) / "ground_truth.json").read_text())["clips"]


def read_manifest_rows(path: str | os.PathLike) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def main(cfg: SynthConfig) -> Path:
    """Write the clips (:func:`generate`); their folder."""
    return generate(cfg)


def _run(cfg: SynthConfig, args: argparse.Namespace) -> int:
    out = main(cfg)
    print(f"wrote {cfg.clips} clips to {out} (manifest: {out / 'manifest.csv'})")
    return 0


def command() -> Command:
    return Command(SynthConfig, _run, "python -m annotate synth", __doc__.split("\n\n")[0], positionals=("out",))


def cli(argv: list[str] | None = None) -> int:
    return command().main(argv)


if __name__ == "__main__":
    sys.exit(cli())
