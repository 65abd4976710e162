"""`python -m eval NAME` and `python -m eval.bench_eval`: each command line is generated from its typed config
(annotate/command.py). For every command, the historical options land in the expected config keys, and the
``--print-config`` YAML loaded back with ``--config`` gives the same config. Parsing only: nothing runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from eval import bench_eval, cli, generate, report, run

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "camera-metrics": (cli.camera_metrics_command, ["P.txt", "G.txt", "--pred-scale", "2", "gt_scale=0.5"],
                       {"pred": "P.txt", "gt": "G.txt", "pred_scale": 2.0, "gt_scale": 0.5}),
    "estimate-poses": (cli.estimate_poses_command,
                       ["V.mp4", "C.txt", "--out", "o.json", "--with-poses", "--trials", "3", "--seed", "7",
                        "--no-affine", "--camera-model", "PINHOLE", "--overlap", "4", "--allow-unregistered",
                        "--depth-model", "./depth"],
                       {"video": "V.mp4", "camera": "C.txt", "out": "o.json", "with_poses": True, "num_trials": 3,
                        "base_seed": 7, "pose.estimate_affine_shape": False, "pose.domain_size_pooling": False,
                        "pose.camera_model": "PINHOLE", "pose.sequential_overlap": 4,
                        "pose.allow_unregistered": True, "depth_model": "./depth"}),
    "fvd": (cli.fvd_command, ["R", "F", "--styleganv-i3d", "s.pt", "--num-frames", "8", "--fvd-batch", "2",
                              "--device", "cpu", "--fvd-method", "sqrtm"],
            {"real": "R", "fake": "F", "fvd.variants": ("styleganv",), "fvd.styleganv_torchscript": "s.pt",
             "fvd.videogpt_weights": None, "fvd.num_frames": 8, "fvd.batch_size": 2, "fvd.device": "cpu",
             "fvd.method": "sqrtm"}),
    "generate": (generate.command,
                 ["--out", "exp", "--annotations", "ann", "--manifest", "m.csv", "--tiny", "--limit", "3",
                  "--cfg", "5", "--no-progress", "--backbone", "tiny", "--noise-shaping", "on", "steps=4"],
                 {"out_dir": "exp", "annotation_dir": "ann", "manifest": "m.csv", "model.tiny": True, "limit": 3,
                  "cfg_scale": 5.0, "show_progress": False, "model.config": "tiny", "noise_shaping": "on", "steps": 4,
                  "stride": 8, "seed": 12333}),
    "run": (run.command,
            ["exp", "--out", "res", "--trials", "1", "--no-affine", "--no-progress", "--fvd-only", "--limit", "2",
             "--executor", "local", "--address", "auto", "--num-cpus", "3", "--cache", "gt", "--k-std", "3",
             "--videogpt-i3d", "v.pt", "--styleganv-i3d", "s.pt", "--max-videos-in-flight", "4"],
            {"exp_dir": "exp", "out_dir": "res", "num_trials": 1, "pose.estimate_affine_shape": False,
             "pose.domain_size_pooling": False, "show_progress": False, "poses": False, "limit": 2,
             "executor": "local", "ray.address": "auto", "ray.num_cpus": 3, "cache_dir": "gt", "k_std": 3.0,
             "fvd.variants": ("videogpt", "styleganv"), "fvd.device": "auto", "max_videos_in_flight": 4,
             "base_seed": 0, "pose.camera_model": "SIMPLE_PINHOLE"}),
    "report": (report.command, ["a", "b", "--out", "t", "--names", "x", "y", "--no-plots"],
               {"results": ["a", "b"], "out_dir": "t", "names": ["x", "y"], "plots": False,
                "max_failures_listed": 20}),
    "bench_eval": (bench_eval.command, ["--clips", "1", "--no-affine", "--num-cpus", "4"],
                   {"out": "bench/eval.json", "clips": 1, "trials": 2, "affine": False, "num_cpus": 4}),
}


def _get(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize("name", list(CASES))
def test_options_and_print_config_round_trip(name, tmp_path, capsys):
    make, argv, want = CASES[name]
    cmd = make()
    cfg, _ = cmd.parse(argv)
    for key, value in want.items():
        assert _get(cfg, key) == value, key
    assert cmd.main([*argv, "--print-config"]) == 0
    printed = tmp_path / "cfg.yaml"
    printed.write_text(capsys.readouterr().out)
    assert isinstance(yaml.safe_load(printed.read_text()), dict)
    back, _ = cmd.parse(["--config", str(printed)])
    assert back == cfg
    assert cmd.main(["--config", str(printed), "--print-config"]) == 0
    assert capsys.readouterr().out == printed.read_text()


def test_defaults_are_the_historical_ones():
    r, _ = run.command().parse(["exp", "--out", "res"])
    assert (r.num_trials, r.base_seed, r.k_std, r.limit, r.poses, r.executor, r.cpus_per_task) == \
        (5, 0, 10.0, None, True, "ray", 1.0)
    assert (r.pose.camera_model, r.pose.estimate_affine_shape, r.pose.sequential_overlap) == \
        ("SIMPLE_PINHOLE", True, 10)
    assert r.fvd.variants == () and r.fvd.batch_size == 16 and r.fvd.device == "auto" and r.fvd.method == "svd"
    assert r.depth_model is None and r.depth_device == "auto" and r.ray.address == "" and r.show_progress
    g, _ = generate.command().parse(["--out", "e", "--annotations", "a", "--manifest", "m"])
    assert (g.limit, g.frames, g.stride, g.cfg_scale, g.batch_size, g.seed, g.model.config, g.show_progress) == \
        (1000, 16, 8, 7.5, 4, 12333, None, True)


def test_errors_are_one_line_exit_2(capsys):
    assert generate.cli(["--annotations", "a", "--manifest", "m"]) == 2
    assert capsys.readouterr().err.strip() == "error: python -m eval generate: missing --out"
    with pytest.raises(SystemExit) as e:  # argparse checks the choices
        run.cli(["exp", "--out", "r", "--camera-model", "OPENCV"])
    assert e.value.code == 2 and "invalid choice: 'OPENCV'" in capsys.readouterr().err
    assert cli.main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err


def test_help_of_every_command(capsys):
    for name, (make, _, want) in CASES.items():
        text = " ".join(make().parser().format_help().split())
        assert "--print-config" in text and "config keys" in text, name
        assert all(f"  {k} (" in make().parser().format_help() for k in want), name
    text = " ".join(generate.command().parser().format_help().split())
    assert "first N clips in sorted order (0 = all) (default: 1000)" in text
    assert "--backbone BACKBONE backbone preset or yaml" in text
    r = subprocess.run([sys.executable, "-m", "eval", "run", "--help"], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    text = " ".join(r.stdout.split())
    assert r.returncode == 0 and "(default: SIMPLE_PINHOLE; sets pose.camera_model)" in text, r.stderr
    r = subprocess.run([sys.executable, "-m", "eval"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "estimate-poses" in r.stderr


def test_main_of_a_config_from_python(tmp_path):
    from annotate.preflight import PreflightError
    from eval.metrics import camera_metrics
    from eval.trajectory import load_camera
    from tests.test_eval_metrics import FIXTURES

    a, b = str(FIXTURES[0]), str(FIXTURES[1])
    got = cli.camera_metrics_main(cli.CameraMetricsConfig(pred=a, gt=b, pred_scale=2.0))
    assert got == camera_metrics(load_camera(a).c2w, load_camera(b).c2w, 2.0, 1.0).as_dict()
    # eval run's preflight runs before anything starts or is written, from Python too
    out = tmp_path / "res"
    with pytest.raises(PreflightError, match="EXP_DIR .*no such folder"):
        run.main(run.EvalRunConfig(exp_dir=str(tmp_path / "none"), out_dir=str(out)))
    assert not out.exists()
