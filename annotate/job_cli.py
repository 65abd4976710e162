"""``python -m annotate run``: the annotation job's command line, generated from :class:`JobConfig` (every key
with its type, default and help in ``--help``; ``--print-config`` prints the resolved YAML), and its preflight:
every problem of the inputs in one message before Ray starts or anything is written."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from annotate.config import ConfigError, add_config_arguments, print_config
from annotate.job_config import CONFIG_DIR, JobConfig, JobError, make_config
from annotate.manifest import ManifestError
from annotate.preflight import PreflightError, Problems, need_depth_model, need_manifest, need_output_folder, report

DESCRIPTION = "Annotate a clip manifest with Ray (resumable); see annotate/job.py and data_manifests/README.md."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = p.description or DESCRIPTION
    p.add_argument("manifest", nargs="?", help="clip manifest (CSV or Parquet)")
    p.add_argument("out", nargs="?", help="annotation output folder (created; reused to resume)")
    add_config_arguments(p, JobConfig, "YAML preset, e.g. annotate/configs/default.yaml or cluster.yaml")
    p.add_argument("--address", help="Ray cluster to join, sets ray.address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--retry-failed", action="store_true", help="reprocess clips whose row is failed (retry_failed)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (ray.num_cpus; default: all cores)")
    p.add_argument("--depth-actors", type=int, help="depth model actors (ray.depth_actors; default 1)")
    p.add_argument("--gpus-per-actor", type=float, help="GPUs per depth actor (default 1 where GPUs exist)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or summary table (progress=false)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug logging")


def _split_positionals(args: argparse.Namespace) -> None:
    """key=value words that argparse put in the optional MANIFEST / OUT slots are overrides."""
    for name in ("out", "manifest"):
        v = getattr(args, name)
        if v is not None and "=" in v and not Path(v).exists():
            args.overrides.insert(0, v)
            setattr(args, name, None)
    if args.manifest is None and args.out is not None:
        args.manifest, args.out = args.out, None


def preflight(args: argparse.Namespace) -> JobConfig:
    """The resolved config, or a :class:`PreflightError` listing every problem of the command line."""
    pb = Problems("python -m annotate run")
    cfg = None
    if args.config and not Path(args.config).is_file():
        pb.add(f"--config {args.config!r}: no such file",
               f"give a YAML preset, e.g. {', '.join(str(c) for c in sorted(CONFIG_DIR.glob('*.yaml')))}")
    else:
        try:
            cfg = make_config(args.config, args.overrides, args)
        except ConfigError as e:
            pb.add(str(e))
    if args.manifest is None or args.out is None:
        pb.add("MANIFEST and OUT are required", "python -m annotate run MANIFEST OUT [key=value ...]")
    else:
        rows = need_manifest(pb, args.manifest, "MANIFEST")
        need_output_folder(pb, args.out, "OUT")
        if cfg is not None and rows and any(not r.get("depth_path") for r in rows):
            need_depth_model(pb, cfg.clip.depth.model, "clip.depth.model")
    if cfg is not None and not 0 <= cfg.quantile < 0.5:
        pb.add(f"quantile must be in [0, 0.5), got {cfg.quantile}", "e.g. quantile=0.02")
    pb.raise_if_any()
    return cfg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m annotate run", description=DESCRIPTION)
    add_arguments(p)
    args, extra = p.parse_known_args(argv)
    args.overrides += [e for e in extra if "=" in e and not e.startswith("-")]  # overrides after options
    extra = [e for e in extra if e not in args.overrides]
    if extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    return run_from_args(args)


def run_from_args(args: argparse.Namespace) -> int:
    from annotate.job import run
    from annotate.log import setup_logging

    setup_logging(args.verbose)
    _split_positionals(args)
    if args.print_config:
        try:
            print_config(make_config(args.config, args.overrides, args))
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    try:
        cfg = preflight(args)
        run(args.manifest, args.out, cfg)
    except PreflightError as e:
        return report(e)
    except (ManifestError, ConfigError, JobError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. the disk filled up during the final pass: the errno text and the file
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; finished clips are saved in {args.out}; rerun the same command to resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
