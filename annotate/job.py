"""The annotation job: a Ray Data pipeline over a clip manifest, written as resumable Parquet shards.

    python -m annotate run MANIFEST OUT [--config annotate/configs/default.yaml] [key=value ...]
        [--address ADDR] [--retry-failed] [--num-cpus N] [--depth-actors N] [--gpus-per-actor X]

Pipeline (:mod:`annotate.job_pipeline`, one manifest row per Ray block, so a crash costs one clip):
  rows -> map(triangulate, num_cpus=1) -> map(DepthUDF, actor pool, GPU per actor where present)
       -> map(finish) -> driver: rows streamed into shards of at most ``shard_rows`` rows.

Failure handling: each UDF catches per clip (a bad clip is a failed row, never a failed job); a worker
that dies is retried by Ray (``max_retries`` / ``max_restarts``); a clip whose block Ray still gives up on
is dropped by Ray Data (``max_errored_blocks=-1``) and gets a "worker crashed" row in the reconciliation
pass, so every pending clip ends with exactly one row. Resume: clips already in a complete shard are
skipped; a damaged shard (sha256 differs from manifest.json and it does not parse) is moved to
``OUT/quarantine/`` first and its clips are processed again. The quantile filter, exports and manifest.json
(:func:`annotate.output.finalize`) run at the end of every run, over all shards.

A local Ray (no ``--address`` / RAY_ADDRESS) listens on the loopback address only, and a watchdog process
kills what is left of it when the driver dies, also by SIGKILL (:mod:`annotate.local_ray`).

The job is split by what each part does: the config (:mod:`annotate.job_config`), the Ray pipeline
(:mod:`annotate.job_pipeline`), Ray start-up (:mod:`annotate.local_ray`), progress and summary
(:mod:`annotate.job_progress`), the command line and its preflight (:mod:`annotate.job_cli`). This module runs
the job (:func:`run`) and keeps the public names of all of them.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path

from annotate import output
from annotate.clip import empty_record, failed, finish_stage
from annotate.config import ConfigError, to_dict
from annotate.job_cli import cli, main
from annotate.job_config import CONFIG_DIR, JobConfig, JobError, RayConfig
from annotate.job_pipeline import DepthUDF, build_dataset, finish_udf, triangulate_udf
from annotate.job_progress import Progress, print_summary
from annotate.local_ray import start_ray, stop_ray
from annotate.log import get_logger, setup_logging
from annotate.manifest import load as load_manifest
from annotate.manifest import resolve_paths
from annotate.preflight import Problems, need_output_folder
from annotate.provenance import versions

__all__ = ["CONFIG_DIR", "DepthUDF", "JobConfig", "JobError", "Progress", "RayConfig", "build_dataset",
           "check_out_folder", "cli", "crashed_row", "finish_udf", "folder_lock", "main", "print_summary", "run",
           "setup_logging", "start_ray", "stop_ray", "triangulate_udf", "versions"]

log = get_logger()


@contextmanager
def folder_lock(out: Path):
    """One job per output folder; the OS drops the lock when the process dies (also on SIGKILL)."""
    try:
        f = open(out / ".lock", "w")
    except OSError as e:
        raise JobError(f"cannot write to the output folder {out}: {e.strerror or e}") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise JobError(f"{out} is in use by another annotate job") from None
    try:
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def run(manifest: str | os.PathLike, out: str | os.PathLike, cfg: JobConfig | None = None) -> dict:
    """Annotate every manifest clip not yet in ``out`` (all of them, or the failed ones again with
    ``cfg.retry_failed``), then filter, export and write manifest.json. Returns a summary dict."""
    cfg = dataclasses.replace(cfg or JobConfig(), manifest=str(manifest), out=str(out))  # as recorded
    manifest, out = Path(manifest), Path(out)
    check_out_folder(out)
    rows = load_manifest(manifest)  # raises ManifestError before anything is written
    if not 0 <= cfg.quantile < 0.5:
        raise ConfigError(f"quantile must be in [0, 0.5), got {cfg.quantile}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise JobError(f"cannot create the output folder {out}: {e.strerror or e}") from None
    with folder_lock(out):
        return _run_locked(manifest, rows, out, cfg)


def check_out_folder(out: Path) -> None:
    """OUT must be a folder we can write to, or creatable: one clear line instead of a traceback later."""
    problems = Problems("python -m annotate run")
    if not need_output_folder(problems, out, ""):
        raise JobError(problems.message())


def _run_locked(manifest: Path, rows: list[dict], out: Path, cfg: JobConfig) -> dict:
    t0, started = time.perf_counter(), output._now()
    n_tmp = output.clean_temp(out)
    if n_tmp:
        log.warning("removed %d temp file(s) of an interrupted run in %s", n_tmp, out)
    quarantined = output.quarantine_damaged(out)  # before anything reads the shards; their clips become pending
    done = {cid: r["status"] for cid, (_, _, r) in output.latest_rows(out, ["status"]).items()}
    ids = {r["clip_id"] for r in rows}
    redo = {c for c, s in done.items() if s != "ok"} if cfg.retry_failed else set()
    pending = [resolve_paths(r, manifest.parent) for r in rows if r["clip_id"] not in done or r["clip_id"] in redo]
    already = len(ids & set(done)) - len(redo & ids)
    log.info("%d of %d clips to process (%d already done%s)", len(pending), len(rows), already,
             f", {len(redo & ids)} failed to retry" if redo else "")

    writer = output.ShardWriter(out, cfg.shard_rows)
    prog = Progress(len(pending), cfg.progress)
    seen: set[str] = set()
    crashed = 0
    started_ray = False
    try:
        if pending:
            started_ray = start_ray(cfg.ray)
            ds = build_dataset(pending, cfg)
            last = time.perf_counter()
            for row in ds.iter_rows():
                cid = str(row["clip_id"])
                if cid in seen:  # a retried task may deliver twice; one row per clip
                    continue
                seen.add(cid)
                writer.add(dict(row))
                prog.update(str(row["status"]))
                if writer.buffer and time.perf_counter() - last > cfg.flush_seconds:
                    writer.flush()
                if not writer.buffer:
                    last = time.perf_counter()
            # Reconciliation: Ray dropped these clips' blocks after its retries.
            for r in pending:
                if r["clip_id"] not in seen:
                    crashed += 1
                    writer.add(crashed_row(r, cfg))
                    prog.update("failed")
    except Exception as e:
        raise JobError(f"the pipeline stopped ({e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                       f"finished clips are saved in {out}, rerun the same command to resume") from e
    finally:
        writer.flush()  # keep what finished, also on errors and Ctrl-C
        prog.close()
        if started_ray:
            stop_ray()

    seconds = time.perf_counter() - t0
    run_entry = {"started": started, "finished": output._now(), "processed": len(pending),
                 "already_done": already, "retry_failed": cfg.retry_failed, "worker_crashed": crashed,
                 "quarantined": quarantined, "seconds": round(seconds, 3),
                 "clips_per_hour": round(3600 * len(pending) / seconds, 2) if pending and seconds > 0 else 0.0}
    n_depth = sum(1 for r in rows if r.get("depth_path"))
    meta = {"input_manifest": str(manifest.resolve()), "config": to_dict(cfg), "versions": versions(),
            "depth": {"model": cfg.clip.depth.model, "clips_with_precomputed_depth": n_depth,
                      "clips_with_model_depth": len(rows) - n_depth}}
    summary = output.finalize(out, cfg.quantile, meta, run_entry, ids)
    if summary.unknown_ids:
        log.warning("%s holds %d row(s) of clips that are not in %s", out, summary.unknown_ids, manifest)
    result = {"out": str(out), "processed": len(pending), "already_done": already, "worker_crashed": crashed,
              "quarantined": quarantined, "seconds": seconds, "summary": summary}
    if cfg.progress:
        print_summary(result, out)
    return result


def crashed_row(row: dict, cfg: JobConfig) -> dict:
    rec = failed(empty_record(row), f"worker crashed: Ray gave up on this clip after "
                 f"{cfg.ray.max_retries} retries (see the Ray logs; rerun with --retry-failed)")
    return finish_stage(rec, cfg.clip)
