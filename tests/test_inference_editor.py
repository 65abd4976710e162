"""Trajectory editor: its state without a GUI, the loopback HTTP API, and the page in headless Chromium."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from annotate.camera import camera_centres, orthonormality_error, w2c_to_c2w
from annotate.re10k import parse_camera_text, read_camera_file
from annotate.synth import Room, render
from train.inference.editor import EditorState, serve
from train.inference.scene import splat
from train.inference.trajectory import look_at, make_pose

H, W = 48, 64
INTR = np.array([32.0, 32.0, 32.0, 24.0])


@pytest.fixture()
def state(tmp_path):
    room = Room.random(np.random.default_rng(2))
    img, depth = render(room, make_pose(np.eye(3), [0.0, 0.0, room.lo[2] + 1.5]), INTR, W, H)
    return EditorState(img, depth, INTR, frames=9, stride=2, export_path=tmp_path / "traj.txt")


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
    assert code == 200 and Path(out["path"]).is_file()
    code, st = _post(base + "/api/keyframes", {"op": "add", "look_at": [0.0, 0.0, 2.0], "t": 5})
    np.testing.assert_allclose(np.array(st["keyframes"][-1]["c2w"]), look_at([0.25, 0, 0], [0, 0, 2]), atol=1e-6)
    assert json.loads(_get(base + "/api/selftest")[2]) == {}
    _post(base + "/api/selftest", {"plane": [1, 2, 3]})
    assert json.loads(_get(base + "/api/selftest")[2]) == {"plane": [1, 2, 3]}


def test_only_loopback():
    with pytest.raises(ValueError, match="loopback"):
        serve(None, "0.0.0.0", 0)


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
