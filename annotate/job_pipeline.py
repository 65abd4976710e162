"""The annotation job's Ray Data pipeline: one manifest row per block, three stages.

  rows -> map(triangulate, num_cpus=1) -> map(DepthUDF, actor pool, GPU per actor where present)
       -> map(finish)
Only the compact per-clip records of :mod:`annotate.clip` travel between stages. Each UDF catches per clip (a
bad clip is a failed row, never a failed job).
"""

from __future__ import annotations

import copy
import logging
import time
import warnings

from annotate.clip import ClipConfig, DepthStage, empty_record, failed, finish_stage, triangulate_stage
from annotate.job_config import JobConfig
from annotate.log import get_logger

log = get_logger()

# ------------------------------------------------------------------------------------------------ UDFs
# Module-level so Ray pickles them by reference (workers import the installed package).


def triangulate_udf(row: dict, cfg: ClipConfig) -> dict:
    c0 = time.process_time()  # CPU seconds of this worker (all its threads): a load-independent cost
    try:
        rec = triangulate_stage(row, cfg)
    except BaseException as e:  # noqa: BLE001 - triangulate_stage catches clip errors; this is a last guard
        rec = failed(empty_record(row), f"triangulation error: {e.__class__.__name__}: {e}")
    rec["cpu_seconds"] = time.process_time() - c0
    return rec


class DepthUDF:
    """One depth model per actor, loaded on the first clip that needs it (never for precomputed depth)."""

    def __init__(self, cfg, threads: int = 1):
        self.stage = DepthStage(cfg)
        self.threads = max(1, int(threads))
        self._torch_ready = False

    def __call__(self, rec: dict) -> dict:
        rec = dict(rec)
        if rec["status"] == "ok" and not rec["depth_path"] and not self._torch_ready:
            import torch

            torch.set_num_threads(self.threads)  # stay within the actor's CPU share
            self._torch_ready = True
        c0 = time.process_time()
        try:
            rec = self.stage(rec)
        except BaseException as e:  # noqa: BLE001
            rec = failed(rec, f"depth error: {e.__class__.__name__}: {e}")
        rec["cpu_seconds"] = float(rec.get("cpu_seconds", 0.0)) + time.process_time() - c0
        return rec


def finish_udf(rec: dict, cfg: ClipConfig) -> dict:
    try:
        out = finish_stage(dict(rec), cfg)
    except BaseException as e:  # noqa: BLE001
        out = finish_stage(failed(dict(rec), f"scale error: {e.__class__.__name__}: {e}"), cfg)
    out["cpu_seconds"] = float(rec.get("cpu_seconds", 0.0))
    return out


def build_dataset(rows: list[dict], cfg: JobConfig):
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.max_errored_blocks = -1  # a block Ray gave up on = one clip; reconciliation gives it a failed row
    ctx.enable_progress_bars = False  # ours is clip-level
    ctx.print_on_execution_start = False
    if not log.isEnabledFor(logging.INFO):  # Ray Data's own progress/notice lines; ours are clip-level
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    rc = cfg.ray
    clip_cfg = copy.deepcopy(cfg.clip)
    if clip_cfg.sfm.num_threads == -1:  # not all cores: as many as the task reserved
        clip_cfg.sfm.num_threads = max(1, int(rc.triangulate_cpus))
    gpus = rc.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    depth_cpus = rc.depth_cpus
    if not gpus and depth_cpus == rc.triangulate_cpus:
        depth_cpus = rc.triangulate_cpus / 2  # same resources would fuse the stages into one serial actor
    # Ray Data's default for actors is to restart forever, which would loop on a clip that kills its worker
    # every time: bound retries and restarts. Ray 2.60 marks ``**ray_remote_args`` deprecated but has no
    # named parameter for these yet, hence the filtered warning.
    retry = dict(max_retries=rc.max_retries)
    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        ds = ds.map(triangulate_udf, fn_kwargs={"cfg": clip_cfg},
                    num_cpus=rc.triangulate_cpus, **retry)
        ds = ds.map(DepthUDF, fn_constructor_kwargs={"cfg": clip_cfg.depth, "threads": max(1, round(depth_cpus))},
                    compute=ray.data.ActorPoolStrategy(size=max(1, rc.depth_actors)), num_cpus=depth_cpus,
                    num_gpus=gpus or None, max_restarts=rc.max_restarts, max_task_retries=rc.max_restarts)
        ds = ds.map(finish_udf, fn_kwargs={"cfg": clip_cfg}, num_cpus=rc.finish_cpus, **retry)
    return ds
