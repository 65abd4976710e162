"""make bench-gpu (issue 15): refuses cleanly without CUDA; its CPU smoke mode runs every section on tiny configs.
Also the command lines of bench-gpu and bench-backbone (annotate/command.py)."""

import json

import pytest
import torch

from train.bench_gpu import BenchGpuConfig, cli, command, depth_anything_config, main


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_refuses_in_one_line_without_cuda(tmp_path):
    with pytest.raises(SystemExit) as e:
        cli(["--out", str(tmp_path / "gpu.json")])
    msg = str(e.value.code)
    assert "\n" not in msg and "needs a CUDA GPU" in msg and "--smoke" in msg
    assert not (tmp_path / "gpu.json").exists()


def test_depth_config_is_metric_large():
    from transformers import DepthAnythingForDepthEstimation

    cfg = depth_anything_config(smoke=False)
    assert cfg.backbone_config.out_indices == [5, 12, 18, 24] and cfg.max_depth == 20
    with torch.device("meta"):
        model = DepthAnythingForDepthEstimation(cfg)
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - 335.3) < 0.5  # Depth-Anything-V2-Large


def test_smoke_mode_runs_every_section(tmp_path, one_torch_thread):
    out = tmp_path / "gpu.json"
    cfg = BenchGpuConfig(out=str(out), smoke=True)
    r = main(cfg)
    assert cfg.depth_batch is None and r["sections"]["depth"]["batch"] == 2  # the caller's config is kept
    assert json.loads(out.read_text()) == json.loads(json.dumps(r))  # the JSON written is the result returned
    r = json.loads(out.read_text())
    assert r["smoke"] and r["device"] == "cpu (smoke)"
    depth = r["sections"]["depth"]
    assert depth["input_hw"] == [98, 168] and depth["model_images_per_s"] > 0 and depth["end_to_end_images_per_s"] > 0
    train = r["sections"]["train_step"]
    for key in ("checkpointing_on", "checkpointing_off"):
        assert train[key]["samples_per_s"] > 0 and train[key]["loss_finite"] and train[key]["trainable_params"] > 0
    assert train["preset"] == "dynamicrafter_tiny" and train["checkpointing_on"]["gradient_checkpointing"]
    assert not train["checkpointing_off"]["gradient_checkpointing"]
    sample = r["sections"]["ddim_sampling"]
    assert sample["seconds_per_video"] > 0 and sample["output_shape"] == [1, 3, 4, 64, 64]


def test_print_config_round_trips(tmp_path, capsys):
    assert cli(["--smoke", "--sections", "depth", "sample", "batch=3", "--print-config"]) == 0
    (tmp_path / "c.yaml").write_text(capsys.readouterr().out)
    want = BenchGpuConfig(smoke=True, batch=3, sections=["depth", "sample"])
    assert command().parse(["--config", str(tmp_path / "c.yaml")])[0] == want
    with pytest.raises(SystemExit) as e:  # argparse refuses an unknown section
        cli(["--sections", "depht"])
    assert e.value.code == 2


def test_bench_backbone_print_config_round_trips(tmp_path, capsys):
    from train.bench_backbone import BenchBackboneConfig
    from train.bench_backbone import cli as backbone_cli
    from train.bench_backbone import command as backbone_command

    assert backbone_cli(["--preset", "tiny", "--device", "cpu", "--dtypes", "fp32", "--no-checkpointing",
                         "repeats=2", "--print-config"]) == 0
    (tmp_path / "c.yaml").write_text(capsys.readouterr().out)
    want = BenchBackboneConfig(preset="tiny", device="cpu", dtypes=["fp32"], repeats=2, checkpointing=False)
    assert backbone_command().parse(["--config", str(tmp_path / "c.yaml")])[0] == want
