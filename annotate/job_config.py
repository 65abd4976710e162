"""The annotation job's typed config: Ray resources, shards, the filter, and the per-clip config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from annotate.clip import ClipConfig

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class RayConfig:
    address: str = ""  # '' = RAY_ADDRESS if set, else start a local Ray; 'auto' or host:port joins a cluster
    num_cpus: int | None = None  # local Ray only: CPUs to use (None = all cores)
    object_store_mb: int = 1024  # local Ray only: object store size (records are small; keep it bounded)
    triangulate_cpus: float = 1.0  # per triangulation task (also pycolmap's thread count)
    depth_actors: int = 1  # actors of the depth stage (one model each)
    gpus_per_actor: float | None = None  # None = 1 where the cluster has GPUs, else 0
    depth_cpus: float = 0.0  # CPUs per depth actor; != triangulate_cpus so Ray does not fuse the stages
    finish_cpus: float = 0.0  # finish is a few medians per clip
    max_retries: int = 2  # Ray retries of a task whose worker died
    max_restarts: int = 2  # Ray restarts of a dead depth actor (its task is retried as often)


@dataclass
class JobConfig:
    """``python -m annotate run``'s config (annotate/configs/*.yaml presets, dotted overrides)."""

    manifest: str = ""  # clip manifest (CSV or Parquet); the command's first word
    out: str = ""  # annotation output folder (created; reused to resume); the command's second word
    clip: ClipConfig = field(default_factory=ClipConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    shard_rows: int = 256  # maximum rows per shard
    flush_seconds: float = 300.0  # also flush a partial shard this often (bounds work lost to a kill)
    quantile: float = 0.02  # the filter's lower quantile (upper: 1 - quantile)
    retry_failed: bool = False  # reprocess clips whose row is failed; their new rows replace the old
    progress: bool = True  # progress bar and summary table


class JobError(RuntimeError):
    """The job cannot run or stopped; the message says what to do."""
