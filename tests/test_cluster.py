"""A cluster launch that works (issue 13): a real Ray head started with ``ray start`` on 127.0.0.1, the
README's ``ray job submit`` command sent to its job server, the job followed to the end, its output
validated against the contract, and the cluster stopped (only the processes this test started).

Ray binds its servers to the loopback address only in its single-machine mode, which refuses a second
``ray start --address`` node; a second node would need Ray's cluster mode, whose servers listen on every
interface. The project's servers bind 127.0.0.1, so this test runs one head node.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from annotate.manifest import write_manifest

REPO = Path(__file__).resolve().parents[1]
VALIDATOR = REPO / "tests" / "fixtures" / "tools" / "validate_annotation.py"
# The runtime environment of the documented command (data_manifests/README.md, section 4).
RUNTIME_ENV = {"env_vars": {"HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """``ray start --head --block`` in its own process group on 127.0.0.1; stopped by signalling that group."""

    def __init__(self, temp_dir: Path, num_cpus: int = 2):
        self.bin = Path(sys.executable).parent
        self.temp_dir, self.num_cpus = temp_dir, num_cpus
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self.env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
                        RAY_agent_register_timeout_ms="180000",  # agents start slowly on a busy 2-core machine
                        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # single-machine mode: servers on loopback only
                        PATH=f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}")
        self.env.pop("RAY_ADDRESS", None)
        self.proc: subprocess.Popen | None = None

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def __enter__(self) -> LocalCluster:
        ports = {"--port": self.gcs_port, "--dashboard-port": self.dashboard_port,
                 "--ray-client-server-port": free_port(), "--dashboard-agent-listen-port": free_port(),
                 "--dashboard-agent-grpc-port": free_port(), "--metrics-export-port": free_port(),
                 "--runtime-env-agent-port": free_port(), "--node-manager-port": free_port(),
                 "--object-manager-port": free_port()}
        cmd = [str(self.bin / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
               "--dashboard-host", "127.0.0.1", "--include-dashboard", "true", "--num-cpus", str(self.num_cpus),
               "--num-gpus", "0", "--object-store-memory", str(256 << 20), "--temp-dir", str(self.temp_dir),
               "--disable-usage-stats", *[str(x) for kv in ports.items() for x in kv]]
        self.log = open(self.temp_dir.parent / "ray_head.log", "w")
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)  # its own group: stopped without touching others
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode}: "
                                   f"{(self.temp_dir.parent / 'ray_head.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=5) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(1)
        self.__exit__()
        raise RuntimeError("the Ray head's job server did not come up within 180 s")

    def __exit__(self, *exc) -> None:
        if self.proc is None:
            return
        try:
            self.proc.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever of our group is left (never anyone else's)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log.close()
        self.proc = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_ray_job_submit_to_a_local_cluster(annot_sample, tmp_path):
    rows = list(csv.DictReader(open(annot_sample / "manifest.csv")))[:2]
    manifest = tmp_path / "shared" / "manifest.csv"  # "shared storage": absolute paths every node can read
    write_manifest([dict(r, **{k: str(annot_sample / r[k]) for k in ("pose_path", "video_path", "depth_path")})
                    for r in rows], manifest)
    out = tmp_path / "shared" / "annotation"
    with LocalCluster(Path(f"/tmp/rc{os.getpid()}")) as cluster:  # short: Ray's socket paths are length-limited
        # The README's command; only the resources are sized down for a 2-CPU machine without GPUs.
        cmd = [str(cluster.bin / "ray"), "job", "submit", "--address", cluster.dashboard, "--working-dir", str(REPO),
               "--runtime-env-json", json.dumps(RUNTIME_ENV), "--",
               "python", "-m", "annotate", "run", str(manifest), str(out), "--config", "annotate/configs/cluster.yaml",
               "--depth-actors", "1", "--gpus-per-actor", "0", "ray.triangulate_cpus=1", "ray.depth_cpus=0.5"]
        deadline = time.monotonic() + 180
        while True:  # the head's job agent registers a little after its HTTP server is up
            p = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=420)
            if "No available agent" not in p.stderr or time.monotonic() > deadline:
                break
            time.sleep(3)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        assert "succeeded" in (p.stdout + p.stderr).lower()
        with urllib.request.urlopen(f"{cluster.dashboard}/api/jobs/", timeout=10) as r:
            jobs = json.load(r)
        assert [j["status"] for j in jobs] == ["SUCCEEDED"]
        assert Path(jobs[0]["runtime_env"]["working_dir"]).name != str(REPO)  # the uploaded package ran
    v = subprocess.run([sys.executable, str(VALIDATOR), str(out), "--manifest", str(manifest)],
                       capture_output=True, text=True, timeout=120)
    assert v.returncode == 0 and "FAIL" not in v.stdout, v.stdout + v.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(out / "clips")
    assert sorted(table.column("clip_id").to_pylist()) == sorted(r["clip_id"] for r in rows)
    assert set(table.column("status").to_pylist()) == {"ok"}
