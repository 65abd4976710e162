"""Per-clip benchmark: our in-process pycolmap pipeline against the COLMAP command-line chain.

    python -m annotate.bench_clip --out bench/annotate.json [--frames 64 --width 640 --height 360] [--no-sweep]

One synthetic clip with exact metric depth is rendered (cached under ``bench/clip``). Our pipeline's wall
time is split into decode, extract, match, triangulate, depth and scale; the reference is Debian's
``colmap`` 3.8 (feature_extractor, sequential_matcher, point_triangulator with the same intrinsics and
poses, default options). Both give a scale that is compared with the truth. A sweep over SfM resolution,
SIFT feature count and matching overlap maps the speed/accuracy trade-off.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pycolmap
from PIL import Image

from annotate.camera import rotmat_to_quat
from annotate.depth import PrecomputedDepth, depth_at_keypoints
from annotate.files import write_json
from annotate.re10k import read_camera_file
from annotate.scale import clip_statistics, frame_scales, point_ratios
from annotate.synth import SynthConfig, generate, load_ground_truth, read_manifest_rows
from annotate.triangulate import SfmConfig, triangulate
from annotate.video import read_frames


def make_clip(folder: Path, frames: int, width: int, height: int, seed: int) -> dict:
    if not (folder / "manifest.csv").exists():
        generate(SynthConfig(out=str(folder), clips=1, frames=frames, width=width, height=height, seed=seed,
                             trajectories=["walk"], supersample=2, workers=1))
    row = read_manifest_rows(folder / "manifest.csv")[0]
    row = {k: str(folder / v) if k.endswith("_path") else v for k, v in row.items()}
    row["true_scale"] = load_ground_truth(folder)[row["clip_id"]]["scale"]
    return row


def scale_from(frame_ids, xy, z, row, hw, nf, min_points=20) -> tuple[float, float, dict]:
    t0 = time.perf_counter()
    depth = PrecomputedDepth(row["depth_path"], nf)
    metric = depth_at_keypoints(frame_ids, xy, hw, depth.maps, 8)
    t_depth = time.perf_counter() - t0
    t0 = time.perf_counter()
    scales, _ = frame_scales(frame_ids, point_ratios(metric, z, None), nf, min_points)
    scale = clip_statistics(scales)[0]
    t_scale = time.perf_counter() - t0
    frame_err = float(np.nanmedian(np.abs(scales / row["true_scale"] - 1)))
    return scale, frame_err, {"depth": t_depth, "scale": t_scale}


def run_ours(row: dict, cfg: SfmConfig) -> dict:
    t0 = time.perf_counter()
    traj = read_camera_file(row["pose_path"])
    frames = read_frames(row["video_path"])
    t_decode = time.perf_counter() - t0
    obs = triangulate(frames, traj.intrinsics, traj.w2c, cfg)
    scale, frame_err, t = scale_from(obs.frame, obs.xy, obs.z, row, frames.shape[1:3], len(frames))
    times = {"decode": t_decode, "write_images": obs.timings["write_images"], "extract": obs.timings["extract"],
             "match": obs.timings["match"], "triangulate": obs.timings["triangulate"], **t}
    return {"config": asdict(cfg), "seconds": times, "total_s": sum(times.values()), "num_points": obs.num_points,
            "scale": scale, "scale_error": abs(scale / row["true_scale"] - 1), "frame_scale_median_error": frame_err}


def run_colmap_cli(row: dict, colmap: str = "colmap") -> dict:
    """The reference chain through COLMAP's command-line tools, default options, same intrinsics and poses."""
    traj = read_camera_file(row["pose_path"])
    tmp = Path(tempfile.mkdtemp(prefix="realcam_colmap_cli_"))
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
        intr = traj.intrinsics[0] * np.array([w, h, w, h])
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
        scale, frame_err, t = scale_from(np.array(fr), np.array(xy, np.float32), np.array(z), row, (h, w), nf)
        times = {"decode": t_decode, "write_images": t_write, "extract": t_extract, "match": t_match,
                 "triangulate": t_tri, **t}
        version = run("help").stdout.strip().splitlines()[0]
        return {"tool": version.strip(), "seconds": times, "total_s": sum(times.values()),
                "num_points": rec.num_points3D(), "scale": scale, "scale_error": abs(scale / row["true_scale"] - 1),
                "frame_scale_median_error": frame_err}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


SWEEP = [dict(max_side=640, max_features=8192, overlap=10), dict(max_side=640, max_features=4096, overlap=6),
         dict(max_side=640, max_features=2048, overlap=6), dict(max_side=480, max_features=2048, overlap=6),
         dict(max_side=480, max_features=1024, overlap=4), dict(max_side=320, max_features=1024, overlap=4),
         dict(max_side=320, max_features=512, overlap=3)]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m annotate.bench_clip", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench/annotate.json")
    p.add_argument("--clip-dir", default="bench/clip")
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--no-sweep", action="store_true")
    p.add_argument("--colmap", default="colmap", help="COLMAP executable for the reference chain")
    a = p.parse_args(argv)
    row = make_clip(Path(a.clip_dir), a.frames, a.width, a.height, a.seed)
    result = {"clip": {"frames": a.frames, "width": a.width, "height": a.height, "true_scale": row["true_scale"]},
              "pycolmap": pycolmap.__version__}
    ours = run_ours(row, SfmConfig())
    result["ours_default"] = ours
    print(f"ours (default): {ours['total_s']:.1f} s, scale error {ours['scale_error']:.4%}, "
          f"{ours['num_points']} points")
    if shutil.which(a.colmap):
        ref = run_colmap_cli(row, a.colmap)
        result["colmap_cli"] = ref
        result["speedup_vs_cli"] = ref["total_s"] / ours["total_s"]
        print(f"COLMAP CLI: {ref['total_s']:.1f} s, scale error {ref['scale_error']:.4%}, {ref['num_points']} points"
              f" -> ours is {result['speedup_vs_cli']:.2f}x faster")
    else:
        result["colmap_cli"] = None
        print(f"{a.colmap!r} not found: install Debian's colmap (apt-get install colmap) for the reference chain")
    if not a.no_sweep:
        result["sweep"] = []
        for s in SWEEP:
            r = run_ours(row, SfmConfig(**s))
            result["sweep"].append(r)
            print(f"  {s}: {r['total_s']:.1f} s, scale error {r['scale_error']:.4%}, "
                  f"frame error {r['frame_scale_median_error']:.4%}, {r['num_points']} points")
    print(f"wrote {write_json(a.out, result)}")
    return result


if __name__ == "__main__":
    main()
