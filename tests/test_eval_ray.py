"""`eval run` on Ray, resumable per trial, with the ground-truth trials cached across experiments.

Two tiny synthetic clips (12 frames, 192x108, plain SIFT, 1 trial: 4 video trials per run). A real
``python -m eval run`` subprocess on a local Ray is SIGKILLed as soon as its first trial is stored; the rerun
computes only what is missing and writes the same clips.csv as an uninterrupted run (inline executor, in
this process: one Ray start fewer, and the same numbers). A second experiment folder with the same ground
truth reuses the cached ground-truth trials (none recomputed, files untouched).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from annotate.camera import c2w_to_w2c
from annotate.synth import Room, make_trajectory, render
from annotate.video import write_video
from eval.cli import main
from eval.trials import TrialStore, trial_key, video_sha256

N, W, H, TRIALS = 12, 192, 108, 1
ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--trials", str(TRIALS), "--no-affine", "--no-progress"]


def _write_exp(root: Path, seeds: dict[str, int], yaw: float) -> None:
    """Clips whose sample turns ``yaw`` rad per frame away from the ground-truth path."""
    for sub in ("samples", "gt_video", "camera_data"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    intr = np.array([0.5 * W, 0.5 * W, 0.5 * W, 0.5 * H])
    for name, seed in seeds.items():
        rng = np.random.default_rng([11, seed])
        room = Room.random(rng)
        c2w, _ = make_trajectory("orbit", rng, room, N)
        drift = c2w.copy()
        drift[:, :3, :3] = c2w[:, :3, :3] @ Rotation.from_rotvec(np.outer(yaw * np.arange(N), [0, 1, 0])).as_matrix()
        write_video(root / "gt_video" / f"{name}.mp4", np.stack([render(room, c, intr, W, H)[0] for c in c2w]))
        write_video(root / "samples" / f"{name}.mp4", np.stack([render(room, c, intr, W, H)[0] for c in drift]))
        rows = np.concatenate([np.tile(intr, (N, 1)), np.zeros((N, 2)), c2w_to_w2c(c2w)[:, :3].reshape(N, 12)], 1)
        np.savetxt(root / "camera_data" / f"{name}.txt", rows, fmt="%.10f")


def _records(*folders: Path) -> list[Path]:
    return sorted(p for f in folders for p in f.glob("*/seed_*.json"))


def _eval_cmd(exp: Path, out: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "eval", "run", str(exp), "--out", str(out), "--cache", str(cache),
            "--num-cpus", "2", *ARGS]


def _env() -> dict[str, str]:
    return {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evalray")
    exp = tmp / "exp"
    _write_exp(exp, {"a": 1, "b": 2}, yaw=0.01)
    # Uninterrupted.
    assert main(["run", str(exp), "--out", str(tmp / "full"), "--cache", str(tmp / "cache_full"),
                 "--executor", "local", *ARGS]) == 0
    # Killed as soon as its first trial is stored, then run again.
    out, cache = tmp / "killed", tmp / "cache_killed"
    proc = subprocess.Popen(_eval_cmd(exp, out, cache), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not _records(out / "trials", cache / "gt_trials") and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    stored = len(_records(out / "trials", cache / "gt_trials"))
    rerun = subprocess.run(_eval_cmd(exp, out, cache), cwd=ROOT, env=_env(), capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    return dict(tmp=tmp, exp=exp, full=tmp / "full", killed=out, stored_at_kill=stored)


def test_killed_run_resumes_to_the_same_tables(runs):
    total = 2 * 2 * TRIALS  # clips x (sample, ground truth) x trials
    assert 1 <= runs["stored_at_kill"] < total, "the kill must land mid-way"
    full = json.loads((runs["full"] / "summary.json").read_text())
    resumed = json.loads((runs["killed"] / "summary.json").read_text())
    assert full["trials"]["sample_trials_computed"] + full["trials"]["gt_trials_computed"] == total
    t = resumed["trials"]
    # Only what was missing was computed; what the killed run stored was reused.
    assert t["sample_trials_computed"] + t["gt_trials_computed"] == total - runs["stored_at_kill"]
    assert t["sample_trials_resumed"] + t["gt_trials_cached"] == runs["stored_at_kill"]
    assert t["trials_crashed"] == 0 and full["success_rate"] == 1.0
    assert (runs["killed"] / "clips.csv").read_bytes() == (runs["full"] / "clips.csv").read_bytes()
    # Accounting: wall time, CPU-seconds and throughput are recorded.
    assert full["wall_seconds"] > 0 and full["cpu_seconds"] > 0 and full["video_trials_per_cpu_hour"] > 0
    assert resumed["config"]["executor"] == "ray" and resumed["config"]["ray"]["num_cpus"] == 2
    assert resumed["wall_seconds"] > 0 and resumed["cpu_seconds"] > 0


def test_second_experiment_reuses_cached_ground_truth(runs, capsys):
    tmp = runs["tmp"]
    exp2 = tmp / "exp2"  # another method: its own samples, the same ground-truth videos and cameras
    _write_exp(exp2, {"a": 1, "b": 2}, yaw=-0.01)
    for sub in ("gt_video", "camera_data"):
        shutil.rmtree(exp2 / sub)
        shutil.copytree(runs["exp"] / sub, exp2 / sub)
    cache = tmp / "cache_full"
    before = {p: p.stat().st_mtime_ns for p in _records(cache / "gt_trials")}
    assert len(before) == 2 * TRIALS
    rc = main(["run", str(exp2), "--out", str(tmp / "method2"), "--cache", str(cache), "--executor", "local", *ARGS])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["trials"]["gt_trials_computed"] == 0 and summary["trials"]["gt_trials_cached"] == 2 * TRIALS
    assert summary["trials"]["sample_trials_computed"] == 2 * TRIALS and summary["success_rate"] == 1.0
    assert {p: p.stat().st_mtime_ns for p in _records(cache / "gt_trials")} == before
    # The key is the video's content, intrinsics, pose settings and depth source: a changed setting misses.
    from eval.pose_estimation import PoseEstimationConfig

    store = TrialStore(cache / "gt_trials")
    sha = video_sha256(exp2 / "gt_video" / "a.mp4")
    intr = [0.5 * W, 0.5 * W, 0.5 * W, 0.5 * H]
    plain = PoseEstimationConfig(estimate_affine_shape=False, domain_size_pooling=False)
    assert store.load(trial_key(sha, intr, plain, None), 0)["status"] == "ok"
    assert store.load(trial_key(sha, intr, PoseEstimationConfig(), None), 0) is None
    assert store.load(trial_key(sha, intr, plain, "some-depth-model"), 0) is None


def test_store_ignores_damaged_or_foreign_records(tmp_path):
    from eval.trials import RECORD_FORMAT, TrialProgress

    store = TrialStore(tmp_path)
    rec = {"format": RECORD_FORMAT, "key": "k1", "seed": 3, "status": "ok", "c2w": [[0.0]]}
    store.save(rec)
    assert store.load("k1", 3) == rec and store.load("k1", 4) is None
    store.path("k1", 4).write_text('{"format": 1, "key": "k1", "se')  # not written by save(): a damaged file
    assert store.load("k1", 4) is None
    store.path("k2", 3).parent.mkdir()
    store.path("k2", 3).write_text(json.dumps(rec))  # k1's record under k2's name
    assert store.load("k2", 3) is None
    prog = TrialProgress(10, enabled=False)
    prog.advance(4, computed=False)  # reused trials count as done but not towards the rate
    assert prog.done == 4 and prog.computed == 0 and "-- min left" in prog.info()
    prog.advance(2)
    assert "trials/min" in prog.info() and "min left" in prog.info()
