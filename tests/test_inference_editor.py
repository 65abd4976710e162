"""Trajectory editor on viser: the state driven through viser's Python API (gizmo poses, keyframes, exports,
imports), the Host/Origin guard with real HTTP and websocket handshakes, the command line, Generate with the
tiny model, and the page in headless Chromium (the point cloud drawn where the camera looks)."""

from __future__ import annotations

import csv
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import viser
from PIL import Image

from annotate.camera import look_at, make_pose, rot_y, rotmat_to_quat, w2c_to_c2w
from annotate.re10k import read_camera_file
from annotate.synth import Room, render
from train.inference.editor import Editor, EditorScene, GenerateConfig
from train.inference.editor import cli as editor_cli
from train.inference.editor_access import AllowedHosts, guard_server, refusal
from train.inference.model import ModelSource
from train.inference.scene import point_cloud, splat
from train.inference.trajectory import keyframe_trajectory, load_trajectory

H, W = 48, 64
INTR = np.array([32.0, 32.0, 32.0, 24.0])


@pytest.fixture(scope="module")
def room_scene():
    room = Room.random(np.random.default_rng(2))
    img, depth = render(room, make_pose(np.eye(3), [0.0, 0.0, room.lo[2] + 1.5]), INTR, W, H)
    return EditorScene(img, depth, INTR)


@pytest.fixture()
def server():
    srv = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
    guard_server(srv, AllowedHosts("127.0.0.1", "127.0.0.1"))
    yield srv
    srv.stop()


def _c2w(path) -> np.ndarray:
    return w2c_to_c2w(read_camera_file(path).w2c)


def test_keyframes_through_viser_give_the_camera_file(server, room_scene, tmp_path):
    ed = Editor(server, room_scene, tmp_path / "exports", frames=9, stride=2)
    assert len(ed.cloud_handle.points) == len(point_cloud(room_scene.image, room_scene.depth, INTR)) > 0.9 * H * W
    np.testing.assert_allclose(ed.trajectory().c2w, np.tile(np.eye(4), (9, 1, 1)))
    assert ed.add_keyframe() == 1 and ed.add_keyframe() == 2 and ed.add_keyframe() == 3
    # move keyframes through their gizmos, as a drag in the browser does
    a = look_at([0.4, -0.1, 0.6], [0.0, 0.0, 3.0])
    b = make_pose(rot_y(-0.3), [-0.3, 0.05, 1.0])
    for k, pose in ((ed.keyframes[0], a), (ed.keyframes[1], b)):
        k.control.position, k.control.wxyz = pose[:3, 3], rotmat_to_quat(pose[:3, :3])
    ed.refresh()
    assert ed.move_keyframe(1, 1) == 2  # reorder: b first, then a
    ed.remove_keyframe(3)
    with pytest.raises(ValueError):
        ed.remove_keyframe(0)  # the input camera
    with pytest.raises(ValueError):
        ed.move_keyframe(1, -1)
    expected = keyframe_trajectory([{"t": 0.0, "c2w": np.eye(4)}, {"t": 1.0, "c2w": b}, {"t": 2.0, "c2w": a}], 9,
                                   relative=False).c2w
    np.testing.assert_allclose(ed.trajectory().c2w, expected, atol=1e-9)
    path = ed.export()
    assert path.parent == (tmp_path / "exports").resolve() and path.name.startswith("trajectory_")
    cam = read_camera_file(path)
    np.testing.assert_allclose(w2c_to_c2w(cam.w2c), expected, atol=1e-6)
    np.testing.assert_allclose(cam.intrinsics, np.tile(INTR / [W, H, W, H], (9, 1)), atol=1e-9)
    assert cam.timestamps_us.tolist() == [round(i * 2 / 30 * 1e6) for i in range(9)] and cam.url == "realcam://editor"
    keys = path.with_suffix(".keyframes.json")
    assert json.loads(keys.read_text())["keyframes"][2]["t"] == 2.0
    # both files feed train.sample's --trajectory as they are
    for spec in (keys, path):
        np.testing.assert_allclose(load_trajectory(str(spec), 9, INTR, (H, W)).c2w, expected, atol=1e-6)

    # import: the keyframe file and the camera file both give the same path back
    ed.clear_keyframes()
    ed.import_file(keys.name)
    np.testing.assert_allclose(ed.trajectory().c2w, expected, atol=1e-8)
    ed.clear_keyframes()
    ed.import_file(path.name)
    assert ed.frames == 9 and len(ed.keyframes) == 8
    np.testing.assert_allclose(ed.trajectory().c2w, expected, atol=1e-6)
    ed.set_options(loop=True)
    np.testing.assert_allclose(ed.trajectory().c2w[-1], np.eye(4), atol=1e-9)
    # uploads are saved under generated names; the browser's file name only gives the type; no paths
    saved = ed.import_upload("../../evil.json", keys.read_bytes())
    assert saved.parent == tmp_path / "exports" and saved.name.startswith("upload_")
    np.testing.assert_allclose(ed.trajectory().c2w, expected, atol=1e-8)
    for bad in ("../exports/" + keys.name, str(keys), "missing.json"):
        with pytest.raises(ValueError):
            ed.import_file(bad)
    with pytest.raises(ValueError):
        ed.import_upload("x.sh", b"#!/bin/sh")
    for bad in (b'{"frames": 3}', b"[1, 2]", b"not json"):
        with pytest.raises(ValueError, match="not a keyframe file"):
            ed.import_upload("k.json", bad)
    np.testing.assert_allclose(ed.trajectory().c2w, expected, atol=1e-8)  # a refused import changes nothing
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == sorted([path.name, keys.name, saved.name])
    assert not list(tmp_path.glob("*.json")) and not (tmp_path / "evil.json").exists()
    # presets become keyframes along the preset's path
    ed.set_options(loop=False)
    ed.apply_preset("dolly:distance=0.6")
    np.testing.assert_allclose(ed.trajectory().c2w[-1][:3, 3], [0, 0, 0.6], atol=1e-9)
    frames, strip = ed.preview()
    assert frames.shape == (9, H, W, 3) and strip.shape == (2 * H, 9 * W)
    np.testing.assert_array_equal(frames[0], splat(ed.cloud, np.eye(4), INTR, (H, W), 2)[0])  # scene.py's splats
    assert (frames[0] > 0).any(axis=-1).mean() > 0.9 and strip[:H, :W].mean() > 200  # frame 0 sees everything


def test_gizmo_drag_over_the_websocket(server, room_scene, tmp_path):
    """A keyframe dragged as the browser reports it (a TransformControlsUpdateMessage on a real websocket, through
    the Host/Origin guard): the keyframe moves, the path is redrawn, and Export writes the moved path."""
    import msgspec
    from viser._messages import TransformControlsUpdateMessage
    from websockets.sync.client import connect

    ed = Editor(server, room_scene, tmp_path / "exports", frames=5, stride=2)
    ed.add_keyframe()
    target = look_at([0.3, -0.2, 0.8], [0.0, 0.0, 3.0])
    msg = TransformControlsUpdateMessage(ed.keyframes[0].control.name, tuple(rotmat_to_quat(target[:3, :3])),
                                         tuple(target[:3, 3]))
    port = server.get_port()
    with connect(f"ws://127.0.0.1:{port}", subprotocols=[f"viser-v{viser.__version__}"],
                 origin=f"http://127.0.0.1:{port}", open_timeout=10) as ws:
        ws.send(msgspec.msgpack.encode(msg.as_serializable_dict()))
        for _ in range(200):
            if "+0.30, -0.20, +0.80" in ed.gui["keyframes"].content:
                break
            time.sleep(0.05)
    assert "1. t=1  (+0.30, -0.20, +0.80) m" in ed.gui["keyframes"].content  # redrawn by the gizmo's callback
    np.testing.assert_allclose(ed.keyframes[0].c2w, target, atol=1e-9)
    expected = keyframe_trajectory([{"t": 0.0, "c2w": np.eye(4)}, {"t": 1.0, "c2w": target}], 5, relative=False)
    np.testing.assert_allclose(_c2w(ed.export()), expected.c2w, atol=1e-6)


def test_gui_controls_drive_the_editor(server, room_scene, tmp_path):
    """The side panel's widgets, set through viser's Python API (as a browser's clicks arrive): callbacks run."""
    ed = Editor(server, room_scene, tmp_path / "exports", frames=5, stride=2)
    g = ed.gui

    def click(name):
        return click_on(ed, name)

    assert click("add") == "keyframe 1 added" and len(ed.keyframes) == 1
    g["frames"].value = 7
    assert ed.frames == 7 and len(ed.trajectory()) == 7
    g["preset"].value, g["preset_args"].value = "truck", "distance=0.4"
    click("apply_preset")
    np.testing.assert_allclose(ed.trajectory().c2w[-1][:3, 3], [0.4, 0, 0], atol=1e-9)
    status = click("export")
    path = Path(status.removeprefix("wrote "))
    assert path.parent == (tmp_path / "exports").resolve() and path.name in g["files"].options
    g["files"].value = path.with_suffix(".keyframes.json").name
    ed.clear_keyframes()
    click("import")
    np.testing.assert_allclose(ed.trajectory().c2w[-1][:3, 3], [0.4, 0, 0], atol=1e-9)
    g["index"].value = len(ed.keyframes)
    click("delete")
    assert len(ed.keyframes) == 3
    click("render")
    assert g["preview"].image.shape == (H, 7 * W, 3) and g["mask"].image.shape == (2 * H, 7 * W, 3)
    g["index"].value = 1
    assert click("earlier").startswith("move failed: keyframe 1 cannot move earlier")  # a refusal, not a crash
    assert click("generate").startswith("generate failed: no model")
    # a failed export leaves nothing behind (and says why)
    blocked = Editor(server, room_scene, tmp_path / "blocker", frames=5)
    (tmp_path / "blocker").write_text("a file where the export folder should be\n")
    assert click_on(blocked, "export").startswith("export failed: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "exports"]


def click_on(ed, name):
    ed.gui[name].value = True
    return ed.gui["status"].content


def _request(port, path="/", headers=None, method="GET"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    conn.endheaders()
    status = conn.getresponse().status
    conn.close()
    return status


def test_foreign_host_and_origin_are_refused(server):
    import msgspec
    from viser._messages import ShareUrlRequest
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    port = server.get_port()
    ok = f"127.0.0.1:{port}"
    assert _request(port, headers={"Host": ok}) == 200
    assert _request(port, headers={"Host": f"localhost:{port}"}) == 200
    assert _request(port, headers={"Host": "127.0.0.1:18080"}) == 200  # an SSH forward from another local port
    assert _request(port, headers={"Host": f"evil.example:{port}"}) == 403  # DNS rebinding
    assert _request(port, headers={"Host": f"localhost.evil.example:{port}"}) == 403
    assert _request(port) == 403  # no Host at all
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": f"viser-v{viser.__version__}"}
    assert _request(port, headers={"Host": f"rebound.example:{port}", **upgrade}) == 403
    assert _request(port, headers={"Host": ok, "Origin": f"http://{ok}", **upgrade}) == 101
    # a real websocket client: the page's own origin (or none: not a browser) connects, a foreign page is refused
    proto = [f"viser-v{viser.__version__}"]
    for origin in (f"http://{ok}", None):
        with connect(f"ws://{ok}", subprotocols=proto, origin=origin, open_timeout=10) as ws:
            assert ws.subprotocol == proto[0]
            # the panel's share button asks the server for a public tunnel: refused (no tunnel, no network)
            ws.send(msgspec.msgpack.encode(ShareUrlRequest().as_serializable_dict()))
            time.sleep(0.5)
            assert server._share_tunnel is None
    for origin in ("http://evil.example", f"http://evil.example:{port}", "null", f"https://{ok}.evil.example"):
        with pytest.raises(InvalidStatus) as e:
            connect(f"ws://{ok}", subprotocols=proto, origin=origin, open_timeout=10)
        assert e.value.response.status_code == 403
    # the rules on their own
    lo = AllowedHosts("localhost", "127.0.0.1")
    assert lo("LOCALHOST.:1") and lo("[::1]:8080") and lo("127.0.0.2") and not lo("evil.example:8080")
    assert refusal({"Host": "localhost:9000", "Origin": "http://localhost:9000"}, lo) is None
    assert refusal({"Host": "localhost:9000", "Origin": "http://localhost:9001"}, lo)
    wide = AllowedHosts("0.0.0.0", "0.0.0.0")
    assert wide("10.1.2.3:8080") and wide(f"{socket.gethostname()}:8080") and not wide("evil.example")
    one = AllowedHosts("192.0.2.7", "192.0.2.7")
    assert one("192.0.2.7:80") and not one("192.0.2.8") and not one("localhost")


def test_command_line(tmp_path, monkeypatch, capsys, room_scene):
    Image.fromarray(room_scene.image).save(tmp_path / "room.png")
    np.save(tmp_path / "depth.npy", room_scene.depth)
    monkeypatch.chdir(tmp_path)
    common = ["--image", "room.png", "--depth-file", "depth.npy", "--height", str(H), "--width", str(W),
              "--port", "0", "--frames", "5"]
    for args, msg in [(["--host", "0.0.0.0"], "not a loopback address"),
                      (["--host", "no-such-host.invalid"], "cannot resolve"),
                      (["--image", "missing.png"], "missing.png"),
                      (["--clip", "x"], "--annotations")]:
        assert editor_cli(common + args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("editor: ") and msg in err[-1], err

    seen = {}

    def started(ed):
        ed.add_keyframe()
        seen["path"] = ed.export()
        seen["port"] = ed.server.get_port()
        seen["host"] = _request(seen["port"], headers={"Host": f"evil.example:{seen['port']}"})

    assert editor_cli(common + ["--host", "localhost", "--export-dir", "out/ed"], started=started) == 0
    out = capsys.readouterr().out
    assert f"http://127.0.0.1:{seen['port']}/" in out and "ssh -L" in out
    assert seen["path"].parent == (tmp_path / "out/ed").resolve() and seen["host"] == 403
    np.testing.assert_allclose(_c2w(seen["path"])[-1][:3, 3], [0, 0, 0.2 * np.median(room_scene.depth)], rtol=1e-6)


def test_print_config_round_trips(tmp_path, capsys):
    """--print-config's YAML loads back with --config; Generate's options land in generate.*."""
    from train.inference.editor import EditorConfig, command

    argv = ["--image", "room.png", "--tiny", "--backbone", "tiny", "--steps", "3", "--cfg", "5", "--mode", "loop",
            "--port", "0", "--allow-remote", "generate.fps=12", "--frames", "5"]
    assert editor_cli([*argv, "--print-config"]) == 0
    (tmp_path / "c.yaml").write_text(capsys.readouterr().out)
    want = EditorConfig(image="room.png", port=0, allow_remote=True, frames=5,
                        generate=GenerateConfig(ModelSource(tiny=True, config="tiny"), steps=3, cfg=5.0, mode="loop",
                                                fps=12.0))
    assert command().parse(argv)[0] == want
    assert command().parse(["--config", str(tmp_path / "c.yaml")])[0] == want


def test_image_with_the_depth_model(room_scene, tiny_depth_model, tmp_path):
    """Without --depth-file the depth comes from Depth Anything V2 (a tiny random one here), at the model size."""
    from train.inference.editor import open_image

    Image.fromarray(room_scene.image).save(tmp_path / "room.png")
    scene = open_image(tmp_path / "room.png", (32, 48), depth_model=str(tiny_depth_model))
    assert scene.image.shape == (32, 48, 3) and scene.depth.shape == (32, 48)
    assert np.isfinite(scene.depth).all() and (scene.depth > 0).all()
    np.testing.assert_allclose(scene.intr, [24.0, 24.0, 24.0, 16.0])  # 64x48 -> 48x36 -> crop: f = 0.5 * 48


def test_clip_from_an_annotation_folder(train_annotations, tmp_path):
    """--annotations OUT --clip ID: the clip's first frame, its intrinsics, and its metric cameras as keyframes."""
    from annotate.images import resize_crop_map
    from annotate.video import read_frames
    from train.inference.scene import resize_crop
    from train.inference.trajectory import annotated_c2w_metric

    row = next(r for r in train_annotations["rows"] if r["status"] == "ok")
    ann, clip = train_annotations["annotation_dir"], row["clip_id"]
    c2w = annotated_c2w_metric(ann, clip)
    seen = {}

    def started(ed):
        seen["traj"], seen["image"], seen["intr"] = ed.trajectory().c2w, ed.scene.image, ed.scene.intr
        seen["depth"] = ed.scene.depth
        seen["export"] = ed.export()

    assert editor_cli(["--annotations", str(ann), "--clip", clip, "--manifest", str(train_annotations["manifest"]),
                       "--height", "32", "--width", "48", "--frames", "5", "--frame-stride", "2", "--port", "0",
                       "--export-dir", str(tmp_path / "exports")], started=started) == 0
    # 5 frames at stride 2 span lines 0..8, and the keyframes are lines 0, 2, 4, 6, 8: the path is the clip's
    np.testing.assert_allclose(seen["traj"], c2w[[0, 2, 4, 6, 8]], atol=1e-6)
    np.testing.assert_allclose(_c2w(seen["export"]), c2w[[0, 2, 4, 6, 8]], atol=1e-6)
    manifest = Path(train_annotations["manifest"])
    entry = next(r for r in csv.DictReader(open(manifest)) if r["clip_id"] == clip)
    first, plan = resize_crop(read_frames(manifest.parent / entry["video_path"], [0])[0], (32, 48))
    np.testing.assert_array_equal(seen["image"], first)
    with np.load(manifest.parent / entry["depth_path"]) as z:  # the manifest's depth of frame 0, cropped alike
        np.testing.assert_array_equal(seen["depth"], resize_crop_map(z["depth"][0], plan))
    np.testing.assert_allclose(seen["intr"], plan.intrinsics(np.asarray(row["intrinsics"][0])), rtol=1e-6)


def test_generate_with_the_tiny_model_writes_the_edited_path(server, tmp_path):
    import torch

    from annotate.video import read_frames

    torch.set_num_threads(2)
    s, f = 32, 4
    room = Room.random(np.random.default_rng(11))
    intr = np.array([16.0, 16.0, 16.0, 16.0])
    img, depth = render(room, make_pose(np.eye(3), [0.0, 0.0, room.lo[2] + 1.5]), intr, s, s)
    gen = GenerateConfig(ModelSource(tiny=True), steps=25, seed=5)
    ed = Editor(server, EditorScene(img, depth, intr), tmp_path / "exports", frames=f, stride=3, generate=gen)
    ed.add_keyframe(look_at([0.2, 0.0, 0.3], [0.0, 0.0, 3.0]))
    ed.add_keyframe()
    ed.keyframes[1].control.position = (-0.1, 0.05, 0.5)
    # the panel's Generate, as a click arrives: its settings come from the panel's widgets
    g = ed.gui
    g["steps"].value, g["prompt"].value, g["shaping"].value = 2, "a room", True
    g["cfg"].value = 1.0  # no unconditional UNet call: half the time
    g["generate"].value = True
    status = g["status"].content
    assert status.startswith("wrote "), status
    out = Path(status.removeprefix("wrote ")).parent
    paths = {k: out / n for k, n in (("video", "video.mp4"), ("trajectory", "trajectory.txt"),
                                     ("settings", "settings.json"), ("preview", "preview.mp4"), ("mask", "mask.png"))}
    assert out.parent == tmp_path / "exports" and out.name.startswith("generate_")
    assert read_frames(paths["video"]).shape == (f, s, s, 3)
    np.testing.assert_allclose(_c2w(paths["trajectory"]), ed.trajectory().c2w, atol=1e-6)
    settings = json.loads(paths["settings"].read_text())
    assert settings["options"]["steps"] == 2 and settings["options"]["cfg_scale"] == 1.0
    assert settings["shaped_timesteps"] == [999]
    assert settings["inputs"]["keyframes"]["keyframes"][2]["c2w"][2][3] == pytest.approx(0.5)
    assert g["progress"].value == 100.0 and g["progress"].visible  # reset to 0 at the start, 100 at the last step
    assert paths["preview"].is_file() and paths["mask"].is_file()
    assert g["video"].image.shape == (s, f * s, 3) and not g["generate"].disabled


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it as root: apt-get install "
                                             "-y chromium)")
def test_page_draws_the_point_cloud_in_headless_chromium(server, tmp_path):
    green = np.zeros((H, W, 3), np.uint8)
    green[..., 1] = 255  # one saturated colour that nothing else on the page has
    ed = Editor(server, EditorScene(green, np.full((H, W), 2.0, np.float32), INTR, outlier_removal=False),
                tmp_path / "exports", frames=5, stride=2)
    ed.add_keyframe()
    ed.input_frustum.visible = False  # its textured image is green too: only the cloud may count
    shot = Path(os.environ.get("EDITOR_SCREENSHOT", tmp_path / "page.png"))
    # a loaded machine may need longer before the cloud arrives: one retry with a longer (virtual) time budget
    for budget in (20000, 60000):
        shot.unlink(missing_ok=True)
        with tempfile.TemporaryDirectory() as prof:
            flags = [CHROMIUM, "--headless=new", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                     "--enable-webgl", "--ignore-gpu-blocklist", "--no-sandbox", "--disable-gpu-sandbox",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", f"--user-data-dir={prof}", "--window-size=1024,768",
                     f"--virtual-time-budget={budget}", f"--screenshot={shot}",
                     f"http://127.0.0.1:{server.get_port()}/"]
            t0 = time.time()
            run = subprocess.run(flags, capture_output=True, text=True, timeout=180)
        assert shot.is_file(), run.stderr[-2000:]
        img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
        # (the renderer lifts a saturated colour's other channels to ~100; nothing else on the page is this green)
        is_green = (img[..., 1] > 200) & (img[..., 0] < 160) & (img[..., 2] < 160)
        h, w = is_green.shape
        # the initial camera looks at the cloud's centre: green fills most of the middle (the keyframe's frustum
        # and gizmo cover the rest) and a good part of the page
        centre = is_green[h // 2 - 60:h // 2 + 60, w // 2 - 60:w // 2 + 60].mean()
        print(f"chromium {time.time() - t0:.1f} s: green {is_green.mean():.3f} of the page, {centre:.3f} of the centre")
        if centre > 0.6 and is_green.mean() > 0.2:
            break
    assert centre > 0.6 and is_green.mean() > 0.2, (centre, is_green.mean())
