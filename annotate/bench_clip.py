"""Per-clip benchmark in CPU-seconds per frame: today's and the previous default pipeline on the same clip.

    python -m annotate.bench_clip --out bench/annotate.json [--frames 150 --width 640 --height 360 --clips 2]
        [--pipelines sequential keyframes] [--sweep] [--colmap-cli]

Clips are rendered by ``annotate.synth`` along real RealEstate10K trajectories (``annotate/data/re10k_poses``)
with exact metric depth, cached under ``bench/clips_...``. Each pipeline runs the CPU side of the annotation
of a clip: decode, triangulation (``annotate.triangulate``), metric depth at the keypoints, the visibility test
and the frame and clip scales. Cost is process CPU time (all threads, plus children) per frame, because wall
time on a shared machine is noise; the depth *model* (a GPU, ``make bench-gpu``) is not part of it. Accuracy
beside it: clip and per-frame scale errors against the truth with the exact depth and with the noisy depth of
the tests (x lognormal(0, 0.1), 5% outlier pixels), and the number of frames with a valid scale.
``--colmap-cli`` adds Debian's COLMAP 3.8 command-line chain (sequential matcher) as an outside reference;
``--sweep`` maps the keyframes pipeline's knobs.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pycolmap
from PIL import Image

from annotate.camera import intrinsics_to_pixels, rotmat_to_quat
from annotate.command import Command
from annotate.depth import depth_at_keypoints
from annotate.files import write_json
from annotate.re10k import read_camera_file
from annotate.scale import clip_statistics, frame_scales, point_ratios
from annotate.synth import SynthConfig, generate, load_ground_truth, read_manifest_rows
from annotate.triangulate import SfmConfig, cpu_seconds, triangulate, visible_ratios
from annotate.video import read_frames

MIN_POINTS = 20  # ScaleConfig.min_points


@dataclass
class BenchClipConfig:
    out: str = "bench/annotate.json"  # the JSON result
    clip_dir: str = ""  # rendered clips, cached ('' = bench/clips_re10k_{frames}_{width}x{height})
    clips: int = 2  # clips along different RealEstate10K trajectories
    frames: int = 150  # frames per clip
    width: int = 640  # frame width in pixels
    height: int = 360  # frame height in pixels
    seed: int = 5  # synth seed of the clips
    # sequential = the default before issue 15, keyframes = the default now
    pipelines: list[Literal["sequential", "keyframes"]] = field(default_factory=lambda: ["sequential", "keyframes"])
    sweep: bool = False  # also one-knob variations of the keyframes pipeline
    colmap_cli: bool = False  # also Debian's COLMAP 3.8 command-line chain
    colmap: str = "colmap"  # COLMAP executable for --colmap-cli


def make_clips(folder: Path, clips: int, frames: int, width: int, height: int, seed: int) -> list[dict]:
    if not (folder / "manifest.csv").exists():
        generate(SynthConfig(out=str(folder), clips=clips, frames=frames, width=width, height=height, seed=seed,
                             trajectories=["re10k"], supersample=1, workers=0))
    truth = load_ground_truth(folder)
    rows = []
    for row in read_manifest_rows(folder / "manifest.csv")[:clips]:
        row = {k: str(folder / v) if k.endswith("_path") else v for k, v in row.items()}
        row["true_scale"] = truth[row["clip_id"]]["scale"]
        row["trajectory"] = truth[row["clip_id"]]["source"]
        rows.append(row)
    return rows


def noisy_depth(depth: np.ndarray, seed: int = 0) -> np.ndarray:
    """The tests' noisy depth: x lognormal(0, 0.1) per pixel, 5% of the pixels uniform in 0.2-15 m."""
    rng = np.random.default_rng(seed)
    noisy = depth * np.exp(rng.normal(0.0, 0.1, size=depth.shape))
    out = rng.random(depth.shape) < 0.05
    noisy[out] = rng.uniform(0.2, 15.0, size=out.sum())
    return noisy.astype(np.float32)


def scales(frame, xy, z, projected, depth: np.ndarray, hw, true_scale: float, tol: float = 0.3) -> dict:
    """Depth at the keypoints, ratios, the visibility test, frame and clip scales, errors against the truth."""
    metric = depth_at_keypoints(frame, xy, hw, lambda ids: depth[ids], 8)
    ratios = point_ratios(metric, z, None)
    if projected is not None:
        ratios = visible_ratios(frame, ratios, projected, len(depth), MIN_POINTS, tol)
    fs, _ = frame_scales(frame, ratios, len(depth), MIN_POINTS)
    valid = np.isfinite(fs)
    scale = clip_statistics(fs)[0] if valid.any() else float("nan")
    err = np.abs(fs[valid] / true_scale - 1)
    return {"scale": scale, "scale_error": abs(scale / true_scale - 1),
            "frame_error_median": float(np.median(err)) if len(err) else float("nan"),
            "frame_error_max": float(err.max()) if len(err) else float("nan"),
            "valid_frames": int(valid.sum()), "frames": len(fs)}


def run_pipeline(row: dict, cfg: SfmConfig) -> dict:
    """One clip through one pipeline; CPU and wall seconds of every step."""
    depth = np.load(row["depth_path"])["depth"]  # loaded outside the timing: in a real run a GPU computes it
    noisy = noisy_depth(depth)
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    traj = read_camera_file(row["pose_path"])
    frames = read_frames(row["video_path"])
    cpu_decode, wall_decode = cpu_seconds() - cpu0, time.perf_counter() - t0
    obs = triangulate(frames, traj.intrinsics, traj.w2c, cfg)
    cpu1, t1 = cpu_seconds(), time.perf_counter()
    exact = scales(obs.frame, obs.xy, obs.z, obs.projected, depth, frames.shape[1:3], row["true_scale"],
                   cfg.visibility_tol)
    cpu_scale, wall_scale = cpu_seconds() - cpu1, time.perf_counter() - t1
    noisy_r = scales(obs.frame, obs.xy, obs.z, obs.projected, noisy, frames.shape[1:3], row["true_scale"],
                     cfg.visibility_tol)
    cpu = {"decode": cpu_decode, **obs.cpu_seconds, "depth_and_scale": cpu_scale}
    wall = {"decode": wall_decode, **obs.timings, "depth_and_scale": wall_scale}
    nf = len(frames)
    return {"clip_id": row["clip_id"], "trajectory": row["trajectory"], "config": asdict(cfg),
            "cpu_s": sum(cpu.values()), "cpu_s_per_frame": sum(cpu.values()) / nf, "cpu_seconds": cpu,
            "wall_s": sum(wall.values()), "wall_seconds": wall, "num_points": obs.num_points,
            "observations": len(obs.frame), "projected_observations": int(np.sum(obs.projected)),
            "keyframes": len(obs.keyframes) if obs.keyframes is not None else nf,
            "exact_depth": exact, "noisy_depth": noisy_r}


def summarize(runs: list[dict]) -> dict:
    """Over clips: CPU-s per frame of all frames together, worst errors, valid frames in total."""
    frames = sum(r["exact_depth"]["frames"] for r in runs)
    out = {"clips": len(runs), "frames": frames, "cpu_s_per_frame": sum(r["cpu_s"] for r in runs) / frames,
           "wall_s_per_frame": sum(r["wall_s"] for r in runs) / frames}
    for d in ("exact_depth", "noisy_depth"):
        out[d] = {"scale_error_max": max(r[d]["scale_error"] for r in runs),
                  "frame_error_median_max": max(r[d]["frame_error_median"] for r in runs),
                  "valid_frames": sum(r[d]["valid_frames"] for r in runs)}
    steps: dict[str, float] = {}
    for r in runs:
        for k, v in r["cpu_seconds"].items():
            steps[k] = steps.get(k, 0.0) + v / frames
    out["cpu_s_per_frame_by_step"] = steps
    return out


def _line(name: str, s: dict) -> str:
    e, n = s["exact_depth"], s["noisy_depth"]
    return (f"{name:>12}: {s['cpu_s_per_frame']:.3f} CPU-s/frame | exact depth: clip error <= "
            f"{e['scale_error_max']:.3%}, frame median <= {e['frame_error_median_max']:.3%}, "
            f"{e['valid_frames']}/{s['frames']} valid | noisy: clip <= {n['scale_error_max']:.3%}, frame median <= "
            f"{n['frame_error_median_max']:.3%}, {n['valid_frames']} valid")


def run_colmap_cli(row: dict, colmap: str = "colmap") -> dict:
    """The reference chain through COLMAP's command-line tools, default options, same intrinsics and poses."""
    traj = read_camera_file(row["pose_path"])
    tmp = Path(tempfile.mkdtemp(prefix="realcam_colmap_cli_"))
    cpu0 = cpu_seconds()
    try:
        t0 = time.perf_counter()
        frames = read_frames(row["video_path"])
        t_decode = time.perf_counter() - t0
        nf, h, w = frames.shape[:3]
        t0 = time.perf_counter()
        (tmp / "images").mkdir()
        names = [f"{i:06d}.png" for i in range(nf)]
        for n, img in zip(names, frames):
            Image.fromarray(img).save(tmp / "images" / n, compress_level=1)
        t_write = time.perf_counter() - t0
        intr = intrinsics_to_pixels(traj.intrinsics[0], w, h)
        db = tmp / "database.db"
        run = lambda *args: subprocess.run([colmap, *args], check=True, capture_output=True, text=True)  # noqa: E731
        t0 = time.perf_counter()
        run("feature_extractor", "--database_path", str(db), "--image_path", str(tmp / "images"),
            "--ImageReader.camera_model", "PINHOLE", "--ImageReader.single_camera", "1",
            "--ImageReader.camera_params", ",".join(f"{v:.9g}" for v in intr), "--SiftExtraction.use_gpu", "0")
        t_extract = time.perf_counter() - t0
        t0 = time.perf_counter()
        run("sequential_matcher", "--database_path", str(db), "--SiftMatching.use_gpu", "0")
        t_match = time.perf_counter() - t0
        # A text model with the known cameras and poses, numbered as the database numbered the images.
        with sqlite3.connect(db) as con:
            ids = dict(con.execute("SELECT name, image_id FROM images").fetchall())
            cam_id = con.execute("SELECT camera_id FROM cameras").fetchone()[0]
        model = tmp / "known"
        model.mkdir()
        (model / "cameras.txt").write_text(f"{cam_id} PINHOLE {w} {h} " + " ".join(f"{v:.12g}" for v in intr) + "\n")
        lines = []
        for i, n in enumerate(names):
            q = rotmat_to_quat(traj.w2c[i, :, :3])
            t = traj.w2c[i, :, 3]
            lines.append(f"{ids[n]} " + " ".join(f"{v:.12g}" for v in (*q, *t)) + f" {cam_id} {n}\n")
        (model / "images.txt").write_text("\n".join(lines) + "\n")
        (model / "points3D.txt").write_text("")
        out = tmp / "triangulated"
        out.mkdir()
        t0 = time.perf_counter()
        run("point_triangulator", "--database_path", str(db), "--image_path", str(tmp / "images"),
            "--input_path", str(model), "--output_path", str(out), "--Mapper.ba_refine_focal_length", "0",
            "--Mapper.ba_refine_principal_point", "0", "--Mapper.ba_refine_extra_params", "0")
        t_tri = time.perf_counter() - t0
        rec = pycolmap.Reconstruction(str(out))
        index = {n: i for i, n in enumerate(names)}
        fr, xy, z = [], [], []
        for image in rec.images.values():
            for p in image.get_observation_points2D():
                cam = image.cam_from_world() * rec.points3D[p.point3D_id].xyz[None]
                fr.append(index[image.name])
                xy.append(p.xy)
                z.append(cam[0, 2])
        depth = np.load(row["depth_path"])["depth"]
        t0 = time.perf_counter()
        exact = scales(np.array(fr), np.array(xy, np.float32), np.array(z, np.float32), None, depth, (h, w),
                       row["true_scale"])
        times = {"decode": t_decode, "write_images": t_write, "extract": t_extract, "match": t_match,
                 "triangulate": t_tri, "depth_and_scale": time.perf_counter() - t0}
        cpu = cpu_seconds() - cpu0
        version = run("help").stdout.strip().splitlines()[0]
        return {"tool": version.strip(), "seconds": times, "wall_s": sum(times.values()), "cpu_s": cpu,
                "cpu_s_per_frame": cpu / nf, "num_points": rec.num_points3D(), "exact_depth": exact}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


SWEEP = [dict(keyframe_stride=3), dict(keyframe_stride=8), dict(key_overlap=2), dict(key_overlap=6),
         dict(max_side=480), dict(keyframe_max_features=2048), dict(projected_points=200)]


def main(a: BenchClipConfig) -> dict:
    """Render (or reuse) the clips, run every pipeline on them, write ``a.out``; the result."""
    folder = Path(a.clip_dir or f"bench/clips_re10k_{a.frames}_{a.width}x{a.height}")
    rows = make_clips(folder, a.clips, a.frames, a.width, a.height, a.seed)
    result = {"clips": [{"clip_id": r["clip_id"], "trajectory": r["trajectory"], "true_scale": r["true_scale"]}
                        for r in rows],
              "frames": a.frames, "width": a.width, "height": a.height, "pycolmap": pycolmap.__version__,
              "cost": "process CPU seconds (user + system, all threads, children) per frame: decode, "
                      "triangulation, depth at the keypoints (precomputed maps), visibility test, scales",
              "default_pipeline": SfmConfig().pipeline, "pipelines": {}}
    for name in a.pipelines:
        runs = [run_pipeline(r, SfmConfig(pipeline=name)) for r in rows]
        result["pipelines"][name] = {"summary": summarize(runs), "runs": runs}
        print(_line(name, result["pipelines"][name]["summary"]))
    if {"sequential", "keyframes"} <= set(result["pipelines"]):
        c = {k: result["pipelines"][k]["summary"]["cpu_s_per_frame"] for k in ("sequential", "keyframes")}
        result["keyframes_cpu_reduction"] = c["sequential"] / c["keyframes"]
        print(f"keyframes: {result['keyframes_cpu_reduction']:.1f}x fewer CPU-s per frame than sequential")
    if a.colmap_cli:
        if shutil.which(a.colmap):
            ref = [run_colmap_cli(r, a.colmap) for r in rows]
            result["colmap_cli"] = ref
            cpf = sum(r["cpu_s"] for r in ref) / (a.frames * len(ref))
            print(f"{'COLMAP CLI':>12}: {cpf:.3f} CPU-s/frame, clip errors "
                  + ", ".join(f"{r['exact_depth']['scale_error']:.3%}" for r in ref))
        else:
            print(f"{a.colmap!r} not found: install Debian's colmap (apt-get install colmap) for the reference chain")
    if a.sweep:
        result["sweep"] = []
        for knobs in SWEEP:
            runs = [run_pipeline(r, replace(SfmConfig(pipeline="keyframes"), **knobs)) for r in rows]
            result["sweep"].append({"knobs": knobs, "summary": summarize(runs)})
            print(_line("sweep", result["sweep"][-1]["summary"]), knobs)
    print(f"wrote {write_json(a.out, result)}")
    return result


def command() -> Command:
    return Command(BenchClipConfig, lambda cfg, args: main(cfg), "python -m annotate.bench_clip",
                   __doc__.split("\n\n")[0], print_result=False)


def cli(argv: list[str] | None = None) -> int:
    return command().main(argv)


if __name__ == "__main__":
    sys.exit(cli())
