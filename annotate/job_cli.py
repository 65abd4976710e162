"""``python -m annotate run MANIFEST OUT [options] [key=value ...]``: the annotation job's command line,
generated from :class:`JobConfig` (annotate/command.py), and its preflight: every problem of the inputs in one
message before Ray starts or anything is written."""

from __future__ import annotations

import argparse
import sys

from annotate.command import Command
from annotate.job_config import CONFIG_DIR, JobConfig, JobError
from annotate.manifest import ManifestError
from annotate.preflight import Problems, need_depth_model, need_manifest, need_output_folder

DESCRIPTION = "Annotate a clip manifest with Ray (resumable); see annotate/job.py and data_manifests/README.md."
FLAGS = {"--address": "ray.address", "--num-cpus": "ray.num_cpus", "--depth-actors": "ray.depth_actors",
         "--gpus-per-actor": "ray.gpus_per_actor", "--retry-failed": "retry_failed", "--progress": "progress"}


def preflight(cfg: JobConfig) -> None:
    """A :class:`PreflightError` listing every problem of the inputs."""
    pb = Problems("python -m annotate run")
    if not cfg.manifest or not cfg.out:
        pb.add("MANIFEST and OUT are required", "python -m annotate run MANIFEST OUT [key=value ...]")
    else:
        rows = need_manifest(pb, cfg.manifest, "MANIFEST")
        need_output_folder(pb, cfg.out, "OUT")
        if rows and any(not r.get("depth_path") for r in rows):
            need_depth_model(pb, cfg.clip.depth.model, "clip.depth.model")
    if not 0 <= cfg.quantile < 0.5:
        pb.add(f"quantile must be in [0, 0.5), got {cfg.quantile}", "e.g. quantile=0.02")
    pb.raise_if_any()


def main(cfg: JobConfig) -> dict:
    """Preflight, then the job (:func:`annotate.job.run`); its summary."""
    from annotate.job import run

    preflight(cfg)
    return run(cfg.manifest, cfg.out, cfg)


def _run(cfg: JobConfig, args: argparse.Namespace) -> int:
    try:
        main(cfg)
    except KeyboardInterrupt:
        print(f"interrupted; finished clips are saved in {cfg.out}; rerun the same command to resume",
              file=sys.stderr)
        return 130
    return 0


def command() -> Command:
    presets = ", ".join(f"annotate/configs/{c.name}" for c in sorted(CONFIG_DIR.glob("*.yaml")))
    return Command(JobConfig, _run, "python -m annotate run", DESCRIPTION, positionals=("manifest", "out"),
                   flags=FLAGS, presets=f"YAML preset, e.g. {presets}",
                   errors=(ManifestError, JobError, OSError))  # OSError: e.g. a full disk, with errno text and file


def cli(argv: list[str] | None = None) -> int:
    return command().main(argv)


if __name__ == "__main__":
    sys.exit(cli())
