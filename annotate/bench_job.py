"""Throughput of the whole annotation job (Ray start, pipeline, final pass) on this machine.

    python -m annotate.bench_job [--sample data/sample] [--json bench/annotate_job.json] [--num-cpus 2]
        [job.KEY=value ...]

Generates the sample if it is missing (``--clips 8 --frames 28``, 320x180), runs the job into a fresh temporary
folder and writes clips per hour, per-clip worker wall seconds (triangulation + depth), the workers' CPU seconds
per clip and per frame (load-independent: the basis of cost estimates), and the machine's load average, so numbers
from a shared machine can be judged.
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from annotate.command import Command
from annotate.files import write_json
from annotate.job_config import JobConfig, RayConfig


@dataclass
class BenchJobConfig:
    sample: str = "data/sample"  # synthetic sample (generated when its manifest.csv is missing)
    json: str = "bench/annotate_job.json"  # the JSON result ('' = not written)
    clips: int = 8  # clips of a generated sample
    frames: int = 28  # frames per clip of a generated sample
    # the job (its manifest, out and progress are the bench's); its local Ray gets 2 CPUs (--num-cpus, null = all)
    job: JobConfig = field(default_factory=lambda: JobConfig(ray=RayConfig(num_cpus=2)))


def bench(sample: str | os.PathLike, json_path: str | os.PathLike | None, clips: int, frames: int,
          job: JobConfig) -> dict:
    """Run ``job`` on ``sample`` (generated with ``clips`` x ``frames`` when missing); its throughput."""
    from annotate import output
    from annotate.job import run, versions
    from annotate.synth import SynthConfig, generate

    sample = Path(sample)
    if not (sample / "manifest.csv").exists():
        generate(SynthConfig(out=str(sample), clips=clips, frames=frames))
    cfg = copy.deepcopy(job)
    cfg.progress = False
    num_cpus = cfg.ray.num_cpus
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_job_") as tmp:
        t0 = time.perf_counter()
        run(sample / "manifest.csv", Path(tmp) / "out", cfg)
        wall = time.perf_counter() - t0
        t = output.read_table(Path(tmp) / "out", ["status", "num_frames", "seconds", "cpu_seconds"]).to_pydict()
    secs = np.array(t["seconds"], np.float64)
    cpu = np.array(t["cpu_seconds"], np.float64)
    nfr = np.array(t["num_frames"], np.float64)
    ok = np.array([s == "ok" for s in t["status"]])
    n = len(secs)
    result = {
        "clips": n, "ok": int(ok.sum()), "frames_per_clip": float(nfr.mean()) if n else 0.0,
        "num_cpus": num_cpus or os.cpu_count(), "wall_s": round(wall, 2),
        "clips_per_hour": round(3600 * n / wall, 1),
        "clips_per_hour_per_cpu": round(3600 * n / wall / (num_cpus or os.cpu_count()), 1),
        "worker_seconds_per_clip": round(float(secs[ok].mean()), 3) if ok.any() else None,
        "worker_seconds_per_frame": round(float(secs[ok].sum() / nfr[ok].sum()), 4) if ok.any() else None,
        "cpu_seconds_per_clip": round(float(cpu[ok].mean()), 3) if ok.any() else None,
        "cpu_seconds_per_frame": round(float(cpu[ok].sum() / nfr[ok].sum()), 4) if ok.any() else None,
        # wall time beyond perfectly parallel clip work: Ray start/stop, scheduling, final pass
        "overhead_s": round(wall - float(secs.sum()) / (num_cpus or os.cpu_count()), 2),
        "loadavg_before": [round(x, 2) for x in load0], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "sample": str(sample), "versions": versions(),
        "note": "synthetic clips with precomputed depth (no depth model); wall times (wall_s, clips_per_hour, "
                "worker_seconds_*) grow with the machine's load, cpu_seconds_* hardly do",
    }
    if json_path:
        write_json(json_path, result)
    return result


def main(cfg: BenchJobConfig) -> dict:
    """The job's throughput on the sample (:func:`bench`), written to ``cfg.json``."""
    return bench(cfg.sample, cfg.json or None, cfg.clips, cfg.frames, cfg.job)


def command() -> Command:
    return Command(BenchJobConfig, lambda cfg, args: main(cfg), "python -m annotate.bench_job",
                   __doc__.split("\n\n")[0], flags={"--sample": "sample", "--json": "json", "--clips": "clips",
                                                     "--frames": "frames", "--num-cpus": "job.ray.num_cpus"})


def cli(argv: list[str] | None = None) -> int:
    return command().main(argv)


if __name__ == "__main__":
    sys.exit(cli())
