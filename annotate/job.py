"""The annotation job: a Ray Data pipeline over a clip manifest, written as resumable Parquet shards.

    python -m annotate run MANIFEST OUT [--config annotate/configs/default.yaml] [key=value ...]
        [--address ADDR] [--retry-failed] [--num-cpus N] [--depth-actors N] [--gpus-per-actor X]

Pipeline (one manifest row per Ray block, so a crash costs one clip):
  rows -> map(triangulate, num_cpus=1) -> map(DepthUDF, actor pool, GPU per actor where present)
       -> map(finish) -> driver: rows streamed into shards of at most ``shard_rows`` rows.
Only the compact per-clip records of :mod:`annotate.clip` travel between stages.

Failure handling: each UDF catches per clip (a bad clip is a failed row, never a failed job); a worker
that dies is retried by Ray (``max_retries`` / ``max_restarts``); a clip whose block Ray still gives up on
is dropped by Ray Data (``max_errored_blocks=-1``) and gets a "worker crashed" row in the reconciliation
pass, so every pending clip ends with exactly one row. Resume: clips already in a complete shard are
skipped; a damaged shard (sha256 differs from manifest.json and it does not parse) is moved to
``OUT/quarantine/`` first and its clips are processed again. The quantile filter, exports and manifest.json
(:func:`annotate.output.finalize`) run at the end of every run, over all shards.

A local Ray (no ``--address`` / RAY_ADDRESS) listens on the loopback address only, and a watchdog process
kills what is left of it when the driver dies, also by SIGKILL (see :func:`_start_local_ray`).
"""

from __future__ import annotations

import argparse
import copy
import fcntl
import logging
import os
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from annotate import output
from annotate.clip import ClipConfig, DepthStage, empty_record, failed, finish_stage, resolve_paths, triangulate_stage
from annotate.config import ConfigError, load_config, to_dict
from annotate.manifest import ManifestError
from annotate.manifest import load as load_manifest

log = logging.getLogger("realcam")

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
    clip: ClipConfig = field(default_factory=ClipConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    shard_rows: int = 256  # maximum rows per shard
    flush_seconds: float = 300.0  # also flush a partial shard this often (bounds work lost to a kill)
    quantile: float = 0.02  # the filter's lower quantile (upper: 1 - quantile)
    retry_failed: bool = False  # reprocess clips whose row is failed; their new rows replace the old
    progress: bool = True  # progress bar and summary table
    debug_crash_ids: list[str] = field(default_factory=list)  # testing: hard-kill the worker on these clips


class JobError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------------ UDFs
# Module-level so Ray pickles them by reference (workers import the installed package).


def triangulate_udf(row: dict, cfg: ClipConfig, crash_ids: tuple[str, ...] = ()) -> dict:
    if row["clip_id"] in crash_ids:
        os._exit(1)  # simulate a hard worker crash (segfault, OOM kill)
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


# ------------------------------------------------------------------------------------------------ helpers


def versions() -> dict:
    out = {}
    for name, dist in (("realcam", "realcam"), ("pycolmap", "pycolmap"), ("ray", "ray"),
                       ("transformers", "transformers"), ("torch", "torch"), ("pyarrow", "pyarrow"),
                       ("numpy", "numpy")):
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


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


def start_ray(cfg: RayConfig) -> bool:
    """Join ``address`` / RAY_ADDRESS or start a local Ray. Returns whether we started (and must stop) it."""
    import ray

    if ray.is_initialized():
        return False
    address = cfg.address or os.environ.get("RAY_ADDRESS", "")
    quiet = dict(logging_level=logging.WARNING, log_to_driver=log.isEnabledFor(logging.INFO))
    if address:
        ray.init(address=address, **quiet)  # the cluster's own network and authentication settings
    else:
        _start_local_ray(cfg, quiet)
    return True


# Local Ray, loopback only. Ray binds every server (GCS, raylet, object manager, workers, dashboard and
# runtime-env agents, metrics) to the loopback address when the node's IP is a loopback one, and it picks a
# loopback node IP only in its single-machine mode (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0; ray.init turns an
# explicit _node_ip_address="127.0.0.1" back into the machine's routable IP).
# Authentication: with loopback-only servers no other machine can reach this Ray, so a local run keeps
# RAY_AUTH_MODE=disabled unless the user set it. Otherwise Ray 2.60 turns token auth on for every new local
# Ray and writes a token to ~/.ray/auth_token (a side effect in the user's home). Other users of the same
# machine can still connect to 127.0.0.1: on a shared multi-user host set RAY_AUTH_MODE=token, which this job
# respects. Joining a cluster leaves both to the cluster.
_SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

# The watchdog (stdlib only, in its own session so a terminal's Ctrl-C or a killpg of the driver's group misses
# it) reads the pids of the local Ray's own processes (the driver's children that ray.init started) from a pipe
# whose only write end the driver holds, and every half second records their descendants (agents, workers).
# EOF comes when the driver closes the pipe after ray.shutdown() or dies in any way, SIGKILL included; the
# watchdog then SIGKILLs every recorded process still alive (same pid and start time). Ray's kernel
# fate-sharing ends GCS and raylet with the driver, but the dashboard and runtime-env agents (children of the
# raylet) hang on to their dead GCS without this. Processes are told apart by pid + start time, not by an
# environment mark: Ray's setproctitle overwrites /proc/PID/environ.
_WATCHDOG = r"""
import os, select, signal, sys, time
if not os.path.isdir("/proc"):
    sys.exit(0)
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
fd = int(sys.argv[1])

def table():  # pid -> (ppid, start time, state)
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
                v = st[st.rindex(")") + 2:].split()
                out[int(d)] = (int(v[1]), v[19], v[0])
            except (OSError, ValueError, IndexError):
                pass
    return out

known, buf = {}, b""  # pid -> start time: the local Ray's processes seen so far

def record(t):
    stack = [p for p, s in known.items() if p in t and t[p][1] == s]
    while stack:
        pid = stack.pop()
        for c, v in t.items():
            if v[0] == pid and c not in known:
                known[c] = v[1]
                stack.append(c)

while True:
    if select.select([fd], [], [], 0.5)[0]:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        *lines, buf = (buf + chunk).split(b"\n")
        for ln in lines:
            pid, start = ln.split()
            known[int(pid)] = start.decode()
    if known:
        record(table())

deadline = time.monotonic() + 10
while known and time.monotonic() < deadline:
    t = table()
    record(t)
    alive = [p for p, s in known.items() if p in t and t[p][1] == s and t[p][2] != "Z"]
    if not alive:
        break
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    time.sleep(0.1)
"""


@dataclass
class _LocalRay:
    watchdog: object  # subprocess.Popen
    pipe: int  # the write end; closing it (or dying) starts the watchdog's sweep


_local: _LocalRay | None = None


def _children() -> dict[int, str]:
    """This process's children: pid -> start time (field 22 of /proc/PID/stat), {} without /proc."""
    out = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for d in names:
        if d.isdigit():
            try:
                st = Path(f"/proc/{d}/stat").read_text()
                v = st[st.rindex(")") + 2:].split()
                if int(v[1]) == os.getpid():
                    out[int(d)] = v[19]
            except (OSError, ValueError, IndexError):
                pass
    return out


def _start_local_ray(cfg: RayConfig, quiet: dict) -> None:
    global _local
    import subprocess

    import ray
    import ray._private.ray_constants as ray_constants

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # see the note above
    r, w = os.pipe()  # not inheritable: only this process holds the write end
    try:
        dog = subprocess.Popen([sys.executable, "-I", "-S", "-c", _WATCHDOG, str(r)], pass_fds=(r,),
                               start_new_session=True, stdin=subprocess.DEVNULL)
    finally:
        os.close(r)
    _local = _LocalRay(dog, w)
    before = _children()
    # Both: the variable for Ray's child processes, the constant for a driver that imported ray already.
    saved_env, saved_const = os.environ.get(_SINGLE_MACHINE), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_SINGLE_MACHINE], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        ray.init(num_cpus=cfg.num_cpus or os.cpu_count(), include_dashboard=False,
                 object_store_memory=int(cfg.object_store_mb) << 20, **quiet)
        ip = ray.util.get_node_ip_address()
        # ray.init is synchronous: the children that appeared meanwhile are the local Ray's own processes
        started = {pid: st for pid, st in _children().items() if pid not in before}
        os.write(w, "".join(f"{pid} {st}\n" for pid, st in started.items()).encode())
    except BaseException:
        stop_ray()
        raise
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_const
        if saved_env is None:
            os.environ.pop(_SINGLE_MACHINE, None)
        else:
            os.environ[_SINGLE_MACHINE] = saved_env
    if not _is_loopback(ip):  # a Ray version that ignores the switch would listen on all interfaces
        stop_ray()
        raise JobError(f"the local Ray took node IP {ip}, not a loopback address; refusing to run it "
                       f"reachable from the network (start a Ray cluster and pass --address instead)")


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        a = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost"
    return a.is_loopback or bool(getattr(a, "ipv4_mapped", None) and a.ipv4_mapped.is_loopback)


def stop_ray() -> None:
    """Shut down the Ray this process started; for a local one, let its watchdog sweep what is left."""
    global _local
    import ray

    try:
        ray.shutdown()
    finally:
        loc, _local = _local, None
        if loc is not None:
            os.close(loc.pipe)
            try:
                loc.watchdog.wait(timeout=15)
            except Exception:  # noqa: BLE001 - it ends on its own within seconds
                pass


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
        ds = ds.map(triangulate_udf, fn_kwargs={"cfg": clip_cfg, "crash_ids": tuple(cfg.debug_crash_ids)},
                    num_cpus=rc.triangulate_cpus, **retry)
        ds = ds.map(DepthUDF, fn_constructor_kwargs={"cfg": clip_cfg.depth, "threads": max(1, round(depth_cpus))},
                    compute=ray.data.ActorPoolStrategy(size=max(1, rc.depth_actors)), num_cpus=depth_cpus,
                    num_gpus=gpus or None, max_restarts=rc.max_restarts, max_task_retries=rc.max_restarts)
        ds = ds.map(finish_udf, fn_kwargs={"cfg": clip_cfg}, num_cpus=rc.finish_cpus, **retry)
    return ds


class Progress:
    """Clips done / failed / clips per hour on stderr (rich), or nothing."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.failed, self.t0 = total, 0, 0, time.perf_counter()
        self.bar = None
        if enabled and total:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(TextColumn("annotating"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                    console=Console(stderr=True), transient=False)
            self.task = self.bar.add_task("clips", total=total, info="")
            self.bar.start()

    def rate(self) -> float:
        dt = time.perf_counter() - self.t0
        return 3600.0 * self.done / dt if dt > 0 else 0.0

    def update(self, status: str) -> None:
        self.done += 1
        self.failed += status != "ok"
        if self.bar:
            self.bar.update(self.task, completed=self.done,
                            info=f"failed {self.failed}  {self.rate():.0f} clips/h")

    def close(self) -> None:
        if self.bar:
            self.bar.stop()


# ------------------------------------------------------------------------------------------------ run


def run(manifest: str | os.PathLike, out: str | os.PathLike, cfg: JobConfig | None = None) -> dict:
    """Annotate every manifest clip not yet in ``out`` (all of them, or the failed ones again with
    ``cfg.retry_failed``), then filter, export and write manifest.json. Returns a summary dict."""
    cfg = cfg or JobConfig()
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
    if out.exists() and not out.is_dir():
        raise JobError(f"{out} exists and is not a folder; give a new or an existing output folder")
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise JobError(f"cannot create the output folder {out}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "is read-only" if probe == out else f"cannot be created ({probe} is read-only)"
        raise JobError(f"the output folder {out} {what}; give a folder you can write to")


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


def print_summary(result: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    s: output.Summary = result["summary"]
    con = Console()
    t = Table(title=f"annotation of {s.total} clips", show_header=True)
    t.add_column("")
    splits = sorted(s.by_split)
    for sp in splits:
        t.add_column(sp, justify="right")
    t.add_column("all", justify="right")
    t.add_row("rows", *[str(s.by_split[sp]) for sp in splits], str(s.total))
    t.add_row("kept", *[str(s.kept_by_split.get(sp, 0)) for sp in splits], str(s.kept))
    t.add_row("ok", "", *([""] * (len(splits) - 1)), str(s.by_status["ok"]))
    t.add_row("failed", "", *([""] * (len(splits) - 1)), str(s.by_status["failed"]))
    con.print(t)
    th = s.thresholds
    if th and th.scale_max:
        con.print(f"filter q={th.quantile:g}: scale_max in [{th.scale_max[0]:.4g}, {th.scale_max[1]:.4g}], "
                  f"scale_min in [{th.scale_min[0]:.4g}, {th.scale_min[1]:.4g}]")
    if s.failure_reasons:
        con.print("top failure reasons: " + "; ".join(f"{k} ({v})" for k, v in list(s.failure_reasons.items())[:5]))
    for q in result.get("quarantined", []):
        con.print(f"damaged shard moved: {q['moved']} ({q['reason']}); its clips were processed again")
    con.print(f"this run: {result['processed']} clip(s) processed, {result['already_done']} already done, "
              f"{result['worker_crashed']} worker crash(es), {result['seconds']:.1f} s")
    con.print(f"output: {out}/clips, {out}/export, {out}/manifest.json; "
              f"report: python -m annotate report {out}")


# ------------------------------------------------------------------------------------------------ CLI


def make_config(config: str | None, overrides: list[str], args: argparse.Namespace | None = None) -> JobConfig:
    cfg = load_config(JobConfig, config, overrides)
    if args is not None:
        if getattr(args, "address", None):
            cfg.ray.address = args.address
        if getattr(args, "num_cpus", None) is not None:
            cfg.ray.num_cpus = args.num_cpus
        if getattr(args, "depth_actors", None) is not None:
            cfg.ray.depth_actors = args.depth_actors
        if getattr(args, "gpus_per_actor", None) is not None:
            cfg.ray.gpus_per_actor = args.gpus_per_actor
        if getattr(args, "retry_failed", False):
            cfg.retry_failed = True
        if getattr(args, "no_progress", False):
            cfg.progress = False
    return cfg


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="clip manifest (CSV or Parquet)")
    p.add_argument("out", help="annotation output folder (created; reused to resume)")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. shard_rows=100 clip.depth.model=/path")
    p.add_argument("--config", help=f"YAML preset, e.g. {CONFIG_DIR / 'default.yaml'}")
    p.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--retry-failed", action="store_true", help="reprocess clips whose row is failed")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray")
    p.add_argument("--depth-actors", type=int, help="depth model actors")
    p.add_argument("--gpus-per-actor", type=float, help="GPUs per depth actor (default 1 where GPUs exist)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or summary table")
    p.add_argument("-v", "--verbose", action="count", default=0, help="-v info, -vv debug logging")


class _StderrHandler(logging.StreamHandler):
    """Writes to sys.stderr as it is at each record: a caller that swaps it (pytest's capture) and closes the
    old one does not leave the handler writing to a closed file."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if not verbose else logging.INFO if verbose == 1 else logging.DEBUG
    logger = logging.getLogger("realcam")
    if not logger.handlers:
        h = _StderrHandler()
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        logger.addHandler(h)
    logger.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m annotate run", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args, extra = p.parse_known_args(argv)
    args.overrides += [e for e in extra if "=" in e and not e.startswith("-")]  # overrides after options
    extra = [e for e in extra if e not in args.overrides]
    if extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    return run_from_args(args)


def run_from_args(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    try:
        cfg = make_config(args.config, args.overrides, args)
        run(args.manifest, args.out, cfg)
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
