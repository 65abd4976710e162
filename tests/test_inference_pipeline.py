"""End-to-end inference with the tiny random DynamiCrafter: every mode, determinism, camera plug-in, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from annotate.camera import w2c_to_c2w
from annotate.re10k import read_camera_file
from annotate.synth import Room, render
from annotate.video import read_frames
from train.dynamicrafter.tiny import build_tiny_model, randomize_
from train.inference.pipeline import Pipeline, SampleOptions, to_tensor
from train.inference.trajectory import make_pose, preset_trajectory

S = 32  # model size for the tests (latent 4x4)
F = 4
INTR = np.array([16.0, 16.0, 16.0, 16.0])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(2)
    return build_tiny_model(tmp_path_factory.mktemp("tok"), seed=0)


@pytest.fixture(scope="module")
def scene():
    room = Room.random(np.random.default_rng(11))
    c2w0 = make_pose(np.eye(3), [0.0, 0.0, room.lo[2] + 1.5])
    img, depth = render(room, c2w0, INTR, S, S)
    c2w1 = make_pose(np.eye(3), [0.4, 0.0, 1.0]) @ c2w0.copy()
    c2w1[:3, 3] = c2w0[:3, 3] + [0.4, 0.0, 1.0]
    img2, _ = render(room, c2w1, INTR, S, S)
    return img, depth, img2


def _opts(**kw):
    base = dict(prompt="a room", seed=5, steps=3, cfg_scale=7.5, guidance_rescale=0.7, frame_stride=3)
    base.update(kw)
    return SampleOptions(**base)


def _traj(loop=False):
    return preset_trajectory("orbit:angle=20,radius=3", F, INTR, loop=loop)


MODES = {
    "plain": dict(),
    "shaped": dict(noise_shaping=True),
    "loop": dict(mode="loop"),
    "interp": dict(mode="interp"),
    "continue": dict(mode="continue"),
}


def _run(tiny, scene, name, seed=5):
    img, depth, img2 = scene
    kw = MODES[name]
    extra = {}
    if name == "interp":
        extra["last_image"] = img2
    if name == "continue":
        extra["overlap_frames"] = np.stack([img, img2])
    return Pipeline(tiny).generate(img, INTR, _traj(loop=name == "loop"), _opts(seed=seed, **kw), depth=depth,
                                   **extra)


@pytest.mark.parametrize("name", list(MODES))
def test_modes_shapes_and_determinism(tiny, scene, name):
    a = _run(tiny, scene, name)
    b = _run(tiny, scene, name)
    assert a.video.shape == (F, S, S, 3) and a.video.dtype == np.uint8
    assert a.latents.shape == (1, 4, F, S // 8, S // 8)
    assert a.preview.shape == (F, S, S, 3)
    assert a.pixel_mask.shape == (F, S, S) and a.latent_mask.shape == (F, S // 8, S // 8)
    assert a.c2w.shape == (F, 4, 4) and a.intrinsics.shape == (F, 4)
    np.testing.assert_array_equal(a.video, b.video)
    assert torch.equal(a.latents, b.latents)
    assert a.shaped_timesteps == ([999] if name == "shaped" else [])  # 3 trailing steps: 999, 666, 332
    c = _run(tiny, scene, name, seed=6)
    assert not torch.equal(a.latents, c.latents)


def test_shaping_with_no_shaped_step_is_the_plain_sample(tiny, scene):
    img, depth, _ = scene
    plain = Pipeline(tiny).generate(img, INTR, _traj(), _opts(), depth=depth)
    none = Pipeline(tiny).generate(img, INTR, _traj(), _opts(noise_shaping=True, shaping_threshold=1000), depth=depth)
    shaped = Pipeline(tiny).generate(img, INTR, _traj(), _opts(noise_shaping=True, shaping_threshold=600),
                                     depth=depth)
    assert none.shaped_timesteps == [] and shaped.shaped_timesteps == [999, 666]
    assert torch.equal(plain.latents, none.latents)
    assert not torch.equal(plain.latents, shaped.latents)
    assert shaped.latent_mask[0].all() and shaped.latent_mask.sum() > 0


def test_plain_pipeline_matches_backbone_sample(tiny, scene):
    """Without hooks or camera our loop is DynamiCrafter.sample exactly (same seed use)."""
    img, depth, _ = scene
    ours = Pipeline(tiny).generate(img, INTR, _traj(), _opts(), preview=False)
    ref = tiny.sample(to_tensor(img, "cpu"), "a room", frames=F, steps=3, spacing="uniform_trailing", eta=1.0,
                      cfg_scale=7.5, guidance_rescale=0.7, fs=3, seed=5, return_latents=True)
    torch.testing.assert_close(ours.latents, ref)
    assert ours.preview is None


def test_interpolation_and_loop_conditioning(tiny, scene):
    img, depth, img2 = scene
    interp = _run(tiny, scene, "interp")
    cc = interp.concat
    z1 = tiny.encode_first_stage(to_tensor(img, "cpu"), torch.Generator().manual_seed(5))
    torch.testing.assert_close(cc[:, :, 0], z1)
    assert cc[:, :, 1:-1].abs().sum() == 0
    assert cc[:, :, -1].abs().sum() > 0 and not torch.allclose(cc[:, :, -1], cc[:, :, 0])
    plain = _run(tiny, scene, "plain")
    assert not torch.equal(interp.latents, plain.latents)  # the last image reaches the UNet
    # a different end image changes the clip
    other = Pipeline(tiny).generate(img, INTR, _traj(), _opts(mode="interp"), depth=depth, last_image=img[::-1].copy())
    assert not torch.equal(interp.latents, other.latents)
    loop = _run(tiny, scene, "loop")
    assert loop.concat[:, :, 1:-1].abs().sum() == 0
    np.testing.assert_allclose(loop.c2w[-1], loop.c2w[0], atol=1e-12)


def test_continuation_pastes_overlap_latents(tiny, scene):
    img, depth, img2 = scene
    res = _run(tiny, scene, "continue")
    assert res.pasted_timesteps == [999, 666, 332]
    z0 = tiny.encode_first_stage(to_tensor(np.stack([img, img2]), "cpu"), torch.Generator().manual_seed(7))
    torch.testing.assert_close(res.latents[:, :, 1], z0[:, :, 1])  # overlap frame 1: the clean latent
    torch.testing.assert_close(res.latents[:, :, 0], res.concat[:, :, 0])  # frame 0: the condition latent
    plain = _run(tiny, scene, "plain")
    assert not torch.equal(res.latents[:, :, 2:], plain.latents[:, :, 2:])


# ------------------------------------------------------------------------------------------------ camera plug-in


@pytest.fixture(scope="module")
def plugin_file(tmp_path_factory):
    from train.camera import CameraPlugin
    from train.config import CameraConfig
    from train.inference.plugin import save_plugin

    model = build_tiny_model(tmp_path_factory.mktemp("tok_p"), seed=0)
    plugin = CameraPlugin(model.unet, CameraConfig(kind="realcam"))
    randomize_(plugin, seed=3, scale=0.5)  # zero-inits overwritten so the camera matters
    step = tmp_path_factory.mktemp("run") / "checkpoints" / "step-0000002"
    return save_plugin(plugin, step / "plugin.safetensors")


def test_camera_plugin_loads_and_controls_the_camera(tmp_path, scene, plugin_file):
    from train.config import CameraConfig
    from train.inference.plugin import load_camera_plugin

    img, depth, _ = scene
    model = build_tiny_model(tmp_path / "tok", seed=0)
    plain = Pipeline(model).generate(img, INTR, _traj(), _opts(), preview=False)
    plugin = load_camera_plugin(model, plugin_file.parent)  # the checkpoint folder
    assert plugin.kind == "realcam"
    pipe = Pipeline(model, plugin)
    a = pipe.generate(img, INTR, _traj(), _opts(), preview=False)
    a2 = pipe.generate(img, INTR, _traj(), _opts(), preview=False)
    b = pipe.generate(img, INTR, preset_trajectory("dolly:distance=-1", F, INTR), _opts(), preview=False)
    assert torch.equal(a.latents, a2.latents)
    assert not torch.equal(a.latents, plain.latents)
    assert not torch.equal(a.latents, b.latents)
    with pytest.raises(RuntimeError):  # strict: cameractrl has no epipolar weights
        load_camera_plugin(build_tiny_model(tmp_path / "tok2", seed=0), plugin_file, CameraConfig(kind="cameractrl"))


def test_validation_sample_is_the_pipeline_sample(tmp_path, scene, plugin_file):
    """The trainer's validation videos and inference run one sampling loop: the same image, caption, cameras
    and seed give the same video, bit for bit."""
    from train.config import ValidationConfig
    from train.inference.pipeline import to_uint8
    from train.inference.plugin import load_camera_plugin
    from train.trainer import validation_video

    img, _, img2 = scene
    model = build_tiny_model(tmp_path / "tok", seed=0)
    plugin = load_camera_plugin(model, plugin_file)
    traj = _traj()
    ours = Pipeline(model, plugin).generate(img, INTR, traj, _opts(seed=0), preview=False)
    sample = {"video": to_tensor(np.stack([img] + [img2] * (F - 1)), "cpu")[0], "caption": "a room", "stride": 3,
              "c2w": torch.tensor(traj.c2w, dtype=torch.float32),
              "intrinsics": torch.tensor(traj.intrinsics_for(INTR), dtype=torch.float32)}
    vc = ValidationConfig(steps=3, spacing="uniform_trailing", eta=1.0, cfg_scale=7.5, guidance_rescale=0.7)
    video = validation_video(model, plugin, sample, vc, "fs", seed=0)
    np.testing.assert_array_equal(to_uint8(video), ours.video)
    other = validation_video(model, plugin, sample, vc, "fs", seed=1)
    assert not np.array_equal(to_uint8(other), ours.video)


# ------------------------------------------------------------------------------------------------ CLI


def _sample(argv: list[str]) -> dict:
    """``python -m train.sample ARGV`` through its parsed config, keeping main's result (the CLI prints none)."""
    from train.sample import command, main

    return main(command().parse(argv)[0])


def test_cli_writes_every_output_and_continues(tmp_path, scene, plugin_file):
    img, depth, img2 = scene
    big = np.asarray(Image.fromarray(img).resize((48, 32)))  # non-square input: resized + centre-cropped
    Image.fromarray(big).save(tmp_path / "in.png")
    np.save(tmp_path / "depth.npy", np.repeat(depth[:, :1], 48, axis=1) * 0 + depth.mean())
    np.save(tmp_path / "depth_model_size.npy", depth)
    common = ["--tiny", "--frames", str(F), "--height", str(S), "--width", str(S), "--steps", "3", "--seed", "1",
              "--prompt", "a room"]
    out1 = tmp_path / "out1"
    r1 = _sample(["--image", str(tmp_path / "in.png"), "--trajectory", "dolly:distance=0.6", "--noise-shaping",
               "--depth-file", str(tmp_path / "depth.npy"),
               "--plugin", str(plugin_file), "--out", str(out1), "--frame-stride", "4", *common])
    for name in ("video.mp4", "preview.mp4", "mask.png", "trajectory.txt", "settings.json"):
        assert (out1 / name).is_file(), name
    assert read_frames(out1 / "video.mp4").shape == (F, S, S, 3)
    assert read_frames(out1 / "preview.mp4").shape == (F, S, S, 3)
    assert Image.open(out1 / "mask.png").size == (F * S, 2 * S)
    cam = read_camera_file(out1 / "trajectory.txt")
    np.testing.assert_allclose(w2c_to_c2w(cam.w2c), r1["result"].c2w, atol=1e-8)
    np.testing.assert_allclose(cam.intrinsics[0], [0.75, 0.75, 0.5, 0.5])  # f = 0.5 * 48 px over a 32 px crop
    settings = json.loads((out1 / "settings.json").read_text())
    assert settings["shaped_timesteps"] == [999]
    assert settings["options"]["frame_stride"] == 4 and settings["model"]["plugin_kind"] == "realcam"
    assert settings["image"]["resized_hw"] == [32, 48]

    out2 = tmp_path / "out2"
    r2 = _sample(["--continue-from", str(out1), "--num-overlap", "2", "--trajectory", "truck:distance=0.3",
               "--out", str(out2), "--depth-file", str(tmp_path / "depth_model_size.npy"), *common])
    c2w = r2["result"].c2w
    prev = w2c_to_c2w(cam.w2c)
    np.testing.assert_allclose(c2w[1], np.linalg.inv(prev[-2]) @ prev[-1], atol=1e-8)  # the overlap poses
    assert r2["result"].pasted_timesteps == [999, 666, 332]
    assert json.loads((out2 / "settings.json").read_text())["options"]["mode"] == "continue"


def test_cli_with_depth_model_interpolation(tmp_path, scene, tiny_depth_model):
    from train.sample import cli

    img, depth, img2 = scene
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(img2).save(tmp_path / "b.png")
    out = tmp_path / "out"
    assert cli(["--tiny", "--image", str(tmp_path / "a.png"), "--last-image", str(tmp_path / "b.png"),
                "--trajectory", "orbit:angle=15", "--depth-model", str(tiny_depth_model), "--frames", str(F),
                "--height", str(S), "--width", str(S), "--steps", "2", "--out", str(out)]) == 0
    settings = json.loads((out / "settings.json").read_text())
    assert settings["options"]["mode"] == "interp"
    assert settings["depth"]["points"] > 0
    assert settings["command"].startswith("python -m train.sample --out ") and "--last-image" in settings["command"]
    assert read_frames(out / "video.mp4").shape == (F, S, S, 3)


def test_print_config_round_trips(tmp_path, capsys):
    """--print-config's YAML loads back with --config to the same config; a backbone preset given to --config
    (its meaning before the generated command line) is refused with the new spelling, --backbone."""
    from train.inference.model import ModelSource
    from train.sample import SampleConfig, cli, command

    argv = ["--tiny", "--image", "a.png", "--trajectory", "orbit:angle=15", "--no-progress", "--frames", "4",
            "--backbone", "tiny", "--out", str(tmp_path / "o"), "cfg=3", "--trajectory-scale", "2"]
    assert cli([*argv, "--print-config"]) == 0
    (tmp_path / "c.yaml").write_text(capsys.readouterr().out)
    want = SampleConfig(out=str(tmp_path / "o"), image="a.png", trajectory="orbit:angle=15",
                        model=ModelSource(tiny=True, config="tiny"), progress=False, frames=4, cfg=3.0,
                        trajectory_scale=2.0)
    assert command().parse(argv)[0] == want
    assert command().parse(["--config", str(tmp_path / "c.yaml")])[0] == want
    assert cli(["--out", str(tmp_path / "o"), "--config", "256"]) == 2
    assert "give it as --backbone 256" in capsys.readouterr().err


def test_one_model_config_for_every_sampling_command(tmp_path, monkeypatch):
    """train.sample, the editor and eval generate nest the one ModelSource: the same options give the same model
    keys; the tiny model loads from it (device auto: the CPU here, LOCAL_RANK or not; dtype auto: fp32 there)."""
    import torch

    from eval.generate import command as generate_command
    from train.inference.editor import command as editor_command
    from train.inference.model import ModelSource, load_model, load_plugin, resolve_device
    from train.sample import command as sample_command

    opts = ["--checkpoint", "m.ckpt", "--backbone", "tiny", "--tokenizer", "tok", "--plugin", "p", "--tiny",
            "--tiny-seed", "3", "--device", "cpu", "--dtype", "fp16"]
    want = ModelSource("m.ckpt", "tiny", "tok", "p", True, 3, "cpu", "fp16")
    assert sample_command().parse(["--out", "o", *opts])[0].model == want
    assert editor_command().parse(["--image", "i", *opts])[0].generate.model == want
    assert generate_command().parse(["--out", "o", "--annotations", "a", "--manifest", "m", *opts])[0].model == want
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == "cpu" and resolve_device("cuda:3") == "cuda:3"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # only the name is resolved: no GPU is touched
    assert resolve_device("auto") == "cuda:1"  # this process's GPU under accelerate launch / torchrun
    monkeypatch.delenv("LOCAL_RANK")
    assert resolve_device("auto") == "cuda"
    monkeypatch.undo()
    model = load_model(ModelSource(tiny=True, config="tiny"), tmp_path)
    assert model.dtype == torch.float32 and (tmp_path / ".tiny_tokenizer").is_dir()
    assert load_plugin(model, ModelSource(tiny=True)) is None  # no plug-in: the backbone alone
