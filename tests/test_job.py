"""The Ray Data annotation job end to end on CPU: contract, bad clips, loopback-only local Ray, kill + resume with
nothing left running, worker crashes, depth model."""

from __future__ import annotations

import csv
import glob
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

from annotate import output
from annotate.config import ConfigError, load_config
from annotate.job import CONFIG_DIR, JobConfig, run
from annotate.manifest import write_manifest
from annotate.synth import load_ground_truth

VALIDATOR = Path(__file__).parent / "fixtures" / "tools" / "validate_annotation.py"  # copy of shared/tools
ENV = dict(os.environ, RAY_AUTH_MODE="disabled", HF_HUB_OFFLINE="1")
BAD = {  # clip id -> what its error must say
    "bad_missing_video": ["unreadable video", "does_not_exist.mp4"],
    "bad_corrupt_video": ["unreadable video", "corrupt.mp4"],
    "bad_frame_count": ["frame-count mismatch", "12 pose lines"],
    "bad_rotation": ["malformed camera file", "not orthonormal"],
    "bad_columns": ["malformed camera file", "expected 19 columns"],
    "bad_too_few_frames": ["too few frames"],
}


def validate(out: Path, manifest: Path) -> str:
    p = subprocess.run([sys.executable, str(VALIDATOR), str(out), "--manifest", str(manifest)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "FAIL" not in p.stdout
    return p.stdout


def small_cfg(**kw) -> JobConfig:
    cfg = JobConfig(progress=False, **kw)
    cfg.ray.num_cpus = 2
    cfg.ray.object_store_mb = 256
    return cfg


def rows_by_id(out: Path) -> dict:
    return {r["clip_id"]: r for r in output.read_table(out).to_pylist()}


def all_shard_ids(out: Path) -> list[str]:
    return [c for p in sorted(glob.glob(str(out / "clips" / "*.parquet")))
            for c in pq.read_table(p, columns=["clip_id"]).column("clip_id").to_pylist()]


def good_rows(sample: Path, n: int | None = None) -> list[dict]:
    rows = list(csv.DictReader(open(sample / "manifest.csv")))
    return rows[:n] if n else rows


# ------------------------------------------------------------------------------------------------ contract


def test_output_matches_contract(annotated_sample, annot_manifest, annot_sample):
    out = annotated_sample
    report = validate(out, annot_manifest)
    assert "keep_filter: keep flags match" in report and "linear" in report

    # exact Arrow types of the contract, one row per manifest clip, shards of at most 4 rows
    manifest_ids = [r["clip_id"] for r in csv.DictReader(open(annot_manifest))]
    ids = all_shard_ids(out)
    assert sorted(ids) == sorted(manifest_ids)
    for p in glob.glob(str(out / "clips" / "*.parquet")):
        t = pq.read_table(p)
        assert t.num_rows <= 4
        for f in output.SCHEMA:
            assert t.schema.field(f.name).type == f.type, f.name
    assert not list(out.glob(f"{output.TMP_PREFIX}*"))
    rows = rows_by_id(out)

    # scales against ground truth, cameras against an independent recomputation
    truth = load_ground_truth(annot_sample)
    for cid, gt in truth.items():
        r = rows[cid]
        assert r["status"] == "ok", r["error"]
        assert abs(r["scale"] / gt["scale"] - 1) < 0.02, (cid, r["scale"], gt["scale"])
        F = r["num_frames"]
        w2c = np.tile(np.eye(4), (F, 1, 1))
        w2c[:, :3, :] = np.array(r["w2c"], np.float64).reshape(F, 3, 4)
        c2w = np.linalg.inv(w2c)
        want = np.linalg.inv(c2w[0]) @ c2w
        want[:, :3, 3] *= r["scale"]
        np.testing.assert_allclose(np.array(r["c2w_metric"]).reshape(F, 4, 4), want, atol=1e-4)
        # and against the rendered metric trajectory itself
        np.testing.assert_allclose(np.array(r["c2w_metric"]).reshape(F, 4, 4)[:, :3, 3],
                                   np.array(gt["c2w_metric_rel0"])[:, :3, 3], atol=0.02 * 3)

    # keep flags = an independent numpy filter over the ok rows
    ok = [r for r in rows.values() if r["status"] == "ok"]
    smax = np.array([r["scale_max"] for r in ok])
    smin = np.array([r["scale_min"] for r in ok])
    lo_max, hi_max = np.quantile(smax, [0.02, 0.98])
    lo_min, hi_min = np.quantile(smin, [0.02, 0.98])
    for r, a, b in zip(ok, smax, smin):
        assert r["keep"] == bool(lo_max <= a <= hi_max and lo_min <= b <= hi_min)
        assert (r["filter_reason"] == "") == r["keep"]
    assert not all(r["keep"] for r in ok)  # with 6 ok clips the extremes fall outside q02..q98
    mj = json.loads((out / "manifest.json").read_text())
    assert mj["filter"]["thresholds"]["scale_max"] == pytest.approx([lo_max, hi_max], rel=1e-12)
    assert mj["filter"]["thresholds"]["scale_min"] == pytest.approx([lo_min, hi_min], rel=1e-12)
    assert mj["rows"]["by_status"] == {"ok": 6, "failed": 6}
    assert sum(mj["rows"]["by_split"].values()) == 12
    assert mj["versions"]["pycolmap"] and mj["versions"]["ray"] and mj["depth"]["model"]
    assert sorted(s["path"] for s in mj["shards"]) == sorted(
        p.relative_to(out).as_posix() for p in (out / "clips").glob("*.parquet"))
    for s in mj["shards"]:
        assert output.sha256_file(out / s["path"]) == s["sha256"]

    # RealCam-I2V exports: frames without a scale carry the clip's scale, counted in manifest.json
    filled = 0
    for split in {r["split"] for r in rows.values()}:
        d = np.load(out / "export" / f"{split}_per_frame_scale.npz", allow_pickle=True)["arr_0"].item()
        ok_ids = {c for c, r in rows.items() if r["split"] == split and r["status"] == "ok"}
        assert set(d) == ok_ids
        for c, arr in d.items():
            assert arr.dtype == np.float32 and np.isfinite(arr).all()  # the authors' loader has no NaN check
            fs = np.array(rows[c]["frame_scale"], np.float32)
            filled += int(np.isnan(fs).sum())
            np.testing.assert_array_equal(arr, np.where(np.isnan(fs), np.float32(rows[c]["scale"]), fs))
        listed = (out / "export" / f"{split}_valid_list.txt").read_text().split()
        assert sorted(listed) == sorted(c for c, r in rows.items() if r["split"] == split and r["keep"])
    assert mj["export_filled_frames"] == filled


def test_bad_clips_become_failed_rows(annotated_sample):
    rows = rows_by_id(annotated_sample)
    for cid, needles in BAD.items():
        r = rows[cid]
        assert r["status"] == "failed" and not r["keep"] and r["filter_reason"] == "failed"
        assert "\n" not in r["error"]
        for n in needles:
            assert n in r["error"], (cid, r["error"])


def test_filter_thresholds_unit():
    th = output.Thresholds.compute(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.5, 1.0, 1.5, 2.0]), 0.25)
    assert th.scale_max == pytest.approx((1.75, 3.25))
    assert th.reason("ok", 2.0, 1.0) == ""
    assert th.reason("ok", 4.0, 1.0).startswith("scale_max above q75 (4 > 3.25)")
    assert "scale_min below q25" in th.reason("ok", 2.0, 0.5)
    assert th.reason("failed", 2.0, 1.0) == "failed"


def test_configs_and_overrides():
    for name in ("default.yaml", "cluster.yaml"):
        load_config(JobConfig, CONFIG_DIR / name)
    from annotate.job_cli import command

    argv = ["m.csv", "--config", str(CONFIG_DIR / "default.yaml"), "shard_rows=7", "out", "clip.depth.model=/m",
            "--address", "ray://h:10001", "--num-cpus", "3", "--depth-actors", "4", "--gpus-per-actor", "0.5",
            "--retry-failed", "--no-progress"]
    cfg, _ = command().parse(argv)
    assert (cfg.manifest, cfg.out, cfg.shard_rows, cfg.clip.depth.model, cfg.ray.address, cfg.ray.num_cpus,
            cfg.ray.depth_actors, cfg.ray.gpus_per_actor, cfg.retry_failed, cfg.progress) == \
        ("m.csv", "out", 7, "/m", "ray://h:10001", 3, 4, 0.5, True, False)
    assert command().parse(["m.csv", "out", "--num-cpus", "3", "ray.num_cpus=5"])[0].ray.num_cpus == 5  # key=value last
    with pytest.raises(ConfigError, match="shard_rows"):
        command().parse(["m.csv", "out", "shard_row=3"])


# ------------------------------------------------------------------------------------------------ robustness


def _descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st = open(f"/proc/{d}/stat").read()
                kids.setdefault(int(st[st.rindex(")") + 2:].split()[1]), []).append(int(d))
            except (OSError, ValueError):
                pass
    out, stack = [], [pid]
    while stack:
        for c in kids.get(stack.pop(), []):
            out.append(c)
            stack.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _listening(pids: list[int]) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket of these processes."""
    out = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            out += [(proc.name(), c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet")
                    if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            pass
    return out


def _loopback(ip: str) -> bool:
    a = ipaddress.ip_address(ip.split("%")[0])
    return a.is_loopback or bool(getattr(a, "ipv4_mapped", None) and a.ipv4_mapped.is_loopback)


def test_local_ray_loopback_only_sigkill_leaves_nothing_then_resume(annot_sample, tmp_path):
    """Issue 12 items 2 and 10 on one real run: every socket of the local Ray listens on loopback only, and
    after the driver is SIGKILLed no process of that Ray survives (agents included); then resume."""
    manifest = annot_sample / "manifest.csv"
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "annotate", "run", str(manifest), str(out), "shard_rows=1", "--num-cpus", "2",
           "--no-progress"]
    p = subprocess.Popen(cmd, env=ENV, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    procs: list[int] = []
    try:
        while not list((out / "clips").glob("*.parquet")) and p.poll() is None and time.time() - t0 < 300:
            time.sleep(0.1)
        assert p.poll() is None, "the run ended before its first shard"
        procs = [p.pid] + _descendants(p.pid)  # driver, GCS, raylet, agents, workers, the watchdog
        names = {psutil.Process(q).name() for q in procs if _alive(q)}
        assert {"gcs_server", "raylet"} <= names and any("Agent" in n for n in names), names
        socks = _listening(procs)
        assert {"gcs_server", "raylet"} <= {n for n, _, _ in socks}, socks
        assert all(_loopback(ip) for _, ip, _ in socks), [s for s in socks if not _loopback(s[1])]

        os.killpg(p.pid, signal.SIGKILL)  # the driver and its process group; Ray's workers have their own
        p.wait()
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(q) for q in procs):
            time.sleep(0.1)
        left = [(q, psutil.Process(q).name()) for q in procs if _alive(q)]
        assert not left, f"outlived the SIGKILLed driver by 10 s: {left}"
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        for q in procs:  # only if the assertion above failed: leave no Ray behind
            if _alive(q):
                os.kill(q, signal.SIGKILL)
    assert p.returncode == -signal.SIGKILL
    before = all_shard_ids(out)
    assert 1 <= len(before) < 6 and len(set(before)) == len(before)
    assert not (out / "manifest.json").exists()  # killed before the final pass

    p2 = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert p2.returncode == 0, p2.stderr[-3000:]
    mj = json.loads((out / "manifest.json").read_text())
    assert mj["runs"][-1]["processed"] == 6 - len(before)
    assert mj["runs"][-1]["already_done"] == len(before)
    ids = all_shard_ids(out)
    assert sorted(ids) == sorted(r["clip_id"] for r in good_rows(annot_sample))
    assert set(before) <= set(ids)
    assert not list(out.glob(f"{output.TMP_PREFIX}*"))
    assert all(output.SHARD_RE.match(p.name) for p in (out / "clips").iterdir())
    validate(out, manifest)


FAULT_INJECTION = Path(__file__).parent / "fault_injection"  # test-only sitecustomize for the Ray workers


@pytest.fixture
def crash_workers_on(monkeypatch):
    """Make the Ray workers of the next local Ray die (os._exit) when they triangulate the given clips."""

    def arm(*clip_ids: str) -> None:
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(FAULT_INJECTION),
                                                                      os.environ.get("PYTHONPATH")])))
        monkeypatch.setenv("REALCAM_TEST_CRASH_IDS", ",".join(clip_ids))

    return arm


def test_worker_crash_is_a_failed_row_then_retry_failed(annot_sample, tmp_path, crash_workers_on, monkeypatch):
    rows = good_rows(annot_sample, 2)
    manifest = tmp_path / "two.csv"
    write_manifest([{**r, **{k: str(annot_sample / r[k]) for k in ("pose_path", "video_path", "depth_path")}}
                    for r in rows], manifest)
    out = tmp_path / "out"
    crash_workers_on(rows[1]["clip_id"])
    cfg = small_cfg()
    cfg.ray.max_retries = 1
    res = run(manifest, out, cfg)
    monkeypatch.delenv("REALCAM_TEST_CRASH_IDS")  # the retry below runs on a fresh local Ray without it
    assert res["worker_crashed"] == 1
    got = rows_by_id(out)
    assert got[rows[0]["clip_id"]]["status"] == "ok"
    crashed = got[rows[1]["clip_id"]]
    assert crashed["status"] == "failed" and crashed["error"].startswith("worker crashed")
    validate(out, manifest)

    # --retry-failed reprocesses only the failed clip; its new row replaces the old one
    shas = {s["path"]: s["sha256"] for s in json.loads((out / "manifest.json").read_text())["shards"]}
    res = run(manifest, out, small_cfg(retry_failed=True))
    assert res["processed"] == 1 and res["already_done"] == 1
    got = rows_by_id(out)
    assert all(r["status"] == "ok" for r in got.values())
    assert sorted(all_shard_ids(out)) == sorted(r["clip_id"] for r in rows)
    mj = json.loads((out / "manifest.json").read_text())
    assert {s["path"]: s["sha256"] for s in mj["shards"]} != shas
    assert [r["processed"] for r in mj["runs"]] == [2, 1]
    validate(out, manifest)


def test_tiny_depth_model_without_depth_paths(annot_sample, tiny_depth_model, tmp_path):
    rows = good_rows(annot_sample, 2)
    manifest = tmp_path / "nodepth.csv"
    cols = ("clip_id", "split", "pose_path", "video_path")
    write_manifest([{**r, **{k: str(annot_sample / r[k]) for k in ("pose_path", "video_path")}} for r in rows],
                   manifest, columns=cols)
    out = tmp_path / "out"
    cfg = small_cfg()
    cfg.clip.depth.model = str(tiny_depth_model)
    cfg.clip.depth.batch_size = 4
    run(manifest, out, cfg)
    got = rows_by_id(out)
    assert sorted(got) == sorted(r["clip_id"] for r in rows)
    for r in got.values():
        # the tiny model (seeded random weights) gives usable depth: every clip gets a finite positive scale
        assert r["status"] == "ok", r["error"]
        assert np.isfinite(r["scale"]) and r["scale"] > 0
    mj = json.loads((out / "manifest.json").read_text())
    assert mj["depth"]["model"] == str(tiny_depth_model) and mj["depth"]["clips_with_model_depth"] == 2
    validate(out, manifest)
