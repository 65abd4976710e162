"""Interactive trajectory editor: ``python -m train.inference.editor --image IMG [--depth-file D] [--port 8765]``.

A tiny self-contained web app (standard library ``http.server``, loopback only, no network, no WebGL, no
external scripts): the page shows the image's metric point cloud in a 3D view drawn on a 2D canvas (drag to
orbit, wheel to zoom) with the keyframe cameras and the interpolated path (drag a keyframe's frustum to
move it in the view plane, shift+drag or wheel while dragging to move it along the view direction, alt/ctrl+click
a point to add a keyframe at the current camera looking at it), the splatted view of the current
camera (moved with buttons or keys W/S A/D R/F Q/E T/G), the keyframe list, a preview player and the
RealEstate10K export. All scene work (depth, splatting, SE(3) interpolation, export) is done server side by
:class:`EditorState`, which is usable (and tested) without any GUI.

Keyframe 0 is the image's own camera (identity) and cannot be moved or removed; poses are metres in its frame.

Security: any web page open in the user's browser can send requests to a local port, so the server trusts no
request. Export writes only into the ``--export-dir`` folder under generated names (a request never names a
file); POSTs must be ``application/json`` (a cross-origin page cannot send that without a CORS preflight, which
is refused); the Host and Origin headers must name the served address (DNS rebinding, foreign pages: 403);
bodies are size-limited (413) and every connection has a deadline (408), and a bad body or value gets 400 with a
message. It binds 127.0.0.1 by default; other addresses need ``--allow-remote`` (there is no authentication).
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import itertools
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from annotate.camera import camera_centres, orthonormality_error, quat_to_rotmat, rotmat_to_quat, to_4x4
from annotate.files import atomic_write_text
from annotate.re10k import DEFAULT_ROTATION_TOL, format_camera_text

from .scene import PointCloud, point_cloud, render_preview, splat
from .trajectory import (
    Trajectory,
    keyframe_trajectory,
    look_at,
    make_pose,
    rot_x,
    rot_y,
    to_camera_trajectory,
)

log = logging.getLogger("realcam.editor")

MOVES = {  # action -> (translation axis and sign, or rotation)
    "forward": ("t", 2, 1), "back": ("t", 2, -1), "right": ("t", 0, 1), "left": ("t", 0, -1),
    "down": ("t", 1, 1), "up": ("t", 1, -1),
    "yaw_right": ("r", "y", 1), "yaw_left": ("r", "y", -1), "pitch_down": ("r", "x", 1), "pitch_up": ("r", "x", -1),
}
MAX_METRES = 1e4  # bound on any position: beyond it the interpolation and the 9-decimal export lose meaning
MAX_TIME = 1e6  # bound on keyframe times
DEFAULT_EXPORT_DIR = "outputs/editor"


def check_pose(c2w, name: str = "c2w") -> np.ndarray:
    """A finite rigid ``[3,4]``/``[4,4]`` pose (rotation orthonormal to RealEstate10K's file tolerance, so
    poses the page sends back rounded still pass), returned as 4x4 with the rotation made exactly orthonormal."""
    try:
        m = np.asarray(c2w, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a 3x4 or 4x4 matrix of numbers") from None
    if m.shape not in ((3, 4), (4, 4)):
        raise ValueError(f"{name} must be a 3x4 or 4x4 matrix, got shape {list(m.shape)}")
    if not np.isfinite(m).all():
        raise ValueError(f"{name} has non-finite values")
    if m.shape == (4, 4) and np.abs(m[3] - [0, 0, 0, 1]).max() > DEFAULT_ROTATION_TOL:
        raise ValueError(f"{name}'s last row must be 0 0 0 1, got {m[3].tolist()}")
    err = float(orthonormality_error(m[:3, :3]))
    if err > DEFAULT_ROTATION_TOL:
        raise ValueError(f"{name} is not a rigid pose: its rotation part is not a rotation (orthonormality error "
                         f"{err:.3g} > {DEFAULT_ROTATION_TOL:g})")
    if np.abs(m[:3, 3]).max() > MAX_METRES:
        raise ValueError(f"{name} position is beyond {MAX_METRES:g} m")
    out = to_4x4(m[:3])
    out[:3, :3] = quat_to_rotmat(rotmat_to_quat(m[:3, :3]))
    return out


def check_number(v, name: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v) or not lo <= v <= hi:
        raise ValueError(f"{name} must be a finite number in [{lo:g}, {hi:g}], got {v!r}")
    return v


def check_int(v, name: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, got {v!r}")
    return int(v)


def check_point(v, name: str) -> np.ndarray:
    try:
        p = np.asarray(v, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be 3 numbers") from None
    if p.shape != (3,) or not np.isfinite(p).all() or np.abs(p).max() > MAX_METRES:
        raise ValueError(f"{name} must be 3 finite numbers within {MAX_METRES:g} m, got {v!r}")
    return p


class EditorState:
    """Keyframes, settings and renders of one editing session (thread-safe)."""

    def __init__(self, image: np.ndarray, depth: np.ndarray, intr: np.ndarray, frames: int = 16, stride: int = 3,
                 point_size: int = 2, max_view_points: int = 20000,
                 export_dir: str | Path = DEFAULT_EXPORT_DIR, outlier_removal: bool = True):
        self.image = np.asarray(image, np.uint8)
        self.hw = self.image.shape[:2]
        self.intr = np.asarray(intr, np.float64)
        self.frames, self.stride, self.point_size = int(frames), int(stride), int(point_size)
        self.loop = self.ease = False
        self.cloud: PointCloud = point_cloud(self.image, depth, self.intr, outlier_removal=outlier_removal)
        self.view_cloud = self.cloud.subsample(max_view_points)
        self.keyframes: list[dict] = [{"t": 0.0, "c2w": np.eye(4)}]
        self.camera = np.eye(4)  # the free camera the user moves
        self.export_dir = Path(export_dir)
        self._lock = threading.RLock()
        self._preview: np.ndarray | None = None
        self.selftest_report: dict | None = None  # what the page's ?selftest=drag run posted

    # -------------------------------------------------------------------------------- keyframes
    def _changed(self) -> None:
        self._preview = None

    def add_keyframe(self, c2w: np.ndarray | None = None, t: float | None = None) -> int:
        """Add (or replace, at an existing t) a keyframe; default pose = the free camera, t = last t + 1."""
        with self._lock:
            c2w = check_pose(self.camera if c2w is None else c2w)
            t = self.keyframes[-1]["t"] + 1.0 if t is None else check_number(t, "t", hi=MAX_TIME)
            if t <= 0:
                raise ValueError("keyframe times must be > 0 (t = 0 is the image's camera)")
            self.keyframes = [k for k in self.keyframes if k["t"] != t] + [{"t": t, "c2w": c2w}]
            self.keyframes.sort(key=lambda k: k["t"])
            self._changed()
            return next(i for i, k in enumerate(self.keyframes) if k["t"] == t)

    def add_keyframe_looking_at(self, point, t: float | None = None) -> int:
        """Add a keyframe at the free camera's position turned to look at the world `point`."""
        with self._lock:
            return self.add_keyframe(look_at(self.camera[:3, 3], check_point(point, "look_at")), t)

    def update_keyframe(self, index: int, c2w: np.ndarray | None = None, t: float | None = None) -> None:
        with self._lock:
            index = self._index(index)
            if index == 0:
                raise ValueError("keyframe 0 is the image's camera and cannot change")
            kf = self.keyframes[index]
            del self.keyframes[index]
            try:
                self.add_keyframe(kf["c2w"] if c2w is None else c2w, kf["t"] if t is None else t)
            except Exception:
                self.keyframes.insert(index, kf)
                raise

    def remove_keyframe(self, index: int) -> None:
        with self._lock:
            if self._index(index) == 0:
                raise ValueError("keyframe 0 is the image's camera and cannot be removed")
            del self.keyframes[index]
            self._changed()

    def _index(self, index) -> int:
        return check_int(index, "index", 0, len(self.keyframes) - 1)

    def goto(self, index: int) -> None:
        """Put the free camera at a keyframe."""
        with self._lock:
            self.camera = to_4x4(self.keyframes[self._index(index)]["c2w"])

    def set_camera(self, c2w) -> None:
        with self._lock:
            self.camera = check_pose(c2w)

    def clear(self) -> None:
        with self._lock:
            self.keyframes = self.keyframes[:1]
            self.camera = np.eye(4)
            self._changed()

    def settings(self, frames: int | None = None, loop: bool | None = None, ease: bool | None = None) -> None:
        with self._lock:
            for name, v in (("loop", loop), ("ease", ease)):
                if v is not None and not isinstance(v, bool):
                    raise ValueError(f"{name} must be true or false, got {v!r}")
            if frames is not None:
                self.frames = check_int(frames, "frames", 2, 256)
            if loop is not None:
                self.loop = loop
            if ease is not None:
                self.ease = ease
            self._changed()

    # -------------------------------------------------------------------------------- free camera
    def move(self, action: str, step: float = 0.1, angle_deg: float = 5.0) -> np.ndarray:
        """Move the free camera in its own frame: metres for translations, degrees for turns."""
        if action == "reset":
            self.camera = np.eye(4)
            return self.camera
        if not isinstance(action, str) or action not in MOVES:
            raise ValueError(f"unknown move {action!r}; one of {sorted(MOVES)} or reset")
        step = check_number(step, "step", -MAX_METRES, MAX_METRES)
        angle_deg = check_number(angle_deg, "angle", -360.0, 360.0)
        kind, axis, sign = MOVES[action]
        with self._lock:
            if kind == "t":
                d = np.zeros(3)
                d[axis] = sign * step
                self.camera = self.camera @ make_pose(np.eye(3), d)
            else:
                a = np.radians(sign * angle_deg)
                r = rot_y(a) if axis == "y" else rot_x(-a)
                self.camera = self.camera @ make_pose(r, np.zeros(3))
            return self.camera

    # -------------------------------------------------------------------------------- outputs
    def trajectory(self) -> Trajectory:
        with self._lock:
            if len(self.keyframes) == 1:
                return Trajectory(np.tile(np.eye(4), (self.frames, 1, 1)))
            kfs = [{"t": k["t"], "c2w": k["c2w"]} for k in self.keyframes]
            return keyframe_trajectory(kfs, self.frames, loop=self.loop, ease=self.ease, relative=False)

    def preview(self) -> np.ndarray:
        with self._lock:
            if self._preview is None:
                self._preview = render_preview(self.cloud, self.trajectory().c2w, self.intr, self.hw, self.point_size)
            return self._preview

    def render_view(self, c2w: np.ndarray | None = None) -> np.ndarray:
        return splat(self.cloud, self.camera if c2w is None else c2w, self.intr, self.hw, self.point_size)[0]

    def re10k_text(self) -> str:
        return format_camera_text(to_camera_trajectory(self.trajectory(), self.intr, self.hw, self.stride,
                                                       url="realcam://editor"))

    def export(self) -> Path:
        """Write ``trajectory_YYYYmmdd-HHMMSS[-n].txt`` (RealEstate10K) and its ``.keyframes.json`` into the
        export folder (names never come from a request); returns the camera file's path. Both files are written
        atomically, and a failure leaves neither half of the pair behind."""
        with self._lock:  # one export at a time: the name check and the writes must not interleave
            text = self.re10k_text()
            keys = json.dumps(self.keyframes_json(), indent=1) + "\n"
            self.export_dir.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for n in itertools.count(1):
                stem = f"trajectory_{stamp}" + (f"-{n}" if n > 1 else "")
                cam, kf = self.export_dir / f"{stem}.txt", self.export_dir / f"{stem}.keyframes.json"
                if not cam.exists() and not kf.exists():
                    break
            try:
                atomic_write_text(cam, text)
                atomic_write_text(kf, keys)
            except BaseException:
                cam.unlink(missing_ok=True)
                raise
            return cam.resolve()

    def keyframes_json(self) -> dict:
        return {"keyframes": [{"t": k["t"], "c2w": np.round(k["c2w"], 9).tolist()} for k in self.keyframes],
                "loop": self.loop, "ease": self.ease}

    def state(self) -> dict:
        with self._lock:
            traj = self.trajectory()
            return {
                "width": self.hw[1], "height": self.hw[0], "intrinsics": self.intr.tolist(), "frames": self.frames,
                "loop": self.loop, "ease": self.ease, "points": len(self.cloud),
                "keyframes": [{"t": k["t"], "c2w": np.round(k["c2w"], 6).tolist()} for k in self.keyframes],
                "camera": np.round(self.camera, 6).tolist(),
                "path": np.round(camera_centres(traj.c2w), 5).tolist(),
                "export_dir": str(self.export_dir.resolve()),
            }

    def points_json(self) -> dict:
        c = self.view_cloud
        return {"xyz": np.round(c.xyz, 3).reshape(-1).tolist(), "rgb": c.rgb.reshape(-1).astype(int).tolist()}


# ------------------------------------------------------------------------------------------------ HTTP

MAX_BODY = 1 << 20  # bytes; the largest real request (a selftest report) is a few kB
TIMEOUT = 10.0  # seconds a client has to send its whole request (and the bound on each socket operation)
# the fields each POST accepts: anything else (a `path` for export, say) is refused, not ignored
FIELDS = {"/api/camera": {"action", "step", "angle", "c2w"},
          "/api/keyframes": {"op", "index", "c2w", "look_at", "t"},
          "/api/settings": {"frames", "loop", "ease"},
          "/api/export": set()}
_SECURITY_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                     "Content-Security-Policy": "frame-ancestors 'none'", "Referrer-Policy": "no-referrer"}


class HTTPError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(img, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def resolve_host(host: str, allow_remote: bool = False) -> tuple[int, str]:
    """(address family, IP) to bind for ``host`` (an address or a name); non-loopback only with allow_remote."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ValueError(f"cannot resolve host {host!r}: {getattr(e, 'strerror', None) or e}") from None
    addrs = [(fam, info[0]) for fam, _, _, _, info in infos if fam in (socket.AF_INET, socket.AF_INET6)]
    if not addrs:
        raise ValueError(f"host {host!r} has no IPv4 or IPv6 address")
    addrs.sort(key=lambda a: a[0] != socket.AF_INET)  # prefer IPv4: what 127.0.0.1 / localhost links reach
    loopback = [a for a in addrs if ipaddress.ip_address(a[1].split("%")[0]).is_loopback]
    if loopback:
        return loopback[0]
    if not allow_remote:
        raise ValueError(f"host {host!r} ({addrs[0][1]}) is not a loopback address; the editor has no "
                         "authentication, so serving beyond this machine needs --allow-remote")
    return addrs[0]


def _split_host(value: str) -> tuple[str, int | None] | None:
    """'name:port' / '[v6]:port' / 'name' -> (lower-case name, port or None); None when malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1:]
    else:
        name, _, port = value.partition(":")
        rest = ":" + port if port else ""
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return None
    return name.rstrip("."), int(rest[1:]) if rest else None


class AllowedHosts:
    """Which Host header values (``name:port``) name a server that was asked to listen on ``host`` and bound
    ``ip``:``port``. DNS rebinding needs a name the attacker controls, so names are listed explicitly (the one
    given, ``localhost`` on loopback, this machine's names on a wildcard bind), while IP literals are checked
    against the bound address (any address on a wildcard bind: an IP literal cannot be rebound)."""

    def __init__(self, host: str, ip: str, port: int):
        bound = ipaddress.ip_address(ip.split("%")[0])
        self.port, self.loopback, self.wildcard = port, bound.is_loopback, bound.is_unspecified
        self.names = {host.lower().rstrip(".")} - {ip.lower()}
        self.ips = {bound}
        if self.loopback:
            self.names.add("localhost")
            self.ips |= {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
        if self.wildcard:
            self.names |= {socket.gethostname().lower(), socket.getfqdn().lower(), "localhost"}

    def __call__(self, value: str) -> bool:
        parts = _split_host(value)
        if parts is None or (parts[1] or 80) != self.port:
            return False
        if parts[0] in self.names:
            return True
        try:
            ip = ipaddress.ip_address(parts[0])
        except ValueError:
            return False
        return self.wildcard or ip in self.ips


class EditorServer(ThreadingHTTPServer):
    """The editor's HTTP server: one thread per connection, and the addresses requests may name."""

    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, state: EditorState | None = None,
                 allow_remote: bool = False, timeout: float = TIMEOUT, max_body: int = MAX_BODY):
        family, ip = resolve_host(host, allow_remote)
        self.address_family = family
        self.state, self.io_timeout, self.max_body = state, float(timeout), int(max_body)
        super().__init__((ip, port), EditorHandler)
        self.port = self.server_address[1]
        self.host_allowed = AllowedHosts(host, ip, self.port)
        self.loopback = self.host_allowed.loopback

    def url(self) -> str:
        ip = self.server_address[0]
        return f"http://{f'[{ip}]' if ':' in ip else ip}:{self.port}/"

    def handle_error(self, request, client_address):  # never a traceback on stderr for a client's misdeed
        log.debug("connection from %s failed", client_address, exc_info=True)


class EditorHandler(BaseHTTPRequestHandler):
    server: EditorServer

    # ---------------------------------------------------------------------------- connection deadline
    def setup(self):
        # each socket operation times out (a silent client), and a timer bounds the whole request read (a client
        # that trickles bytes): on expiry it answers 408 and closes the socket, which ends the blocked read
        self.timeout = self.server.io_timeout + 1.0
        super().setup()
        self._reading, self._expired, self._dlock, self._linger = True, False, threading.Lock(), False
        self._timer = threading.Timer(self.server.io_timeout, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def finish(self):
        self._timer.cancel()
        try:
            super().finish()
            if self._linger:  # a refused body was left unread: drain it (bounded) so closing does not reset the
                self.connection.shutdown(socket.SHUT_WR)  # connection before the client has read the refusal
                self.connection.settimeout(1.0)
                end, left = time.monotonic() + self.server.io_timeout, 16 * self.server.max_body
                while left > 0 and time.monotonic() < end and (chunk := self.connection.recv(1 << 16)):
                    left -= len(chunk)
        except OSError:
            pass

    def _expire(self):
        with self._dlock:
            if not self._reading:
                return
            self._expired = True
            try:
                msg = json.dumps({"error": f"request not received within {self.server.io_timeout:g} s"}).encode()
                self.connection.sendall(b"HTTP/1.0 408 Request Timeout\r\nContent-Type: application/json\r\n"
                                        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(msg) + msg)
            except OSError:
                pass
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _request_read(self):
        """The request is in (or is being answered): stop the deadline, which must not fire while a response is
        written or a preview renders; raises when the deadline already answered and closed the connection."""
        with self._dlock:
            if self._expired:
                raise ConnectionAbortedError("request deadline passed")
            self._reading = False
        self._timer.cancel()

    # ---------------------------------------------------------------------------- responses
    def log_message(self, fmt, *args):  # quiet; debug log only
        log.debug("%s " + fmt, self.address_string(), *args)

    def _send(self, body: bytes, ctype: str, code: int = 200):
        self._request_read()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in _SECURITY_HEADERS.items():
            self.send_header(k, v)
        if code >= 400:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj, code: int = 200):
        self._send(json.dumps(obj).encode(), "application/json", code)

    def _dispatch(self, route):
        try:
            try:
                # a POST body is read before any check: closing a socket with unread data resets it, and the
                # client could lose the refusal
                self._body = self._read_body() if self.command == "POST" else self._request_read()
                self._check_origin()
                route()
            except ConnectionError:
                raise
            except HTTPError as e:
                self.close_connection = True
                self._json({"error": str(e)}, e.code)
            except (ValueError, KeyError, IndexError, TypeError) as e:
                self._json({"error": str(e) if not isinstance(e, KeyError) else f"missing field {e}"}, 400)
            except Exception as e:  # a bug: the client still gets an answer, the log the traceback
                log.exception("%s %s failed", self.command, self.path)
                self._json({"error": f"internal error ({e.__class__.__name__}: {e})"}, 500)
        except OSError:  # the client left, or the deadline answered it already
            self.close_connection = True

    # ---------------------------------------------------------------------------- checks
    def _check_origin(self):
        """Host and Origin must name this server (DNS rebinding, other sites' pages)."""
        host = self.headers.get("Host")
        if host is None or not self.server.host_allowed(host):
            raise HTTPError(403, f"Host {host!r} is not this editor's address ({self.server.url()})")
        origin = self.headers.get("Origin")
        if origin is not None:
            u = urlparse(origin)
            if u.scheme != "http" or not self.server.host_allowed(u.netloc) or u.path not in ("", "/"):
                raise HTTPError(403, f"Origin {origin!r} is not this editor's page ({self.server.url()})")
        navigation = self.command == "GET" and self.headers.get("Sec-Fetch-Mode") == "navigate"
        if not navigation and self.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            raise HTTPError(403, f"cross-site request (Sec-Fetch-Site: {self.headers['Sec-Fetch-Site']})")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding"):
            self._linger = True
            raise HTTPError(411, "send the body with a Content-Length, not a Transfer-Encoding")
        length = self.headers.get("Content-Length")
        if length is None:
            raise HTTPError(411, "Content-Length required")
        if not length.strip().isdigit():
            raise HTTPError(400, f"bad Content-Length {length!r}")
        n = int(length)
        if n > self.server.max_body:
            self._linger = True
            raise HTTPError(413, f"body of {n} bytes exceeds the limit of {self.server.max_body} bytes")
        raw = self.rfile.read(n)
        self._request_read()
        if len(raw) != n:
            raise HTTPError(400, f"body ended after {len(raw)} of {n} bytes")
        return raw

    def _read_json(self) -> dict:
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise HTTPError(415, f"Content-Type must be application/json, not {ctype or 'missing'!r}")
        try:
            body = json.loads(self._body.decode("utf-8"), parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise HTTPError(400, f"body is not JSON: {e}") from None
        if not isinstance(body, dict):
            raise HTTPError(400, f"body must be a JSON object, got {type(body).__name__}")
        return body

    # ---------------------------------------------------------------------------- routes
    def do_GET(self):  # noqa: N802
        self._dispatch(self._get)

    def do_POST(self):  # noqa: N802
        self._dispatch(self._post)

    def _get(self):
        state, path = self.server.state, urlparse(self.path).path
        if path in ("/", "/index.html"):
            self._send(PAGE.encode(), "text/html; charset=utf-8")
        elif path == "/api/state":
            self._json(state.state())
        elif path == "/api/points":
            self._json(state.points_json())
        elif path == "/image.png":
            self._send(png_bytes(state.image), "image/png")
        elif path == "/api/view.png":
            self._send(png_bytes(state.render_view()), "image/png")
        elif path.startswith("/api/preview/") and path.endswith(".png"):
            i = path[len("/api/preview/"):-4]
            frames = state.preview()
            if not (i.isdigit() and int(i) < len(frames)):
                raise HTTPError(404, f"preview frame {i!r} out of range 0..{len(frames) - 1}")
            self._send(png_bytes(frames[int(i)]), "image/png")
        elif path == "/api/trajectory.txt":
            self._send(state.re10k_text().encode(), "text/plain; charset=utf-8")
        elif path == "/api/keyframes.json":
            self._json(state.keyframes_json())
        elif path == "/api/selftest":
            self._json(state.selftest_report or {})
        else:
            raise HTTPError(404, f"not found: {path}")

    def _post(self):
        state, path = self.server.state, urlparse(self.path).path
        if path not in FIELDS and path != "/api/selftest":
            raise HTTPError(404, f"not found: {path}")
        body = self._read_json()
        unknown = sorted(set(body) - FIELDS.get(path, set(body)))
        if unknown:
            hint = " (exports go to the --export-dir folder under generated names)" if path == "/api/export" else ""
            raise HTTPError(400, f"{path} does not take {', '.join(map(repr, unknown))}{hint}")
        if path == "/api/camera":
            if "c2w" in body:
                state.set_camera(body["c2w"])
            else:
                state.move(body["action"], body.get("step", 0.1), body.get("angle", 5.0))
        elif path == "/api/keyframes":
            op = body.get("op")
            c2w = check_pose(body["c2w"]) if "c2w" in body else None
            if op == "add" and "look_at" in body:
                state.add_keyframe_looking_at(body["look_at"], body.get("t"))
            elif op == "add":
                state.add_keyframe(c2w, body.get("t"))
            elif op == "update":
                state.update_keyframe(body["index"], c2w, body.get("t"))
            elif op == "remove":
                state.remove_keyframe(body["index"])
            elif op == "goto":
                state.goto(body["index"])
            elif op == "clear":
                state.clear()
            else:
                raise ValueError(f"unknown op {op!r}; one of add, update, remove, goto, clear")
        elif path == "/api/settings":
            state.settings(body.get("frames"), body.get("loop"), body.get("ease"))
        elif path == "/api/selftest":
            state.selftest_report = body
        elif path == "/api/export":
            try:
                out = state.export()
            except OSError as e:
                log.error("export to %s failed: %s", state.export_dir, e)
                raise HTTPError(500, f"export to {state.export_dir} failed: {e.strerror or e}") from None
            log.info("exported %s", out)
            return self._json({"path": str(out), "keyframes": str(out.with_suffix(".keyframes.json")),
                               "text": state.re10k_text()})
        self._json(state.state())


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def serve(state: EditorState, host: str = "127.0.0.1", port: int = 8765, allow_remote: bool = False,
          timeout: float = TIMEOUT, max_body: int = MAX_BODY) -> EditorServer:
    """A started (background thread) server; `server.port` is the port (0 picks a free one). Raises ValueError
    (one line) for a host that does not resolve, or that is not loopback without `allow_remote`."""
    server = EditorServer(host, port, state, allow_remote=allow_remote, timeout=timeout, max_body=max_body)
    start(server)
    return server


def start(server: EditorServer) -> None:
    threading.Thread(target=server.serve_forever, daemon=True, name="editor-http").start()


PAGE = r"""<!doctype html>
<html><head><meta charset="utf-8"><title>RealCam trajectory editor</title>
<style>
body{font:13px sans-serif;margin:0;background:#1e1f24;color:#ddd;display:flex;height:100vh}
#left{flex:1;display:flex;flex-direction:column;min-width:0}
#view3d{flex:1;background:#111;cursor:grab;width:100%;touch-action:none}
#side{width:330px;padding:8px;overflow:auto;background:#26282f}
h3{margin:6px 0}.row{margin:4px 0}
button{background:#3a3d47;color:#eee;border:1px solid #555;border-radius:3px;padding:3px 6px;margin:1px;cursor:pointer}
img.v{width:100%;image-rendering:pixelated;background:#000;border:1px solid #444}
#kfs div{padding:2px;border-bottom:1px solid #333}#status{color:#8c8}
textarea{width:100%;height:70px;background:#111;color:#ccc;font:10px monospace}
</style></head><body>
<div id="left"><canvas id="view3d"></canvas>
<div class="row" style="padding:4px">drag: orbit view, wheel: zoom, drag a keyframe: move it (shift/wheel: depth),
alt/ctrl+click a point: keyframe looking at it | keys: W/S forward/back, A/D left/right,
    R/F up/down,
Q/E turn, T/G tilt | <span id="status" data-ready="0">loading...</span></div></div>
<div id="side">
<h3>Camera view</h3><img id="camview" class="v" alt="current camera">
<div class="row">
<button data-a="forward">W fwd</button><button data-a="back">S back</button><button data-a="left">A left</button>
<button data-a="right">D right</button><button data-a="up">R up</button><button data-a="down">F down</button><br>
<button data-a="yaw_left">Q turn L</button><button data-a="yaw_right">E turn R</button>
<button data-a="pitch_up">T tilt up</button><button data-a="pitch_down">G tilt dn</button>
<button data-a="reset">reset</button> step <input id="step" value="0.1" size="3"> m</div>
<div class="row"><button id="addkf">Add keyframe here</button><button id="clear">Clear</button></div>
<h3>Keyframes</h3><div id="kfs"></div>
<div class="row">frames <input id="frames" size="3"> <label><input type="checkbox" id="loop">loop</label>
<label><input type="checkbox" id="ease">ease</label></div>
<h3>Preview</h3><img id="preview" class="v" alt="preview"><div class="row"><button id="play">Play preview</button>
<span id="pframe"></span></div>
<h3>Export</h3><div class="row"><button id="export">Export RealEstate10K</button>
<a href="/api/trajectory.txt" download="trajectory.txt">download</a></div><textarea id="out" readonly></textarea>
</div>
<script>
"use strict";
let S=null, P=null, view={az:-0.6, el:0.35, dist:6, target:[0,0,3]}, playing=false;
const cv=document.getElementById('view3d'), ctx=cv.getContext('2d');
async function api(path, body){const r=await fetch(path, body===undefined?{}:{method:'POST',
  headers:{'Content-Type':'application/json'}, body:JSON.stringify(body)}); const j=await r.json();
  if(j.error){document.getElementById('status').textContent='error: '+j.error;} return j;}
function setState(j){if(!j||j.error)return; S=j; renderSide(); draw();}
function refreshView(){document.getElementById('camview').src='/api/view.png?'+Date.now();}
function renderSide(){
  const d=document.getElementById('kfs'); d.innerHTML='';
  S.keyframes.forEach((k,i)=>{const e=document.createElement('div'); const c=k.c2w;
    e.textContent=`#${i} t=${k.t} pos=(${c[0][3].toFixed(2)}, ${c[1][3].toFixed(2)}, ${c[2][3].toFixed(2)}) `;
    const g=document.createElement('button'); g.textContent='go';
    g.onclick=async()=>{setState(await api('/api/keyframes',{op:'goto',index:i})); refreshView();};
    e.appendChild(g);
    if(i>0){const s=document.createElement('button'); s.textContent='set here';
    s.onclick=async()=>setState(await api('/api/keyframes',{op:'update',index:i,c2w:S.camera}));
      const b=document.createElement('button'); b.textContent='delete';
    b.onclick=async()=>setState(await api('/api/keyframes',{op:'remove',index:i}));
      e.appendChild(s); e.appendChild(b);}
    d.appendChild(e);});
  document.getElementById('frames').value=S.frames; document.getElementById('loop').checked=S.loop;
  document.getElementById('ease').checked=S.ease;
  document.getElementById('status').textContent=
    `points: ${S.points}, keyframes: ${S.keyframes.length}, frames: ${S.frames}`;
}
function viewBasis(){const ca=Math.cos(view.az), sa=Math.sin(view.az), ce=Math.cos(view.el), se=Math.sin(view.el);
  // eye on a sphere around target; world axes: x right, y down, z forward
  const eye=[view.target[0]-view.dist*ce*sa, view.target[1]-view.dist*se, view.target[2]-view.dist*ce*ca];
  let z=[view.target[0]-eye[0], view.target[1]-eye[1], view.target[2]-eye[2]]; const n=Math.hypot(...z);
    z=z.map(v=>v/n);
  let x=[-z[2], 0, z[0]]; const nx=Math.hypot(...x)||1; x=x.map(v=>v/nx);   // cross(down, z)
  const y=[z[1]*x[2]-z[2]*x[1], z[2]*x[0]-z[0]*x[2], z[0]*x[1]-z[1]*x[0]];
  return {eye,x,y,z};}
const centre=c2w=>[c2w[0][3],c2w[1][3],c2w[2][3]];
// inverse of project() for a point at depth zc: a screen delta (du,dv) in pixels is (du,dv)*zc/f metres along the
// view's x and y axes (so the point stays under the pointer); dz metres along the view direction z
function viewDelta(B,f,zc,du,dv,dz){return [0,1,2].map(r=>(du*B.x[r]+dv*B.y[r])*zc/f+dz*B.z[r]);}
function project(B,p,f,cx,cy){const d=[p[0]-B.eye[0],p[1]-B.eye[1],p[2]-B.eye[2]];
  const zc=d[0]*B.z[0]+d[1]*B.z[1]+d[2]*B.z[2]; if(zc<0.05) return null;
  return [cx+f*(d[0]*B.x[0]+d[1]*B.x[1]+d[2]*B.x[2])/zc, cy+f*(d[0]*B.y[0]+d[1]*B.y[1]+d[2]*B.y[2])/zc, zc];}
function drawCam(B,c2w,color,f,cx,cy,size){const o=[c2w[0][3],c2w[1][3],c2w[2][3]];
  const corner=(sx,sy)=>[0,1,2].map(r=>o[r]+size*(c2w[r][0]*sx*0.6+c2w[r][1]*sy*0.45+c2w[r][2]));
  const pts=[corner(-1,-1),corner(1,-1),corner(1,1),corner(-1,1)].map(p=>project(B,p,f,cx,cy));
    const po=project(B,o,f,cx,cy);
  if(!po||pts.some(p=>!p))return; ctx.strokeStyle=color; ctx.lineWidth=1.5; ctx.beginPath();
  for(const p of pts){ctx.moveTo(po[0],po[1]); ctx.lineTo(p[0],p[1]);}
  ctx.moveTo(pts[3][0],pts[3][1]); for(const p of pts) ctx.lineTo(p[0],p[1]); ctx.stroke();}
function draw(){
  const w=cv.clientWidth, h=cv.clientHeight; if(cv.width!==w||cv.height!==h){cv.width=w; cv.height=h;}
  ctx.fillStyle='#111'; ctx.fillRect(0,0,w,h); if(!P||!S) return;
  const B=viewBasis(), f=0.9*Math.max(w,h), cx=w/2, cy=h/2, n=P.xyz.length/3, proj=[];
  for(let i=0;i<n;i++){const q=project(B,[P.xyz[3*i],P.xyz[3*i+1],P.xyz[3*i+2]],f,cx,cy);
    if(q) proj.push([q[2],q[0],q[1],i]);}
  proj.sort((a,b)=>b[0]-a[0]); cam3d={B,f,cx,cy,proj};
  for(const [zc,u,v,i] of proj){ctx.fillStyle=`rgb(${P.rgb[3*i]},${P.rgb[3*i+1]},${P.rgb[3*i+2]})`;
    const s=Math.max(1.5, Math.min(6, 0.04*f/zc)); ctx.fillRect(u-s/2,v-s/2,s,s);}
  ctx.strokeStyle='#f0f'; ctx.lineWidth=2; ctx.beginPath(); let first=true;
  for(const c of S.path){const q=project(B,c,f,cx,cy); if(!q){first=true; continue;} if(first){ctx.moveTo(q[0],q[1]);
    first=false;} else ctx.lineTo(q[0],q[1]);}
  ctx.stroke();
  S.keyframes.forEach((k,i)=>drawCam(B,k.c2w,i===0?'#fff':'#fc3',f,cx,cy,0.25));
  drawCam(B,S.camera,'#3cf',f,cx,cy,0.3);
  document.getElementById('status').dataset.ready='1';
}
// pointer: press on a keyframe (nearest projected centre within 12 px) drags it, elsewhere orbits the view
let drag=null, cam3d=null, pending=Promise.resolve(), lastPick=null;
function pickKeyframe(u,v){let best=-1, bd=12; if(!cam3d) return -1; const {B,f,cx,cy}=cam3d;
  S.keyframes.forEach((k,i)=>{const q=project(B,centre(k.c2w),f,cx,cy);
    if(q&&Math.hypot(q[0]-u,q[1]-v)<bd){bd=Math.hypot(q[0]-u,q[1]-v); best=i;}}); return best;}
function nudgeKeyframe(du,dv,dz){const c=S.keyframes[drag.kf].c2w, {B,f}=cam3d;
  const zc=(c[0][3]-B.eye[0])*B.z[0]+(c[1][3]-B.eye[1])*B.z[1]+(c[2][3]-B.eye[2])*B.z[2];
  viewDelta(B,f,zc,du,dv,dz*zc).forEach((d,r)=>{c[r][3]+=d;}); drag.moved=true; draw();}
async function dropKeyframe(kf){const j=await api('/api/keyframes',{op:'update',index:kf,c2w:S.keyframes[kf].c2w});
  setState(j.error?await api('/api/state'):j); refreshPreview();}
async function addLookingAt(u,v){let best=null, bd=12; for(const [zc,pu,pv,i] of cam3d.proj){
    const d=Math.hypot(pu-u,pv-v); if(d<bd){bd=d; best=i;}}
  if(best===null) return; lastPick=P.xyz.slice(3*best,3*best+3);
  setState(await api('/api/keyframes',{op:'add',look_at:lastPick}));
  refreshPreview();}
cv.onpointerdown=e=>{if(!S||!cam3d) return; const r=cv.getBoundingClientRect(), u=e.clientX-r.left, v=e.clientY-r.top;
  if(e.altKey||e.ctrlKey){pending=addLookingAt(u,v); return;}
  const kf=pickKeyframe(u,v);
  if(kf===0) document.getElementById('status').textContent="keyframe 0 is the image's camera: locked";
  drag={kf:kf>0?kf:-1, x:e.clientX, y:e.clientY, moved:false};};
window.onpointerup=()=>{if(drag&&drag.kf>0&&drag.moved) pending=dropKeyframe(drag.kf); drag=null;};
window.onpointermove=e=>{if(!drag)return; const du=e.clientX-drag.x, dv=e.clientY-drag.y; drag.x=e.clientX;
  drag.y=e.clientY;
  if(drag.kf>0){if(e.shiftKey) nudgeKeyframe(0,0,-dv/cam3d.f); else nudgeKeyframe(du,dv,0); return;}
  view.az+=du*0.01; view.el=Math.max(-1.5,Math.min(1.5,view.el+dv*0.01)); draw();};
cv.onwheel=e=>{e.preventDefault(); if(drag&&drag.kf>0) nudgeKeyframe(0,0,-e.deltaY*0.001);
  else {view.dist*=Math.exp(e.deltaY*0.001); draw();}};
function refreshPreview(){document.getElementById('preview').src=`/api/preview/${S.frames-1}.png?`+Date.now();}
async function move(a){const step=parseFloat(document.getElementById('step').value)||0.1;
  setState(await api('/api/camera',{action:a, step:step})); refreshView();}
document.querySelectorAll('button[data-a]').forEach(b=>b.onclick=()=>move(b.dataset.a));
const KEYS={w:'forward',s:'back',a:'left',d:'right',r:'up',f:'down',q:'yaw_left',e:'yaw_right',t:'pitch_up',
    g:'pitch_down'};
window.onkeydown=e=>{if(e.target.tagName==='INPUT')return; const a=KEYS[e.key.toLowerCase()]; if(a) move(a);};
document.getElementById('addkf').onclick=async()=>setState(await api('/api/keyframes',{op:'add'}));
document.getElementById('clear').onclick=async()=>{setState(await api('/api/keyframes',{op:'clear'})); refreshView();};
const settings=async()=>setState(await api('/api/settings',{frames:parseInt(document.getElementById('frames').value),
  loop:document.getElementById('loop').checked, ease:document.getElementById('ease').checked}));
['frames','loop','ease'].forEach(id=>document.getElementById(id).onchange=settings);
document.getElementById('play').onclick=async()=>{if(playing)return; playing=true;
  for(let i=0;i<S.frames;i++){document.getElementById('pframe').textContent=`frame ${i+1}/${S.frames}`;
    await new Promise(res=>{const im=document.getElementById('preview'); im.onload=res; im.onerror=res;
    im.src=`/api/preview/${i}.png?`+Date.now();});
    await new Promise(res=>setTimeout(res,100));} playing=false;};
document.getElementById('export').onclick=async()=>{const j=await api('/api/export',{});
    if(!j.error) document.getElementById('out').value=`wrote ${j.path}\n`+j.text;};
window.onresize=draw;
(async()=>{setState(await api('/api/state')); P=await api('/api/points');
  const t=S.path.length?S.path:[[0,0,0]]; let mz=0; for(let i=2;i<P.xyz.length;i+=3) mz+=P.xyz[i];
    mz/=Math.max(1,P.xyz.length/3);
  view.target=[0,0,mz*0.6]; view.dist=Math.max(2,mz*1.2); draw(); refreshView();
  document.getElementById('preview').src='/api/preview/0.png';
  if(new URLSearchParams(location.search).get('selftest')==='drag') await selftestDrag();})();
// ?selftest=drag (used by the tests): drive the real pointer handlers with synthetic events, post what happened
async function selftestDrag(){const st=document.getElementById('status');
  const fire=(type,u,v,o)=>{const r=cv.getBoundingClientRect();
    cv.dispatchEvent(new PointerEvent(type,{clientX:r.left+u,clientY:r.top+v,bubbles:true,...o}));};
  const dragBy=async(q,du,dv,o)=>{fire('pointerdown',q[0],q[1],o); fire('pointermove',q[0]+du/2,q[1]+dv/2,o);
    fire('pointermove',q[0]+du,q[1]+dv,o); fire('pointerup',q[0]+du,q[1]+dv,o); await pending;};
  const {B,f,cx,cy}=cam3d, at=i=>project(B,centre(S.keyframes[i].c2w),f,cx,cy);
  const rep={cam:{eye:B.eye,x:B.x,y:B.y,z:B.z,f,cx,cy}, start:at(1), d:[30,-20], dz:-40};
  await dragBy(rep.start,30,-20); rep.plane=centre(S.keyframes[1].c2w);
  await dragBy(at(1),0,-40,{shiftKey:true}); rep.depth=centre(S.keyframes[1].c2w);
  const az=view.az; fire('pointerdown',...at(0)); rep.locked_msg=st.textContent;
  fire('pointermove',at(0)[0]+25,at(0)[1]); fire('pointerup',0,0); await pending;
  rep.kf0=centre(S.keyframes[0].c2w); rep.kf0_orbit=view.az-az;
  const az2=view.az; await dragBy([5,5],-20,0); rep.orbit=view.az-az2;
  const p=cam3d.proj[cam3d.proj.length>>1]; fire('pointerdown',p[1],p[2],{altKey:true}); fire('pointerup',p[1],p[2]);
  await pending; rep.look_at=lastPick; rep.keyframes=S.keyframes.length;
  await api('/api/selftest',rep); st.dataset.selftest='done';}
</script></body></html>
"""


# ------------------------------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None, started: Callable[[EditorServer], None] | None = None) -> None:
    """The command line; serves until Ctrl-C (or `server.shutdown()` from `started`, which gets the server)."""
    from .scene import load_image, resize_crop, user_intrinsics

    p = argparse.ArgumentParser(prog="python -m train.inference.editor", description=__doc__.split("\n\n")[0])
    p.add_argument("--image", required=True)
    p.add_argument("--depth-file", help=".npy / .npz ('depth') metric depth at the image or model size")
    p.add_argument("--depth-model", help="Depth Anything V2 metric hub id or folder (default: annotate's)")
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--frame-stride", type=int, default=3)
    p.add_argument("--export-dir", default=DEFAULT_EXPORT_DIR,
                   help="folder Export writes into, as trajectory_<date>-<time>.txt + .keyframes.json "
                        f"(default {DEFAULT_EXPORT_DIR})")
    p.add_argument("--host", default="127.0.0.1", help="address or name to listen on (default 127.0.0.1); "
                                                       "a non-loopback one needs --allow-remote")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --host: anyone who reaches it can edit and export (no authentication)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # bind before the (slow) depth prediction, so a bad host or a busy port is reported at once
    try:
        ip = resolve_host(args.host, args.allow_remote)[1]
        if not ipaddress.ip_address(ip.split("%")[0]).is_loopback:
            log.warning("listening on %s (%s), reachable from other machines: anyone who reaches it can edit "
                        "trajectories and write exports into %s (there is no authentication)", args.host, ip,
                        args.export_dir)
        server = EditorServer(args.host, args.port, allow_remote=args.allow_remote)
    except (ValueError, OSError) as e:
        p.exit(2, f"editor: cannot listen on {args.host}:{args.port}: {getattr(e, 'strerror', None) or e}\n")
    try:
        image0 = load_image(args.image)
        image, plan = resize_crop(image0, (args.height, args.width))
        if args.depth_file:
            from train.inference.scene import read_depth_file

            depth = read_depth_file(args.depth_file, image0.shape[:2], plan, (args.height, args.width))
        else:
            from annotate.depth import DEFAULT_MODEL, DepthAnythingPredictor, DepthConfig

            depth = DepthAnythingPredictor(DepthConfig(model=args.depth_model or DEFAULT_MODEL)).predict(image[None])[0]
        server.state = EditorState(image, depth, user_intrinsics(plan), frames=args.frames, stride=args.frame_stride,
                                   export_dir=args.export_dir)
    except (OSError, ValueError) as e:
        server.server_close()
        p.exit(2, f"editor: {e}\n")
    print(f"trajectory editor on {server.url()}  (exports to {server.state.export_dir.resolve()}; Ctrl-C to stop)",
          flush=True)
    if started is not None:
        started(server)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
