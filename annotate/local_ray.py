"""Ray for the annotation job (and eval run): join a cluster, or start a local Ray that listens on the loopback
address only and that a watchdog process cleans up when the driver dies, also by SIGKILL."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from annotate.job_config import JobError, RayConfig
from annotate.log import get_logger

log = get_logger()


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
