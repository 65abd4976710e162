"""Trajectory editor: its state without a GUI, the loopback HTTP API (and what it refuses, driven as an attacker
would), the command line, and the page in headless Chromium."""

from __future__ import annotations

import http.client
import io
import json
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotate.camera import camera_centres, orthonormality_error, w2c_to_c2w
from annotate.files import atomic_write_text
from annotate.re10k import parse_camera_text, read_camera_file
from annotate.synth import Room, render
from train.inference.editor import MAX_BODY, AllowedHosts, EditorState, serve
from train.inference.editor import main as editor_main
from train.inference.scene import splat
from train.inference.trajectory import look_at, make_pose

H, W = 48, 64
INTR = np.array([32.0, 32.0, 32.0, 24.0])


@pytest.fixture()
def state(tmp_path):
    room = Room.random(np.random.default_rng(2))
    img, depth = render(room, make_pose(np.eye(3), [0.0, 0.0, room.lo[2] + 1.5]), INTR, W, H)
    return EditorState(img, depth, INTR, frames=9, stride=2, export_dir=tmp_path / "exports")


def test_keyframe_edits_and_interpolation(state):
    assert len(state.keyframes) == 1
    np.testing.assert_allclose(state.trajectory().c2w, np.tile(np.eye(4), (9, 1, 1)))
    state.move("forward", step=0.4)
    state.move("yaw_right", angle_deg=20)
    i = state.add_keyframe()  # t = 1 at the free camera
    assert i == 1 and state.keyframes[1]["t"] == 1.0
    np.testing.assert_allclose(camera_centres(state.keyframes[1]["c2w"]), [0, 0, 0.4], atol=1e-12)
    k2 = look_at([0.5, 0.0, 0.8], [0.0, 0.0, 4.0])
    state.add_keyframe(k2, t=2.0)
    state.add_keyframe(make_pose(np.eye(3), [9, 9, 9]), t=1.5)
    state.remove_keyframe(2)  # the t = 1.5 one
    assert [k["t"] for k in state.keyframes] == [0.0, 1.0, 2.0]
    traj = state.trajectory()
    assert orthonormality_error(traj.c2w[:, :3, :3]).max() < 1e-9
    np.testing.assert_allclose(traj.c2w[0], np.eye(4), atol=1e-12)
    np.testing.assert_allclose(traj.c2w[4], state.keyframes[1]["c2w"], atol=1e-12)  # 9 frames over t in [0, 2]
    np.testing.assert_allclose(traj.c2w[8], k2, atol=1e-12)
    state.update_keyframe(2, t=3.0)
    assert state.keyframes[2]["t"] == 3.0
    state.settings(loop=True)
    np.testing.assert_allclose(state.trajectory().c2w[-1], np.eye(4), atol=1e-12)
    with pytest.raises(ValueError):
        state.remove_keyframe(0)
    with pytest.raises(ValueError):
        state.update_keyframe(0, c2w=k2)
    with pytest.raises(ValueError):
        state.move("jump")


def test_keyframe_looking_at_a_point(state):
    state.move("right", step=0.3)
    i = state.add_keyframe_looking_at([1.0, -0.5, 3.0])
    c2w = state.keyframes[i]["c2w"]
    np.testing.assert_allclose(c2w, look_at([0.3, 0, 0], [1.0, -0.5, 3.0]), atol=1e-12)
    ray = np.array([0.7, -0.5, 3.0])
    np.testing.assert_allclose(c2w[:3, 2], ray / np.linalg.norm(ray), atol=1e-12)  # optical axis hits the point
    with pytest.raises(ValueError):
        state.add_keyframe_looking_at([0.3, 0, 0])  # the camera's own position


def test_preview_and_export(state, tmp_path):
    state.add_keyframe(make_pose(np.eye(3), [0.3, 0.0, 0.0]), t=1.0)
    frames = state.preview()
    assert frames.shape == (9, H, W, 3)
    np.testing.assert_array_equal(frames[0], splat(state.cloud, np.eye(4), INTR, (H, W), 2)[0])
    np.testing.assert_array_equal(frames[-1], state.render_view(make_pose(np.eye(3), [0.3, 0.0, 0.0])))
    path = state.export()
    assert path.parent == (tmp_path / "exports").resolve() and re.fullmatch(r"trajectory_\d{8}-\d{6}\.txt", path.name)
    cam = read_camera_file(path)
    assert len(cam) == 9 and cam.url == "realcam://editor"
    np.testing.assert_allclose(w2c_to_c2w(cam.w2c), state.trajectory().c2w, atol=1e-8)
    np.testing.assert_allclose(cam.intrinsics[0], INTR / [W, H, W, H])
    np.testing.assert_allclose(camera_centres(w2c_to_c2w(cam.w2c))[-1], [0.3, 0, 0], atol=1e-8)
    keys = json.loads(path.with_suffix(".keyframes.json").read_text())
    assert [k["t"] for k in keys["keyframes"]] == [0.0, 1.0]
    # the exported keyframes feed the sampler's JSON trajectory input
    from train.inference.trajectory import load_trajectory

    again = load_trajectory(str(path.with_suffix(".keyframes.json")), 9, INTR, (H, W))
    np.testing.assert_allclose(again.c2w, state.trajectory().c2w, atol=1e-8)


def _get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


def _post(url, obj):
    req = urllib.request.Request(url, data=json.dumps(obj).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture()
def server(state):
    srv = serve(state, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{srv.server_address[1]}", state
    srv.shutdown()
    srv.server_close()


def test_http_api(server):
    base, state = server
    code, ctype, body = _get(base + "/")
    assert code == 200 and b"<canvas" in body and "text/html" in ctype
    st = json.loads(_get(base + "/api/state")[2])
    assert st["width"] == W and st["points"] == len(state.cloud) and len(st["keyframes"]) == 1
    pts = json.loads(_get(base + "/api/points")[2])
    assert len(pts["xyz"]) == 3 * len(state.view_cloud) == len(pts["rgb"])
    code, st = _post(base + "/api/camera", {"action": "right", "step": 0.25})
    np.testing.assert_allclose(np.array(st["camera"])[:3, 3], [0.25, 0, 0])
    code, st = _post(base + "/api/keyframes", {"op": "add"})
    assert code == 200 and len(st["keyframes"]) == 2
    code, err = _post(base + "/api/keyframes", {"op": "remove", "index": 0})
    assert code == 400 and "cannot" in err["error"]
    code, st = _post(base + "/api/settings", {"frames": 5})
    assert st["frames"] == 5 and len(st["path"]) == 5
    img = Image.open(io.BytesIO(_get(base + "/api/preview/4.png")[2]))
    assert img.size == (W, H)
    assert Image.open(io.BytesIO(_get(base + "/api/view.png")[2])).size == (W, H)
    cam = parse_camera_text(_get(base + "/api/trajectory.txt")[2].decode())
    np.testing.assert_allclose(w2c_to_c2w(cam.w2c)[-1][:3, 3], [0.25, 0, 0], atol=1e-8)
    code, out = _post(base + "/api/export", {})
    assert code == 200 and Path(out["path"]).is_file() and Path(out["path"]).parent == state.export_dir.resolve()
    code, st = _post(base + "/api/keyframes", {"op": "add", "look_at": [0.0, 0.0, 2.0], "t": 5})
    np.testing.assert_allclose(np.array(st["keyframes"][-1]["c2w"]), look_at([0.25, 0, 0], [0, 0, 2]), atol=1e-6)
    assert json.loads(_get(base + "/api/selftest")[2]) == {}
    _post(base + "/api/selftest", {"plane": [1, 2, 3]})
    assert json.loads(_get(base + "/api/selftest")[2]) == {"plane": [1, 2, 3]}


def test_only_loopback():
    with pytest.raises(ValueError, match="not a loopback address.*--allow-remote"):
        serve(None, "0.0.0.0", 0)
    with pytest.raises(ValueError, match="cannot resolve host 'no-such-host.invalid'"):
        serve(None, "no-such-host.invalid", 0)


# ------------------------------------------------------------------------------------------------ hostile requests


def _raw(base, method, path, body=b"", headers=None, timeout=10):
    """One request with exactly these headers (http.client adds only Host, which `headers` may override);
    returns (status, body: JSON decoded when it is JSON). A dropped connection raises, so every refusal must be
    an answer."""
    host, port = base.rsplit("/", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        conn.putrequest(method, path, skip_host="Host" in hdrs, skip_accept_encoding=True)
        for k, v in hdrs.items():
            if v is not None:
                conn.putheader(k, v)
        if method == "POST" and "Content-Length" not in hdrs:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body if method == "POST" else None)
        r = conn.getresponse()
        data = r.read()
        return r.status, json.loads(data) if r.getheader("Content-Type") == "application/json" else data
    finally:
        conn.close()


def _files(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))


def test_hostile_requests_are_refused(server, tmp_path):
    base, state = server
    port = base.rsplit(":", 1)[1]
    add = json.dumps({"op": "add", "c2w": make_pose(np.eye(3), [0.5, 0, 0]).tolist()}).encode()
    refused = {
        # another site's page (a text/plain "simple" request needs no CORS preflight), or a sandboxed one
        "foreign origin": (403, "Origin", {"Origin": "http://evil.example", "Content-Type": "text/plain"}),
        "null origin": (403, "Origin", {"Origin": "null"}),
        "other local port": (403, "Origin", {"Origin": "http://127.0.0.1:1"}),
        "https origin": (403, "Origin", {"Origin": f"https://127.0.0.1:{port}"}),
        "cross-site fetch": (403, "cross-site", {"Sec-Fetch-Site": "cross-site"}),
        # DNS rebinding: the attacker's name resolves to 127.0.0.1, so the browser sends its name as Host
        "rebinding host": (403, "Host", {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}),
        "wrong port": (403, "Host", {"Host": "127.0.0.1:1"}),
        "no port": (403, "Host", {"Host": "127.0.0.1"}),
        "text/plain": (415, "application/json", {"Content-Type": "text/plain"}),
        "form": (415, "application/json", {"Content-Type": "application/x-www-form-urlencoded"}),
        "no content type": (415, "application/json", {"Content-Type": None}),
        "chunked": (411, "Content-Length", {"Transfer-Encoding": "chunked"}),
    }
    for name, (code, msg, headers) in refused.items():
        got, err = _raw(base, "POST", "/api/keyframes", add, headers)
        assert (got, msg in err["error"]) == (code, True), (name, got, err)
    for host in (f"evil.example:{port}", "127.0.0.2:1"):  # reads are refused too: the image is the user's
        assert _raw(base, "GET", "/api/state", headers={"Host": host})[0] == 403
    assert _raw(base, "GET", "/image.png", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"})[0] \
        == 403
    bad_bodies = {
        "not JSON": (b"{op: add", "not JSON"),
        "not UTF-8": (b'{"op": "\xff"}', "not JSON"),
        "array": (b"[1, 2]", "JSON object"),
        "string": (b'"add"', "JSON object"),
        "empty": (b"", "not JSON"),
        "deep nesting": (b"[" * 200_000 + b"]" * 200_000, "not JSON"),
        "NaN literal": (b'{"op": "add", "t": NaN}', "NaN is not a JSON number"),
        "Infinity in a pose": (json.dumps({"op": "add", "c2w": [[1, 0, 0, float("inf")], [0, 1, 0, 0],
                                                               [0, 0, 1, 0]]}).encode(), "Infinity"),
        "overflowing number": (b'{"op": "add", "t": 1e999}', "finite"),
        "scaled rotation": (json.dumps({"op": "add", "c2w": (2 * np.eye(4))[:3].tolist()}).encode(), "not a rotation"),
        "reflection": (json.dumps({"op": "add", "c2w": np.diag([1.0, 1, -1, 1]).tolist()}).encode(),
                       "not a rotation"),
        "shear": (json.dumps({"op": "add", "c2w": [[1, 0.3, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]}).encode(),
                  "not a rotation"),
        "bad shape": (b'{"op": "add", "c2w": [[1, 0], [0, 1]]}', "3x4 or 4x4"),
        "ragged": (b'{"op": "add", "c2w": [[1, 0, 0, 0], [0, 1]]}', "matrix"),
        "strings": (b'{"op": "add", "c2w": [["a", 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]}', "matrix"),
        "far away": (json.dumps({"op": "add", "c2w": make_pose(np.eye(3), [1e9, 0, 0]).tolist()}).encode(), "m"),
        "look_at NaN": (b'{"op": "add", "look_at": [0, 0, 1e999]}', "look_at"),
        "index as string": (b'{"op": "remove", "index": "1"}', "index"),
        "index out of range": (b'{"op": "goto", "index": 7}', "index"),
        "unknown field": (b'{"op": "clear", "evil": 1}', "'evil'"),
        "missing field": (b'{"op": "remove"}', "missing field 'index'"),
    }
    for name, (body, msg) in bad_bodies.items():
        got, err = _raw(base, "POST", "/api/keyframes", body)
        assert got == 400 and msg in err["error"], (name, got, err)
    for path, body, msg in [("/api/camera", {"action": "right", "step": 1e300}, "step"),
                            ("/api/camera", {"action": ["right"]}, "unknown move"),
                            ("/api/settings", {"frames": 1e9}, "frames"),
                            ("/api/settings", {"loop": "yes"}, "loop")]:
        got, err = _raw(base, "POST", path, json.dumps(body).encode())
        assert got == 400 and msg in err["error"], (path, body, got, err)
    # a body over the limit is refused (413) before it is parsed, whether it is sent or only announced
    got, err = _raw(base, "POST", "/api/selftest", b'{"a": "' + b"x" * MAX_BODY + b'"}')
    assert got == 413 and f"limit of {MAX_BODY} bytes" in err["error"]
    got, err = _raw(base, "POST", "/api/selftest", headers={"Content-Length": str(10**9)})
    assert got == 413 and "limit" in err["error"]
    assert len(state.keyframes) == 1 and np.array_equal(state.camera, np.eye(4)) and state.frames == 9
    assert state.selftest_report is None
    # the page's own kind of request still works, and a pose rounded to 6 decimals (as /api/state sends it
    # back) is accepted and stored exactly orthonormal
    rounded = np.round(look_at([0.1, 0.2, 0.3], [1.0, -0.5, 3.0]), 6)
    got, st = _raw(base, "POST", "/api/keyframes", json.dumps({"op": "add", "c2w": rounded.tolist()}).encode(),
                   {"Origin": f"http://localhost:{port}", "Sec-Fetch-Site": "same-origin"})
    assert got == 200 and len(st["keyframes"]) == 2
    assert orthonormality_error(state.keyframes[1]["c2w"][:3, :3]) < 1e-12
    # following a link to the editor from another page opens it (a navigation exposes nothing to that page)
    got, page = _raw(base, "GET", "/", headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})
    assert got == 200 and b"<canvas" in page
    assert not (tmp_path / "exports").exists()


def test_export_writes_only_into_the_export_dir(server, tmp_path):
    base, state = server
    state.add_keyframe(make_pose(np.eye(3), [0.3, 0.0, 0.1]), t=1.0)
    before = _files(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    for body in ({"path": str(victim)}, {"path": "../victim.txt"}, {"path": str(tmp_path / "new.txt")},
                 {"dir": str(tmp_path)}, {"name": "x"}):
        code, err = _post(base + "/api/export", body)
        assert code == 400 and "--export-dir" in err["error"], (body, err)
    assert victim.read_text() == "precious\n" and _files(tmp_path) == sorted(before + ["victim.txt"])
    code, out = _post(base + "/api/export", {})
    code2, out2 = _post(base + "/api/export", {})  # the same second: a second name, nothing overwritten
    assert code == code2 == 200 and out["path"] != out2["path"]
    exports = (tmp_path / "exports").resolve()
    names = sorted(p.name for p in exports.iterdir())
    assert len(names) == 4
    assert all(re.fullmatch(r"trajectory_\d{8}-\d{6}(-2)?\.(txt|keyframes\.json)", n) for n in names), names
    assert _files(tmp_path) == sorted(before + ["victim.txt", "exports"] + [f"exports/{n}" for n in names])
    path = Path(out["path"])
    assert path.parent == exports and Path(out["keyframes"]) == path.with_suffix(".keyframes.json")
    cam = read_camera_file(path)  # the expected RealEstate10K file
    assert len(cam) == 9 and cam.url == "realcam://editor" and path.read_text() == out["text"]
    np.testing.assert_allclose(w2c_to_c2w(cam.w2c), state.trajectory().c2w, atol=1e-8)
    np.testing.assert_allclose(cam.intrinsics, np.tile(INTR / [W, H, W, H], (9, 1)))
    assert json.loads(Path(out["keyframes"]).read_text())["keyframes"][1]["t"] == 1.0


def test_failed_export_leaves_nothing(state, tmp_path):
    blocker = tmp_path / "exports"
    blocker.write_text("a file where the export folder should be\n")
    srv = serve(state, "127.0.0.1", 0)
    try:
        code, err = _post(f"http://127.0.0.1:{srv.port}/api/export", {})
    finally:
        srv.shutdown()
        srv.server_close()
    assert code == 500 and f"export to {blocker} failed" in err["error"]
    assert _files(tmp_path) == ["exports"] and blocker.read_text().startswith("a file")
    # the atomic-write helper the export uses removes its temporary file when the final rename fails
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        atomic_write_text(tmp_path / "d", "x")
    assert _files(tmp_path) == ["d", "exports"]


def test_slow_clients_time_out(state):
    deadline = 1.5
    srv = serve(state, "127.0.0.1", 0, timeout=deadline)
    port = srv.port
    head = f"POST /api/settings HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"

    def answer(sock):
        sock.settimeout(10)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        return data

    try:
        # silent after part of the headers; trickling a header byte every 0.1 s; a body cut short
        silent = socket.create_connection(("127.0.0.1", port))
        silent.sendall(head.encode())
        trickle = socket.create_connection(("127.0.0.1", port))
        stop = threading.Event()

        def drip():
            try:
                for b in head.encode() * 100:
                    if stop.wait(0.1):
                        return
                    trickle.send(bytes([b]))
            except OSError:
                pass

        threading.Thread(target=drip, daemon=True).start()
        cut = socket.create_connection(("127.0.0.1", port))
        cut.sendall((head + "Content-Length: 100\r\n\r\n{\"frames\":").encode())
        t0 = time.monotonic()
        # while those three hold connections, others are served (before the deadline frees anything)
        assert _raw(f"http://127.0.0.1:{port}", "GET", "/api/state")[0] == 200
        assert time.monotonic() - t0 < 0.8 * deadline
        for sock in (silent, trickle, cut):  # each gets a 408 at the deadline and is closed
            data = answer(sock)
            assert data.startswith(b"HTTP/1.0 408") and f"within {deadline:g} s".encode() in data, data
            sock.close()
        stop.set()
        assert 0.9 * deadline < time.monotonic() - t0 < deadline + 4.0
        assert state.frames == 9
    finally:
        srv.shutdown()
        srv.server_close()


def test_host_names(state):
    srv = serve(state, "localhost", 0)  # a name that resolves to loopback: served, and its name is accepted
    try:
        assert srv.loopback and srv.server_address[0] == "127.0.0.1"
        base = f"http://127.0.0.1:{srv.port}"
        assert _raw(base, "GET", "/api/state", headers={"Host": f"localhost:{srv.port}"})[0] == 200
        assert _raw(base, "GET", "/api/state", headers={"Host": f"LOCALHOST.:{srv.port}"})[0] == 200
        assert _raw(base, "GET", "/api/state", headers={"Host": f"[::1]:{srv.port}"})[0] == 200
        assert _raw(base, "GET", "/api/state", headers={"Host": f"localhost.evil.example:{srv.port}"})[0] == 403
    finally:
        srv.shutdown()
        srv.server_close()
    # a wildcard bind (only with allow_remote) accepts IP literals and this machine's names, never foreign names
    # (checked without binding one: other tests may list this machine's listening sockets)
    wide = AllowedHosts("0.0.0.0", "0.0.0.0", 8765)
    assert not wide.loopback and wide("10.1.2.3:8765") and wide(f"{socket.gethostname()}:8765")
    assert not wide("evil.example:8765") and not wide("10.1.2.3:1") and not wide("10.1.2.3")
    one = AllowedHosts("192.0.2.7", "192.0.2.7", 80)  # a specific address: that address only; port 80 implied
    assert one("192.0.2.7") and one("192.0.2.7:80") and not one("192.0.2.8:80") and not one("localhost:80")


def test_command_line_hosts(tmp_path, monkeypatch, capsys, caplog):
    room = Room.random(np.random.default_rng(2))
    img, depth = render(room, make_pose(np.eye(3), [0.0, 0.0, room.lo[2] + 1.5]), INTR, W, H)
    Image.fromarray(img).save(tmp_path / "room.png")
    np.save(tmp_path / "depth.npy", depth)
    monkeypatch.chdir(tmp_path)
    common = ["--image", "room.png", "--depth-file", "depth.npy", "--height", str(H), "--width", str(W),
              "--port", "0"]
    # errors: one line on stderr, no traceback, exit status 2
    busy = socket.create_server(("127.0.0.1", 0))  # a port in use (so the wildcard case below never listens)
    try:
        for args, msg in [(["--host", "0.0.0.0"], "not a loopback address"),
                          (["--host", "no-such-host.invalid"], "cannot resolve"),
                          (["--port", str(busy.getsockname()[1])], "in use"),
                          (["--host", "0.0.0.0", "--allow-remote", "--port", str(busy.getsockname()[1])], "in use"),
                          (["--image", "missing.png"], "missing.png")]:
            caplog.clear()
            with pytest.raises(SystemExit) as e:
                editor_main(common + args)
            # (the --allow-remote warning may also reach stderr when the project's log handler is installed)
            err = [ln for ln in capsys.readouterr().err.splitlines() if "reachable from other machines" not in ln]
            assert e.value.code == 2 and len(err) == 1 and err[0].startswith("editor: ") and msg in err[0], err
            # a non-loopback address needs --allow-remote, and then warns
            assert ("reachable from other machines" in caplog.text) == ("--allow-remote" in args), caplog.text
    finally:
        busy.close()
    # --host localhost: a working server (the command's own loop), exporting into --export-dir
    servers = []
    thread = threading.Thread(target=editor_main, args=(common + ["--host", "localhost", "--export-dir", "out/ed"],),
                              kwargs={"started": servers.append}, daemon=True)
    thread.start()
    for _ in range(600):
        if servers or not thread.is_alive():
            break
        time.sleep(0.1)
    srv = servers[0]
    try:
        url = re.search(r"http://\S+/", capsys.readouterr().out).group(0).rstrip("/")
        assert url == f"http://127.0.0.1:{srv.port}"
        code, out = _post(url + "/api/export", {})
        assert code == 200 and Path(out["path"]).parent == (tmp_path / "out/ed").resolve()
        assert read_camera_file(out["path"]).url == "realcam://editor"
    finally:
        srv.shutdown()
        thread.join(30)
    assert not thread.is_alive()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")
def test_page_in_headless_chromium(server, tmp_path):
    base, state = server
    _post(base + "/api/keyframes", {"op": "add", "c2w": make_pose(np.eye(3), [0.4, 0.0, 0.6]).tolist()})
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1024,768",
             "--virtual-time-budget=8000"]
    with tempfile.TemporaryDirectory() as prof:  # ?selftest=drag drives the page's pointer handlers
        dom = subprocess.run(flags + [f"--user-data-dir={prof}", "--dump-dom", base + "/?selftest=drag"],
                             capture_output=True, text=True, timeout=60).stdout
    assert 'data-ready="1"' in dom and 'data-selftest="done"' in dom, dom[-2000:]
    assert f"points: {len(state.cloud)}, keyframes: 3" in dom
    _check_drag_selftest(json.loads(_get(base + "/api/selftest")[2]), state)
    shot = tmp_path / "editor.png"
    with tempfile.TemporaryDirectory() as prof:
        subprocess.run(flags + [f"--user-data-dir={prof}", f"--screenshot={shot}", base + "/"], capture_output=True,
                       timeout=60)
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape == (768, 1024, 3)
    canvas = img[50:600, 50:600]
    # the point cloud was drawn: many distinct colours on the dark canvas
    assert len(np.unique(canvas.reshape(-1, 3), axis=0)) > 200
    print(f"screenshot {shot}")


def _check_drag_selftest(rep, state):
    """What the page's synthetic drags did, against the view-plane geometry the page reported."""
    eye, x, y, z = (np.array(rep["cam"][k]) for k in ("eye", "x", "y", "z"))
    f, cx, cy = rep["cam"]["f"], rep["cam"]["cx"], rep["cam"]["cy"]

    def project(p):
        d = np.asarray(p) - eye
        return np.array([cx + f * (d @ x) / (d @ z), cy + f * (d @ y) / (d @ z), d @ z])

    u0, v0, zc = rep["start"]
    np.testing.assert_allclose(project([0.4, 0.0, 0.6]), rep["start"], atol=1e-6)
    (du, dv), dz = rep["d"], rep["dz"]
    # plain drag: moved in the plane parallel to the view, by the pixel delta at the keyframe's depth
    np.testing.assert_allclose(rep["plane"], [0.4, 0.0, 0.6] + (du * x + dv * y) * zc / f, atol=1e-5)
    np.testing.assert_allclose(project(rep["plane"]), [u0 + du, v0 + dv, zc], atol=1e-2)  # stays under the pointer
    # shift+drag: along the view direction only, dragging up pushes it away by zc/f per pixel (the page sends the
    # drag as two half moves, each scaling the depth by 1 + |dz|/2/f)
    push = zc * ((1 - dz / 2 / f) ** 2 - 1)
    np.testing.assert_allclose(rep["depth"], np.array(rep["plane"]) + z * push, atol=1e-5)
    assert push > 0.05
    np.testing.assert_allclose(camera_centres(state.keyframes[1]["c2w"]), rep["depth"], atol=1e-5)  # server side
    # keyframe 0 is locked: pressing it orbits instead; empty space orbits; neither moves keyframes
    assert "locked" in rep["locked_msg"] and rep["kf0"] == [0, 0, 0] and rep["kf0_orbit"] != 0 and rep["orbit"] != 0
    np.testing.assert_array_equal(state.keyframes[0]["c2w"], np.eye(4))
    # alt+click on a cloud point: a new keyframe at the free camera looking at it
    assert rep["keyframes"] == len(state.keyframes) == 3
    assert np.abs(state.view_cloud.xyz - rep["look_at"]).max(axis=1).min() < 1e-3
    np.testing.assert_allclose(state.keyframes[2]["c2w"], look_at(state.camera[:3, 3], rep["look_at"]), atol=1e-9)
