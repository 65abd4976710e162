"""Issue 19: every entry point checks its inputs, arguments and launch before anything starts or is written,
and reports every problem in one message (exit code 2) with its fix; `make check-assets` runs the trainer's
check alone; config-driven commands list their keys in --help and print their resolved config."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from annotate.config import load_config, to_dict

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "train" / "configs"
PRESET_8XH100 = "train/configs/realcam_256_8xh100.yaml"
TINY = str(CONFIGS / "tiny.yaml")
SAFETY_TIMEOUT = 120  # only so a regression cannot hang the suite; the checks themselves take seconds
LAUNCH_VARS = ("WORLD_SIZE", "LOCAL_RANK", "RANK", "LOCAL_WORLD_SIZE", "ACCELERATE_USE_DEEPSPEED")


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env.update(HF_HUB_OFFLINE="1", RAY_AUTH_MODE="disabled", CUDA_VISIBLE_DEVICES="")
    return env


def _run(*args: str, cwd: Path = ROOT) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                       timeout=SAFETY_TIMEOUT)
    return p, time.perf_counter() - t0


def _one_message(p: subprocess.CompletedProcess) -> str:
    """A failed preflight: exit 2, one 'error:' message on stderr, no traceback, nothing on stdout."""
    assert p.returncode == 2, (p.returncode, p.stdout[-2000:], p.stderr[-3000:])
    err = p.stderr
    assert "Traceback" not in err, err
    assert err.count("error:") == 1 and err.lstrip().startswith("error:"), err
    return err


@pytest.fixture(scope="module")
def small_assets(tmp_path_factory) -> dict:
    """The tiny preset's inputs, made quickly: a 1-clip synthetic manifest and an annotation folder holding one
    shard written by the job's own shard writer."""
    from annotate import output
    from annotate.job import JobConfig, crashed_row
    from annotate.manifest import load
    from annotate.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("assets")
    data = generate(SynthConfig(out=str(root / "data"), clips=1, frames=6, width=48, height=32, workers=1))
    rows = load(data / "manifest.csv")
    ann = root / "annotation"
    writer = output.ShardWriter(ann, 8)
    for r in rows:
        writer.add(crashed_row(r, JobConfig()))
    writer.flush()
    assert list((ann / "clips").glob("*.parquet"))
    return {"manifest": data / "manifest.csv", "annotation_dir": ann, "root": root}


# ------------------------------------------------------------------------------------------------ train


def test_train_8xh100_preset_without_assets_or_launcher(tmp_path):
    run_dir = tmp_path / "run"
    p, seconds = _run("-m", "train", "--config", PRESET_8XH100, f"run.output_dir={run_dir}")
    err = _one_message(p)
    print(err, f"\n{seconds:.1f} s")
    for needle in ("data.annotation_dir 'outputs/re10k_annotation': no such folder",
                   "data.manifest 'data/re10k/manifest.csv': no such file",
                   "model.checkpoint 'pretrained/DynamiCrafter/model.ckpt': no such file",
                   "huggingface-cli download Doubiiu/DynamiCrafter model.ckpt --local-dir pretrained/DynamiCrafter",
                   "model.tokenizer 'pretrained/open_clip_tokenizer': no such folder",
                   "not started by accelerate launch",
                   f"accelerate launch --config_file train/configs/accelerate_8xh100.yaml -m train --config "
                   f"{PRESET_8XH100} run.output_dir={run_dir}",
                   "make train", "run.deepspeed=''", "train/assets.md"):
        assert needle in err, needle
    assert "process group" not in err and "no kept clips" not in err
    assert not run_dir.exists()  # no run folder
    assert seconds < SAFETY_TIMEOUT


def test_train_single_process_override_drops_the_launch_problem(tmp_path, monkeypatch, capsys):
    from train.__main__ import main

    for k in LAUNCH_VARS:
        monkeypatch.delenv(k, raising=False)
    run_dir = tmp_path / "run"
    assert main(["--config", PRESET_8XH100, f"run.output_dir={run_dir}", "run.deepspeed=",
                 "run.mixed_precision=no"]) == 2
    err = capsys.readouterr().err
    assert "accelerate launch" not in err and "mixed_precision" not in err
    assert "pretrained/DynamiCrafter/model.ckpt" in err and not run_dir.exists()
    # --check (make check-assets) checks the inputs, not the launch: a login node has no GPU and no launcher
    assert main(["--check", "--config", PRESET_8XH100, f"run.output_dir={run_dir}"]) == 2
    err = capsys.readouterr().err
    assert "accelerate launch" not in err and "mixed_precision" not in err and "model.ckpt" in err
    # launched (accelerate launch / torchrun set these): the DeepSpeed preset is what was meant
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert main(["--config", PRESET_8XH100, f"run.output_dir={run_dir}"]) == 2
    assert "accelerate launch" not in capsys.readouterr().err


def test_train_missing_annotation_dir_is_named(small_assets, tmp_path, capsys):
    from train.__main__ import main

    missing = tmp_path / "no_such_annotation"
    assert main(["--config", TINY, f"data.annotation_dir={missing}", f"data.manifest={small_assets['manifest']}",
                 f"run.output_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert f"data.annotation_dir '{missing}': no such folder" in err and "python -m annotate run" in err
    assert "no kept clips" not in err and "\n" not in err.strip()  # one problem: one line
    assert not (tmp_path / "run").exists()


def test_checkpoint_kinds(tmp_path):
    from annotate.preflight import Problems
    from train.dynamicrafter.model import COMPONENTS
    from train.preflight import check_checkpoint

    pb = Problems("x")
    (tmp_path / "model.ckpt").write_bytes(b"\0")
    (tmp_path / "model.bin").write_bytes(b"\0")
    conv = tmp_path / "converted"
    conv.mkdir()
    assert check_checkpoint(pb, str(tmp_path / "model.ckpt"), "k") and not pb
    assert not check_checkpoint(pb, str(tmp_path / "model.bin"), "k")
    assert "expected a .ckpt / .pt / .pth / .safetensors file" in pb.items[-1][0]
    assert not check_checkpoint(pb, str(conv), "k")
    assert "has no config.yaml" in pb.items[-1][0] and "train.convert" in pb.items[-1][1]
    for name in ("config.yaml", *(f"{c}.safetensors" for c in COMPONENTS)):
        (conv / name).write_bytes(b"")
    n = len(pb.items)
    assert check_checkpoint(pb, str(conv), "k") and len(pb.items) == n


# ------------------------------------------------------------------------------------------------ make check-assets


def _check_assets(assets: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    args = f"data.annotation_dir={assets['annotation_dir']} data.manifest={assets['manifest']} " \
           f"run.output_dir={tmp_path / 'run'}"
    # -o: never rebuild the venv from a test, whatever the stamp's age
    return subprocess.run(["make", "-s", "-o", ".venv/.installed", "check-assets", f"CONFIG={TINY}", f"ARGS={args}"],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=SAFETY_TIMEOUT)


def test_make_check_assets_on_the_tiny_preset(small_assets, tmp_path):
    ok = _check_assets(small_assets, tmp_path)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "preflight passed" in ok.stdout
    assert not (tmp_path / "run").exists()

    # one asset removed: named, with its fix, non-zero
    manifest = small_assets["manifest"]
    saved = manifest.read_bytes()
    manifest.unlink()
    try:
        bad = _check_assets(small_assets, tmp_path)
    finally:
        manifest.write_bytes(saved)
    assert bad.returncode != 0
    assert f"data.manifest '{manifest}': no such file" in bad.stderr, bad.stderr
    assert not (tmp_path / "run").exists()


def test_check_names_an_empty_annotation_folder(small_assets, tmp_path, capsys):
    from train.__main__ import main

    shard = next((small_assets["annotation_dir"] / "clips").glob("*.parquet"))
    moved = shard.with_suffix(".moved")
    shard.rename(moved)
    try:
        assert main(["--check", "--config", TINY, f"data.annotation_dir={small_assets['annotation_dir']}",
                     f"data.manifest={small_assets['manifest']}", f"run.output_dir={tmp_path / 'run'}"]) == 2
    finally:
        moved.rename(shard)
    err = capsys.readouterr().err
    assert f"data.annotation_dir '{small_assets['annotation_dir']}': clips/ holds no *.parquet shard" in err, err
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------ train.sample


def test_sample_typo_and_missing_image_fail_before_loading(tmp_path):
    out = tmp_path / "out"
    p, seconds = _run("-m", "train.sample", "--tiny", "--image", str(tmp_path / "missing.png"),
                      "--trajectory", "orbt:angle=20", "--depth-file", str(tmp_path / "d.npz"), "--out", str(out))
    err = _one_message(p)
    print(err, f"\n{seconds:.1f} s")
    assert f"--image '{tmp_path / 'missing.png'}': no such file" in err
    assert "unknown preset 'orbt'" in err and "orbit" in err
    assert f"--depth-file '{tmp_path / 'd.npz'}': no such file" in err
    assert "depth" in err and not out.exists()


def test_sample_argument_errors_in_one_message(tmp_path, capsys):
    from train.sample import cli as main

    out = tmp_path / "out"
    assert main(["--trajectory", "orbit:angel=20", "--out", str(out), "--checkpoint", str(tmp_path / "none.ckpt"),
                 "--annotations", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no condition image" in err and "--checkpoint" in err and "no --tokenizer" in err
    assert "apply to a RealEstate10K camera file only" in err  # --annotations with a preset
    assert f"--annotations '{tmp_path}' has no clips" in err
    assert main(["--tiny", "--image", str(tmp_path), "--trajectory", "traj/missing.txt", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is a folder, expected a file" in err and "--trajectory 'traj/missing.txt': no such file" in err
    assert main(["--tiny", "--image", str(tmp_path), "--trajectory", "orbit:angel=20", "--out", str(out)]) == 2
    assert "preset orbit takes ['angle', 'radius'], got ['angel']" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ eval


def test_eval_generate_and_run_preflight(small_assets, tmp_path, capsys):
    from eval.cli import main

    out = tmp_path / "exp"
    assert main(["generate", "--out", str(out), "--annotations", str(tmp_path / "none"),
                 "--manifest", str(tmp_path / "m.csv"), "--checkpoint", str(tmp_path / "model.ckpt"),
                 "--camera-cfg", "2"]) == 2
    err = capsys.readouterr().err
    for needle in (f"--annotations '{tmp_path / 'none'}': no such folder", f"--manifest '{tmp_path / 'm.csv'}'",
                   f"--checkpoint '{tmp_path / 'model.ckpt'}': no such file", "camera CFG", "no --tokenizer"):
        assert needle in err, needle
    assert not out.exists()
    # what passes the preflight starts (the tiny model): only --print-config here, which starts nothing
    assert main(["generate", "--out", str(out), "--annotations", str(small_assets["annotation_dir"]),
                 "--manifest", str(small_assets["manifest"]), "--tiny", "--limit", "3", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["limit"] == 3 and printed["model"]["tiny"] is True and printed["out_dir"] == str(out)
    assert not out.exists()

    res = tmp_path / "results"
    assert main(["run", str(tmp_path / "none"), "--out", str(res), "--videogpt-i3d", str(tmp_path / "i3d.pt"),
                 "--depth-model", str(tmp_path / "depth")]) == 2
    err = capsys.readouterr().err
    assert f"EXP_DIR '{tmp_path / 'none'}': no such folder" in err
    assert f"--videogpt-i3d '{tmp_path / 'i3d.pt'}': no such file" in err and "I3D" in err
    assert f"--depth-model '{tmp_path / 'depth'}': no such folder" in err
    assert not res.exists()


# ------------------------------------------------------------------------------------------------ annotate run


def test_annotate_run_preflight_lists_everything(tmp_path, capsys):
    from annotate.__main__ import main

    out = tmp_path / "out"
    bad = tmp_path / "bad.csv"
    bad.write_text("clip_id,split,pose_path,video_path\nok,train,a.txt,a.mp4\nbad id,train,b.txt,b.mp4\n")
    assert main(["run", str(bad), str(out), "--config", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"config file '{tmp_path / 'nope.yaml'}': no such file" in err and "annotate/configs/default.yaml" in err
    assert main(["run", str(bad), str(bad), "--config", str(ROOT / "annotate/configs/default.yaml")]) == 2
    err = capsys.readouterr().err
    assert "row 2 (clip_id 'bad id')" in err and "2 problems" in err and "OUT" in err
    assert main(["run", str(bad), str(out), "quantile=0.7", "shard_rowz=3"]) == 2
    err = capsys.readouterr().err
    assert "shard_rowz" in err and "shard_rows" in err
    assert not out.exists()


# ---------------------------------------------------------------------------------------- --help, --print-config


def test_help_lists_keys_types_defaults_choices():
    from annotate.job_cli import command as job_command
    from train.__main__ import command as train_command

    text = train_command().parser().format_help()
    assert "optim.lr (float, default: 0.0001)" in text and "AdamW learning rate" in text
    assert "camera.kind (choice, default: realcam; choices: realcam, cami2v, cameractrl, motionctrl)" in text
    assert "run.mixed_precision (choice, default: fp16; choices: no, fp16, bf16)" in text
    assert "data.stride_range (tuple[int, int], default: [1, 10])" in text
    assert "--print-config" in text and "--check" in text

    text = job_command().parser().format_help()
    assert "shard_rows (int, default: 256)" in text and "maximum rows per shard" in text
    assert "clip.depth.model (str, default: depth-anything/Depth-Anything-V2-Metric-Indoor-Large-hf)" in text
    assert "debug_crash_ids" not in text


def test_plain_commands_show_defaults_and_presets(capsys):
    from annotate.__main__ import main as annotate_main
    from eval.generate import command as generate_command
    from eval.run import command as run_command
    from train.sample import command as sample_command

    for cmd, needle in (("synth", "usage: python -m annotate synth "), ("fetch", "(default: false)")):
        with pytest.raises(SystemExit):
            annotate_main([cmd, "--help"])
        assert needle in " ".join(capsys.readouterr().out.split())

    text = " ".join(sample_command().parser().format_help().split())  # argparse wraps at the terminal width
    for needle in ("--steps STEPS", "DDIM steps (default: 25)", "(default: 7.5)", "(default: 12333)",
                   "trajectory presets", "orbit:angle=30,radius=2", "zoom:factor=1.5", "dolly:distance=0.5"):
        assert needle in text, needle
    text = " ".join(generate_command().parser().format_help().split())
    assert "first N clips in sorted order (0 = all) (default: 1000)" in text
    assert "(default: SIMPLE_PINHOLE; sets pose.camera_model)" in " ".join(run_command().parser().format_help().split())


def test_print_config_round_trips(tmp_path, capsys):
    from annotate.__main__ import main as annotate_main
    from annotate.job import JobConfig
    from train.__main__ import main as train_main
    from train.config import load_train_config

    overrides = ["optim.lr=5e-5", "camera.kind=cami2v", "run.mixed_precision=no", "data.stride_range=[2,4]"]
    assert train_main(["--config", TINY, "--print-config", *overrides]) == 0
    printed = tmp_path / "train.yaml"
    printed.write_text(capsys.readouterr().out)
    want = load_train_config(TINY, overrides)
    assert to_dict(load_train_config(str(printed))) == to_dict(want)
    assert want.data.scale_source == "relative" and want.run.mixed_precision == "no"  # resolved, a string

    assert annotate_main(["run", "--print-config", "--config", str(ROOT / "annotate/configs/cluster.yaml"),
                          "shard_rows=7", "clip.sfm.max_side=320", "--num-cpus", "3"]) == 0
    printed = tmp_path / "job.yaml"
    printed.write_text(capsys.readouterr().out)
    got = load_config(JobConfig, printed)
    assert (got.shard_rows, got.clip.sfm.max_side, got.ray.num_cpus) == (7, 320, 3)
    want = load_config(JobConfig, ROOT / "annotate/configs/cluster.yaml", ["shard_rows=7", "clip.sfm.max_side=320"])
    want.ray.num_cpus = 3
    assert to_dict(got) == to_dict(want)
