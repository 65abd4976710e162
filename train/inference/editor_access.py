"""Who may talk to the trajectory editor's viser server: the bind address rule and a Host/Origin guard.

viser 1.1.1 checks neither the ``Host`` nor the ``Origin`` header: any web page open in the user's browser can
open a websocket to a local port and drive the editor (move keyframes, export, generate), and a DNS-rebinding
page can also read it. It has no hook for this either, so :func:`guard_server` wraps the ``process_request``
of the ``websockets`` server viser started (found by its bound port), which sees every HTTP request and every
websocket handshake before viser does, and answers 403 when

* ``Host`` does not name this server: a DNS-rebinding page needs a name the attacker controls, so names are
  listed explicitly (``localhost`` and IP literals on loopback, the given name, this machine's names on a
  wildcard bind); the port is not checked, since an SSH forward may use another local port and ports cannot
  be rebound;
* ``Origin`` is present and is not the page's own origin (``http(s)://`` + the ``Host`` value): browsers send
  it with every websocket handshake, so a foreign page is refused; clients without one (scripts on this
  machine) are not browsers and pass.

It also switches off viser's public share links (:func:`no_share_links`). This relies on viser internals (its
``WebsockServer`` and the ``websockets`` ``Server`` object), so the tests make real handshakes against it; if a
viser upgrade moves them, :func:`guard_server` raises rather than serving unguarded.
"""

from __future__ import annotations

import gc
import inspect
import ipaddress
import socket
from http import HTTPStatus
from urllib.parse import urlsplit

from annotate.log import get_logger

log = get_logger("editor")


def resolve_host(host: str, allow_remote: bool = False) -> str:
    """The IP to bind for ``host`` (an address or a name); a non-loopback one only with ``allow_remote``."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ValueError(f"cannot resolve host {host!r}: {getattr(e, 'strerror', None) or e}") from None
    addrs = [(fam, info[0]) for fam, _, _, _, info in infos if fam in (socket.AF_INET, socket.AF_INET6)]
    if not addrs:
        raise ValueError(f"host {host!r} has no IPv4 or IPv6 address")
    addrs.sort(key=lambda a: a[0] != socket.AF_INET)  # prefer IPv4: what 127.0.0.1 / localhost links reach
    loopback = [ip for _, ip in addrs if is_loopback(ip)]
    if loopback:
        return loopback[0]
    if not allow_remote:
        raise ValueError(f"host {host!r} ({addrs[0][1]}) is not a loopback address; the editor has no "
                         "authentication, so serving beyond this machine needs --allow-remote")
    return addrs[0][1]


def is_loopback(ip: str) -> bool:
    return ipaddress.ip_address(ip.split("%")[0]).is_loopback


def split_host(value: str) -> tuple[str, int | None] | None:
    """'name:port' / '[v6]:port' / 'name' -> (lower-case name without a trailing dot, port or None)."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[1:end], value[end + 1:]
    else:
        name, _, port = value.partition(":")
        rest = ":" + port if port else ""
    if not name or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
        return None
    return name.rstrip("."), int(rest[1:]) if rest else None


class AllowedHosts:
    """Which ``Host`` names reach a server asked to listen on ``host`` that bound ``ip`` (see module doc)."""

    def __init__(self, host: str, ip: str):
        bound = ipaddress.ip_address(ip.split("%")[0])
        self.loopback, self.wildcard = bound.is_loopback, bound.is_unspecified
        self.names = {host.lower().rstrip(".")}
        self.ips = {bound}
        if self.loopback:
            self.names.add("localhost")
        if self.wildcard:
            self.names |= {socket.gethostname().lower(), socket.getfqdn().lower(), "localhost"}

    def __call__(self, value: str) -> bool:
        parts = split_host(value)
        if parts is None:
            return False
        if parts[0] in self.names:
            return True
        try:
            ip = ipaddress.ip_address(parts[0])
        except ValueError:
            return False
        return self.wildcard or ip in self.ips or (self.loopback and ip.is_loopback)


def _origin_of_host(scheme: str, host: str) -> tuple[str, str, int] | None:
    parts = split_host(host)
    if parts is None:
        return None
    return scheme, parts[0], parts[1] or (443 if scheme == "https" else 80)


def refusal(headers, allowed: AllowedHosts) -> str | None:
    """Why a request must be refused (None: let it through). ``headers``: a mapping with ``get``."""
    host = headers.get("Host")
    if not host or not allowed(host):
        return f"Host {host!r} does not name this server"
    origin = headers.get("Origin")
    if origin is None:
        return None
    try:
        u = urlsplit(origin.strip().lower())
        mine = _origin_of_host(u.scheme, host)
        theirs = (u.scheme, (u.hostname or "").rstrip("."), u.port or (443 if u.scheme == "https" else 80))
    except ValueError:
        return f"Origin {origin!r} is malformed"
    if u.scheme not in ("http", "https") or mine is None or theirs != mine:
        return f"Origin {origin!r} is not this page's origin"
    return None


def guard_server(server, allowed: AllowedHosts) -> None:
    """Refuse foreign Host/Origin requests on a started ``viser.ViserServer`` (403), then drop any client
    that connected before the guard was in place (it reconnects through the guard)."""
    import websockets.asyncio.server as wss

    port = server.get_port()
    found = [o for o in gc.get_objects() if type(o) is wss.Server and getattr(o, "server", None) is not None
             and any(s.getsockname()[1] == port for s in o.server.sockets)]
    if len(found) != 1:
        raise RuntimeError(f"cannot find viser's websocket server on port {port} to guard it (viser "
                           "internals changed?); refusing to serve without the Host/Origin check")
    ws = found[0]
    inner = ws.process_request

    def check(connection, request):
        why = refusal(request.headers, allowed)
        if why:
            log.warning("refused a request from %s: %s", connection.remote_address, why)
            return connection.respond(HTTPStatus.FORBIDDEN, f"forbidden: {why}\n")
        return None

    if inner is not None and inspect.iscoroutinefunction(inner):
        async def process_request(connection, request):
            return check(connection, request) or await inner(connection, request)
    else:
        def process_request(connection, request):
            return check(connection, request) or (inner(connection, request) if inner is not None else None)

    ws.process_request = process_request
    no_share_links(server)
    server._websock_server.disconnect_all_clients()


def no_share_links(server) -> None:
    """viser's panel has a share button, and any client may send its ShareUrlRequest: the server then opens a
    public tunnel through viser's share service, putting the editor (edit, export, generate; no authentication)
    on the internet. Hide the button and drop the server's handler for the request."""
    from viser import _messages

    server.gui.configure_theme(show_share_button=False)
    server._websock_server.unregister_handler(_messages.ShareUrlRequest)
