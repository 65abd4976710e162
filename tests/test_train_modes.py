"""Concatenation modes (train/camera/modes.py) from training to sampling, the per-kind scale_source default, and
metric camera files at inference (``train.sample --annotations / --trajectory-scale``)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from annotate.camera import relative_to, w2c_to_c2w
from annotate.config import ConfigError
from annotate.re10k import read_camera_file
from train.camera.modes import (
    BASIC,
    CONTINUATION,
    INTERPOLATION,
    UntrainedModeError,
    concat_condition,
    parse_modes,
)
from train.config import DataConfig, load_train_config
from train.data import CameraVideoDataset

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "train" / "configs" / "tiny.yaml")
ALL = "basic=0.5,interpolation=0.25,continuation=0.25"
S, F = 32, 4


def test_parse_modes_and_config_errors():
    assert parse_modes(ALL) == {"basic": 0.5, "interpolation": 0.25, "continuation": 0.25}
    assert parse_modes("interpolation,basic") == {"basic": 0.5, "interpolation": 0.5}
    assert parse_modes("basic=1,continuation=0") == {"basic": 1.0}
    with pytest.raises(ValueError, match="unknown mode"):
        parse_modes("basic=1,loop=1")
    with pytest.raises(ConfigError, match="unknown mode"):
        load_train_config(TINY, ["modes=basic=0.5,bogus=0.5"])


@pytest.mark.parametrize("kind,source", [("realcam", "condition_frame"), ("cami2v", "relative"),
                                         ("cameractrl", "relative"), ("motionctrl", "relative")])
def test_scale_source_default_per_camera_kind(kind, source):
    assert load_train_config(TINY, [f"camera.kind={kind}"]).data.scale_source == source
    assert load_train_config(TINY, [f"camera.kind={kind}", "data.scale_source=clip"]).data.scale_source == "clip"


def test_concat_condition_layouts():
    z = torch.arange(2 * 1 * 6, dtype=torch.float32).view(2, 1, 6, 1, 1) + 1  # distinct non-zero frames
    z = torch.cat([z, z, z])  # samples: basic (cond 3), interpolation, continuation (2 given) x 2
    cond = torch.tensor([3, 0, 0, 0, 0, 0])
    mode = torch.tensor([BASIC, BASIC, INTERPOLATION, INTERPOLATION, CONTINUATION, CONTINUATION])
    given = torch.tensor([1, 1, 1, 1, 2, 5])
    c = concat_condition(z, cond, mode, given)[:, 0, :, 0, 0]
    assert torch.equal(c[0], z[0, 0, 3, 0, 0].expand(6)) and torch.equal(c[1], z[1, 0, 0, 0, 0].expand(6))
    assert torch.equal(c[2], torch.tensor([z[2, 0, 0, 0, 0], 0, 0, 0, 0, z[2, 0, 5, 0, 0]]))
    assert torch.equal(c[4, :2], z[4, 0, :2, 0, 0]) and not c[4, 2:].any()
    assert torch.equal(c[5, :5], z[5, 0, :5, 0, 0]) and c[5, 5] == 0


@pytest.fixture(scope="module")
def data_cfg(train_annotations):
    return DataConfig(annotation_dir=str(train_annotations["annotation_dir"]),
                      manifest=str(train_annotations["manifest"]), frames=8, height=32, width=32,
                      stride_range=(1, 2), num_workers=0)


def test_dataset_draws_modes(data_cfg):
    basic = CameraVideoDataset(data_cfg, train=True, seed=1)
    default = CameraVideoDataset(data_cfg, train=True, seed=1, modes="basic=1")
    mixed = CameraVideoDataset(data_cfg, train=True, seed=1, modes=ALL)
    seen = set()
    for e in range(12):
        a, b, m = basic[(e, 0)], default[(e, 0)], mixed[(e, 0)]
        # basic only draws no extra random number: the samples of a run without modes are unchanged
        assert a["cond_index"] == b["cond_index"] and torch.equal(a["frame_indices"], b["frame_indices"])
        assert a["mode"] == BASIC
        seen.add(m["mode"])
        if m["mode"] != BASIC:
            assert m["cond_index"] == 0
            torch.testing.assert_close(m["c2w"][0], torch.eye(4))
        if m["mode"] == CONTINUATION:
            assert 1 <= m["num_given"] <= 4
    assert seen == {BASIC, INTERPOLATION, CONTINUATION}
    assert CameraVideoDataset(data_cfg, train=False, seed=1, modes=ALL)[0]["mode"] == BASIC  # validation: basic


def _train(ann: dict, out: Path, modes: str) -> Path:
    from train.__main__ import main

    assert main(["--config", TINY, f"data.annotation_dir={ann['annotation_dir']}", f"data.manifest={ann['manifest']}",
                 f"run.output_dir={out}", "data.height=32", "data.width=32", "run.progress=false",
                 "run.tensorboard=false", "run.max_steps=2", "run.checkpoint_every=2", "validation.every=0",
                 "optim.gradient_accumulation_steps=1", "run.batch_size=2", f"modes={modes}"]) == 0
    return out


@pytest.fixture(scope="module")
def runs(train_annotations, tmp_path_factory, one_torch_thread):
    root = tmp_path_factory.mktemp("modes")
    return {"all": _train(train_annotations, root / "all", ALL),
            "basic": _train(train_annotations, root / "basic", "basic=1")}


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(0)
    img = (rng.uniform(0, 255, (S, S, 3))).astype(np.uint8)
    return img, img[::-1].copy(), np.full((S, S), 2.0, np.float32)


def _sample(model, plugin, scene, mode, **kw):
    from train.inference.pipeline import Pipeline, SampleOptions
    from train.inference.trajectory import preset_trajectory

    img, img2, _ = scene
    intr = np.array([16.0, 16.0, 16.0, 16.0])
    traj = preset_trajectory("dolly:distance=0.3", F, intr, loop=mode == "loop")
    extra = {"last_image": img2} if mode == "interp" else {}
    if mode == "continue":
        extra["overlap_frames"] = np.stack([img, img2])
    opts = SampleOptions(prompt="a room", seed=3, steps=2, mode=mode, **kw)
    return Pipeline(model, plugin).generate(img, intr, traj, opts, preview=False, **extra)


def test_plugin_trained_with_all_modes_samples_in_every_mode(runs, scene, tmp_path):
    from safetensors import safe_open

    from train.dynamicrafter.tiny import build_tiny_model
    from train.inference.plugin import load_camera_plugin

    with safe_open(str(next(runs["all"].glob("checkpoints/step-*/plugin.safetensors"))), "pt") as f:
        meta = f.metadata()
    assert meta["kind"] == "realcam" and meta["scale_source"] == "condition_frame"
    assert set(parse_modes(__import__("json").loads(meta["modes"]))) == {"basic", "interpolation", "continuation"}
    model = build_tiny_model(tmp_path / "tok", seed=0)
    plugin = load_camera_plugin(model, runs["all"])
    assert plugin.modes == ("basic", "interpolation", "continuation")
    for mode in ("plain", "loop", "interp", "continue"):
        res = _sample(model, plugin, scene, mode)
        assert res.video.shape == (F, S, S, 3), mode
    # continuation hands the plug-in the clean overlap latents, zeros after them (the trained layout)
    res = _sample(model, plugin, scene, "continue")
    assert res.concat[:, :, 2:].abs().sum() == 0 and res.concat[:, :, 1].abs().sum() > 0


def test_plugin_trained_basic_only_refuses_interpolation(runs, scene, tmp_path):
    from train.dynamicrafter.tiny import build_tiny_model
    from train.inference.plugin import load_camera_plugin

    model = build_tiny_model(tmp_path / "tok", seed=0)
    plugin = load_camera_plugin(model, runs["basic"])
    assert plugin.modes == ("basic",)
    _sample(model, plugin, scene, "plain")
    for mode in ("interp", "loop", "continue"):
        with pytest.raises(UntrainedModeError, match="trained with modes basic only"):
            _sample(model, plugin, scene, mode)
    assert _sample(model, plugin, scene, "interp", allow_untrained_mode=True).video.shape == (F, S, S, 3)


# ------------------------------------------------------------------------------------------------ metric cameras


def _clip(ann: dict) -> dict:
    manifest = Path(ann["manifest"])
    rows = {r["clip_id"]: r for r in csv.DictReader(open(manifest))}
    ok = next(r for r in ann["rows"] if r["status"] == "ok" and np.isfinite(np.asarray(r["c2w_metric"])).all())
    return {"row": ok, "camera": manifest.parent / rows[ok["clip_id"]]["pose_path"]}


def test_camera_file_with_annotations_is_the_metric_trajectory(runs, train_annotations, scene, tmp_path):
    from train.sample import command, main

    def sample(argv):  # python -m train.sample ARGV, keeping main's result
        return main(command().parse(argv)[0])

    img, _, depth = scene
    Image.fromarray(img).save(tmp_path / "in.png")
    np.save(tmp_path / "depth.npy", depth)
    clip = _clip(train_annotations)
    common = ["--tiny", "--image", str(tmp_path / "in.png"), "--trajectory", str(clip["camera"]),
              "--plugin", str(runs["all"]), "--frames", str(F), "--height", str(S), "--width", str(S),
              "--steps", "2", "--frame-stride", "2", "--depth-file", str(tmp_path / "depth.npy"), "--no-progress"]
    r = sample([*common, "--annotations", str(train_annotations["annotation_dir"]), "--out", str(tmp_path / "a")])
    c2w_metric = np.asarray(clip["row"]["c2w_metric"], np.float64).reshape(-1, 4, 4)
    np.testing.assert_allclose(r["result"].c2w, c2w_metric[0:2 * F:2], atol=1e-6)  # what the plug-in was given
    assert r["settings"]["inputs"]["trajectory_units"].startswith("metres")
    # without a scale, a metric plug-in refuses the relative file and says what to give
    with pytest.raises(SystemExit, match="--annotations OUT .* or --trajectory-scale"):
        sample([*common, "--out", str(tmp_path / "b")])
    # an explicit scale: the file's relative poses x S
    r2 = sample([*common, "--trajectory-scale", "2.5", "--out", str(tmp_path / "c")])
    rel = relative_to(w2c_to_c2w(read_camera_file(clip["camera"]).w2c), 0)[0:2 * F:2]
    np.testing.assert_allclose(r2["result"].c2w[:, :3, 3], 2.5 * rel[:, :3, 3], atol=1e-9)
    np.testing.assert_allclose(r2["result"].c2w[:, :3, :3], rel[:, :3, :3], atol=1e-9)


def test_sample_cli_refuses_untrained_mode(runs, scene, tmp_path):
    from train.sample import command, main

    def sample(argv):  # python -m train.sample ARGV, keeping main's result
        return main(command().parse(argv)[0])

    img, img2, depth = scene
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(img2).save(tmp_path / "b.png")
    np.save(tmp_path / "depth.npy", depth)
    args = ["--tiny", "--image", str(tmp_path / "a.png"), "--last-image", str(tmp_path / "b.png"),
            "--plugin", str(runs["basic"]), "--frames", str(F), "--height", str(S), "--width", str(S), "--steps", "2",
            "--depth-file", str(tmp_path / "depth.npy"), "--no-progress"]
    with pytest.raises(SystemExit, match="allow-untrained-mode"):
        sample([*args, "--out", str(tmp_path / "o1")])
    r = sample([*args, "--allow-untrained-mode", "--out", str(tmp_path / "o2")])
    assert r["settings"]["options"]["mode"] == "interp"
