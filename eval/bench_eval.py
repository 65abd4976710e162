"""Cost of `eval run`'s pose trials on this machine, and of the paper's full protocol.

    python -m eval.bench_eval [--out bench/eval.json] [--clips 2] [--trials 2] [--frames 16] [--size 256]
                              [--num-cpus 2] [--no-affine] [key=value ...]

Renders ``clips`` synthetic clips (orbit, ``frames`` frames of ``size`` x ``size``, the resolution of the
256 model's samples) whose sample drifts from the ground truth, then runs ``eval run`` on a local Ray twice
into a temporary folder: method 1 computes every trial (samples and ground truth), method 2 (other samples,
the same ground truth) finds the ground-truth trials in the cache. Pose settings are the reference's
(affine SIFT with domain-size pooling) unless ``--no-affine``.

Costs come from the tasks' CPU-seconds (feature extraction once per video, then per trial), which depend
little on other load, unlike wall time (also recorded, with the load average). The projection for the
paper's protocol (1,000 clips x 2 videos x 5 trials) on a 64-core node assumes one task per core and adds
the driver's per-clip cost measured separately (it decodes and hashes every video, serially, while the tasks
run: an upper bound). Without a depth model: a metric depth source adds one forward pass per video.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annotate.command import Command
from annotate.files import write_json

PROTOCOL = {"clips": 1000, "videos_per_clip": 2, "trials": 5, "node_cores": 64}


def _write_exp(root: Path, clips: int, frames: int, size: int, yaw: float, gt_from: Path | None = None) -> None:
    import shutil

    from scipy.spatial.transform import Rotation

    from annotate.re10k import write_camera_data_file
    from annotate.synth import Room, make_trajectory, render
    from annotate.video import write_video

    for sub in ("samples", "gt_video", "camera_data"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    intr = np.array([0.5 * size, 0.5 * size, 0.5 * size, 0.5 * size])
    for i in range(clips):
        rng = np.random.default_rng([2024, i])
        room = Room.random(rng)
        c2w, _ = make_trajectory("orbit", rng, room, frames)
        drift = c2w.copy()
        rot = Rotation.from_rotvec(np.outer(yaw * np.arange(frames), [0, 1, 0])).as_matrix()
        drift[:, :3, :3] = c2w[:, :3, :3] @ rot
        name = f"clip{i:03d}"
        write_video(root / "samples" / f"{name}.mp4", np.stack([render(room, c, intr, size, size)[0] for c in drift]))
        if gt_from is None:
            write_video(root / "gt_video" / f"{name}.mp4",
                        np.stack([render(room, c, intr, size, size)[0] for c in c2w]))
            write_camera_data_file(root / "camera_data" / f"{name}.txt", np.tile(intr, (frames, 1)), c2w)
    if gt_from is not None:  # the same ground truth, byte for byte
        for sub in ("gt_video", "camera_data"):
            shutil.rmtree(root / sub)
            shutil.copytree(gt_from / sub, root / sub)


def _records(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*/seed_*.json"))]


def _driver_cpu_per_clip(exp: Path) -> float:
    """What the driver does per clip besides waiting: read the camera, decode and hash both videos."""
    from annotate.video import read_frames
    from eval.run import discover_clips
    from eval.trajectory import load_camera
    from eval.trials import video_sha256

    clips = discover_clips(exp)
    c0 = time.process_time()
    for c in clips:
        load_camera(c.camera)
        for v in (c.sample, c.gt_video):
            read_frames(v)
            video_sha256(v)
    return (time.process_time() - c0) / len(clips)


def bench(out: str | os.PathLike | None = "bench/eval.json", clips: int = 2, trials: int = 2, frames: int = 16,
          size: int = 256, num_cpus: int = 2, affine: bool = True) -> dict:
    from annotate.job import RayConfig, versions
    from eval.pose_estimation import PoseEstimationConfig
    from eval.run import EvalRunConfig, run_evaluation

    pose = PoseEstimationConfig(estimate_affine_shape=affine, domain_size_pooling=affine)
    load0 = os.getloadavg()
    result: dict = {"setup": {"clips": clips, "trials": trials, "frames": frames, "size": f"{size}x{size}",
                              "local_ray_cpus": num_cpus, "cpus_per_task": 1, "affine_sift_dsp": affine,
                              "machine_cores": os.cpu_count()}}
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        tmp = Path(tmp)
        _write_exp(tmp / "exp1", clips, frames, size, yaw=0.01)
        _write_exp(tmp / "exp2", clips, frames, size, yaw=-0.01, gt_from=tmp / "exp1")
        runs = {}
        for name in ("exp1", "exp2"):
            cfg = EvalRunConfig(exp_dir=str(tmp / name), out_dir=str(tmp / "results" / name), num_trials=trials,
                                pose=pose, show_progress=False, ray=RayConfig(num_cpus=num_cpus))
            t0 = time.perf_counter()
            summary = run_evaluation(cfg)
            runs[name] = {"wall_seconds": round(time.perf_counter() - t0, 2), **summary["trials"],
                          "cpu_seconds": summary["cpu_seconds"], "success_rate": summary["success_rate"]}
        recs = _records(tmp / "results" / "exp1" / "trials") + _records(tmp / "results" / "gt_cache" / "gt_trials")
        driver_cpu_per_clip = _driver_cpu_per_clip(tmp / "exp1")
    trial_cpu = float(np.mean([r["cpu_seconds"] for r in recs]))
    by_video = {r["key"]: r["extract_cpu_seconds"] for r in recs}
    extract_cpu = float(np.mean(list(by_video.values())))
    computed = len(recs)
    task_cpu = runs["exp1"]["task_cpu_seconds"]
    # Per video at the protocol's trial count: one extraction, then `trials` trials.
    p = PROTOCOL
    video_cpu = extract_cpu + p["trials"] * trial_cpu
    per_cpu_hour = 3600 * p["trials"] / video_cpu
    first = p["clips"] * p["videos_per_clip"] * video_cpu  # samples and ground truth
    again = p["clips"] * video_cpu  # a further method: ground truth cached
    driver = p["clips"] * driver_cpu_per_clip
    hours = lambda cpu_s: round((cpu_s / p["node_cores"] + driver) / 3600, 2)  # noqa: E731
    result.update({
        "runs": runs,
        "measured": {"video_trials": computed, "trial_cpu_seconds": round(trial_cpu, 2),
                     "extract_cpu_seconds_per_video": round(extract_cpu, 2),
                     "video_trials_per_cpu_hour_this_run": round(3600 * computed / task_cpu, 1),
                     "driver_cpu_seconds_per_clip": round(driver_cpu_per_clip, 2),
                     "wall_video_trials_per_hour": round(3600 * computed / runs["exp1"]["wall_seconds"], 1)},
        "protocol": {**p, "video_trials_per_cpu_hour": round(per_cpu_hour, 1),
                     "first_method_cpu_hours": round(first / 3600, 1),
                     "first_method_hours_on_node": hours(first),
                     "further_method_cpu_hours": round(again / 3600, 1),
                     "further_method_hours_on_node": hours(again)},
        "loadavg_before": [round(x, 2) for x in load0], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "versions": versions(),
    })
    if out:
        write_json(out, result)
    return result


@dataclass
class BenchEvalConfig:
    out: str = "bench/eval.json"  # the result JSON ("" = not written)
    clips: int = 2  # synthetic clips (orbit)
    trials: int = 2  # pose-estimation trials per video
    frames: int = 16  # frames per clip
    size: int = 256  # frame width and height
    num_cpus: int = 2  # CPUs of the local Ray
    affine: bool = True  # affine SIFT with domain-size pooling (the reference's); false: plain SIFT


def main(cfg: BenchEvalConfig) -> dict:
    """:func:`bench` of the config; the result (also written to ``cfg.out``)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    return bench(cfg.out, cfg.clips, cfg.trials, cfg.frames, cfg.size, cfg.num_cpus, cfg.affine)


def command() -> Command:
    return Command(BenchEvalConfig, lambda cfg, args: main(cfg), "python -m eval.bench_eval",
                   __doc__.split("\n\n")[0])


def cli(argv: list[str] | None = None) -> int:
    return command().main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(cli())
