"""Trainer config and command line: unknown keys, resume=none refusal, the presets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from annotate.config import ConfigError
from train.__main__ import main
from train.config import load_train_config
from train.run_folder import find_checkpoint, resolve_resume

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "train" / "configs"


def test_unknown_override_key_names_it(capsys):
    with pytest.raises(ConfigError, match=r"optim\.lrr.*did you mean.*optim\.lr"):
        load_train_config(str(CONFIGS / "tiny.yaml"), ["optim.lrr=1"])
    assert main(["--config", str(CONFIGS / "tiny.yaml"), "run.max_stepz=3"]) == 2
    err = capsys.readouterr().err
    assert "run.max_stepz" in err and "run.max_steps" in err


def test_contract_override_example():
    cfg = load_train_config(None, ["optim.lr=5e-5", "run.max_steps=200", "run.output_dir=runs/x"])
    assert (cfg.optim.lr, cfg.run.max_steps, cfg.run.output_dir) == (5e-5, 200, "runs/x")


def test_bad_values_are_errors():
    with pytest.raises(ConfigError, match="camera.kind"):
        load_train_config(None, ["camera.kind=foo"])
    with pytest.raises(ConfigError, match="scale_source"):
        load_train_config(None, ["data.scale_source=median"])


def test_resume_none_refuses_non_empty_output_dir(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("{}\n")
    cfg = load_train_config(str(CONFIGS / "tiny.yaml"), [f"run.output_dir={out}", "resume=none"])
    with pytest.raises(ConfigError, match="not empty"):
        resolve_resume(cfg)
    assert main(["--config", str(CONFIGS / "tiny.yaml"), f"run.output_dir={out}", "resume=none"]) == 2
    assert "overwrite=true" in capsys.readouterr().err
    assert (out / "metrics.jsonl").exists()  # untouched
    cfg.overwrite = True
    assert resolve_resume(cfg) is None


def test_find_checkpoint_ignores_incomplete(tmp_path):
    ck = tmp_path / "checkpoints"
    for name, complete in (("step-0000002", True), ("step-0000004", True), (".tmp-step-0000006", True),
                           ("step-0000008", False)):
        (ck / name).mkdir(parents=True)
        if complete:
            (ck / name / "trainer_state.json").write_text("{}")
    assert find_checkpoint(tmp_path).name == "step-0000004"


def test_8xh100_preset_agrees_with_its_launch_files():
    # Cross-file facts the three files must keep in step (the paper's effective batch of 64, ZeRO-1, DeepSpeed
    # clipping = the trainer's max_grad_norm), not a restatement of the YAML's values.
    big = load_train_config(str(CONFIGS / "realcam_256_8xh100.yaml"))
    acc = yaml.safe_load((CONFIGS / "accelerate_8xh100.yaml").read_text())
    assert acc["distributed_type"] == "DEEPSPEED"
    assert big.run.batch_size * acc["num_processes"] * big.optim.gradient_accumulation_steps == 64
    ds = json.loads((ROOT / big.run.deepspeed).read_text())
    assert ds["zero_optimization"]["stage"] == 1 and ds["gradient_clipping"] == big.optim.max_grad_norm
