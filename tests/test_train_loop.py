"""Training loop on the tiny preset (CPU): the loss falls with only plug-in weights changing, exact resume,
DeepSpeed ZeRO-1 in one process, 2-process DDP (gloo) with disjoint clips per rank, the run folder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from train.__main__ import main
from train.config import load_train_config
from train.trainer import Trainer

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "train" / "configs" / "tiny.yaml")


def overrides(ann: dict, out: Path, *extra: str) -> list[str]:
    return [f"data.annotation_dir={ann['annotation_dir']}", f"data.manifest={ann['manifest']}",
            f"run.output_dir={out}", "data.height=32", "data.width=32", "run.progress=false", *extra]


def metrics(out: Path) -> dict[int, dict]:
    """Last line per step (a resumed run logs the steps after its checkpoint again)."""
    rows = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "loss" in row:
            rows[row["step"]] = row
    return rows


def test_overfit_one_batch_only_plugin_changes(train_annotations, tmp_path):
    from train.data import collate

    cfg = load_train_config(TINY, overrides(train_annotations, tmp_path / "run", "optim.lr=1e-3",
                                            "run.tensorboard=false", "optim.uncond_prob=0"))
    tr = Trainer(cfg)
    backbone = {k: v.clone() for k, v in tr.backbone.state_dict().items()}
    plugin = {k: v.clone() for k, v in tr.plugin.state_dict().items()}
    batch = collate([tr.train_set[(0, 0)], tr.train_set[(0, 1)]])
    losses = []
    for _ in range(12):
        loss = tr.compute_loss(batch, torch.Generator().manual_seed(0))  # same t, noise: loss of the weights only
        tr.accelerator.backward(loss)
        tr.accelerator.clip_grad_norm_(tr.params, cfg.optim.max_grad_norm)
        tr.optimizer.step()
        tr.optimizer.zero_grad()
        losses.append(loss.item())
    print("overfit losses", [round(x, 5) for x in losses])
    assert losses[-1] < losses[0] * 0.99
    after = tr.backbone.state_dict()
    assert all(torch.equal(backbone[k], after[k]) for k in backbone)  # frozen backbone bit-identical
    changed = [k for k, v in tr.plugin.state_dict().items() if not torch.equal(v, plugin[k])]
    assert any(k.endswith("proj.weight") for k in changed) and any("pose_encoder" in k for k in changed)
    assert all(p.requires_grad is False for p in tr.backbone.parameters())
    assert not any(m.training for m in tr.backbone.unet.modules() if isinstance(m, torch.nn.Dropout))


def test_resume_reproduces_uninterrupted_run(train_annotations, tmp_path):
    common = ["run.max_steps=4", "run.checkpoint_every=2", "validation.every=2", "validation.steps=2"]
    full, parts = tmp_path / "full", tmp_path / "parts"
    assert main(["--config", TINY, *overrides(train_annotations, full, *common)]) == 0
    # "stopped" after step 2 (its checkpoint), then the same command again resumes from it
    assert main(["--config", TINY, *overrides(train_annotations, parts, *common[1:], "run.max_steps=2")]) == 0
    assert main(["--config", TINY, *overrides(train_annotations, parts, *common)]) == 0
    a, b = metrics(full), metrics(parts)
    print("losses", {s: (a[s]["loss"], b[s]["loss"]) for s in a})
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for s in a:
        assert a[s]["loss"] == b[s]["loss"] and a[s]["grad_norm"] == b[s]["grad_norm"], s
    assert any('"event": "resume"' in line for line in (parts / "metrics.jsonl").read_text().splitlines())
    # run folder of the contract
    assert (full / "config.yaml").exists() and "versions" in (full / "config.yaml").read_text()
    assert load_train_config(str(full / "config.yaml")).run.max_steps == 4  # reusable as a config
    ck = full / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["step-0000002", "step-0000004"]
    from safetensors.torch import load_file

    weights = load_file(str(ck / "step-0000004" / "plugin.safetensors"))
    assert weights and all(k.startswith(("pose_encoder.", "adapters.")) for k in weights)
    assert not list(ck.glob("step-0000004/model*.safetensors"))  # no frozen backbone copy
    samples = full / "samples" / "step-0000002"
    assert list(samples.glob("*.mp4")) and list(samples.glob("*_camera.txt"))
    assert list((full / "tensorboard").rglob("events.out.tfevents.*"))
    vals = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines() if "val_loss" in x]
    assert [v["step"] for v in vals] == [2, 4]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **extra)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "ACCELERATE_USE_DEEPSPEED"):
        env.pop(k, None)
    env.update(extra)
    return env


def test_deepspeed_zero1_one_process(train_annotations, tmp_path):
    out = tmp_path / "ds"
    env = _env(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    args = [sys.executable, "-m", "train", "--config", TINY,
            *overrides(train_annotations, out, "run.deepspeed=train/configs/deepspeed_zero1.json",
                       "validation.every=0", "run.checkpoint_every=2")]
    first = subprocess.run(args + ["run.max_steps=2"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "engine: DeepSpeedEngine zero_stage=1" in first.stdout
    again = subprocess.run(args + ["run.max_steps=3"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stdout
    m = metrics(out)
    assert sorted(m) == [1, 2, 3] and all(torch.isfinite(torch.tensor(r["loss"])) for r in m.values())
    assert (out / "checkpoints" / "step-0000002" / "plugin.safetensors").exists()


def test_ddp_two_processes_see_different_clips(train_annotations, tmp_path):
    out = tmp_path / "ddp"
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
            str(_free_port()), "-m", "train", "--config", TINY,
            *overrides(train_annotations, out, "run.batch_size=1", "run.max_steps=2", "run.log_clip_ids=true",
                       "optim.gradient_accumulation_steps=1",
                       "validation.every=0", "run.checkpoint_every=2")]
    res = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "processes=2" in res.stdout and "DistributedDataParallel" in res.stdout
    seen = {"0": [], "1": []}
    for row in metrics(out).values():
        for rank, ids in row["clip_ids_by_rank"].items():
            seen[rank] += ids
    print("clips per rank", seen)
    assert len(seen["0"]) == len(seen["1"]) == 2
    assert not set(seen["0"]) & set(seen["1"])  # 4 train clips, one epoch: disjoint halves
    assert {p.name for p in (out / "checkpoints" / "step-0000002").glob("random_states_*.pkl")} == {
        "random_states_0.pkl", "random_states_1.pkl"}


@pytest.mark.parametrize("kind", ["cameractrl", "motionctrl"])
def test_other_plugins_train(train_annotations, tmp_path, kind):
    out = tmp_path / kind
    assert main(["--config", TINY, *overrides(train_annotations, out, f"camera.kind={kind}", "run.max_steps=1",
                                              "validation.every=0", "run.checkpoint_every=0",
                                              "run.tensorboard=false")]) == 0
    row = metrics(out)[1]
    assert row["loss"] > 0 and row["grad_norm"] > 0  # the plug-in's own parameters get a gradient


def test_encoder_cache_precompute_and_hits(train_annotations, tmp_path):
    from train.data import collate

    cfg = load_train_config(TINY, overrides(train_annotations, tmp_path / "run", f"run.cache_dir={tmp_path / 'c'}",
                                            "run.cache_epochs=1", "run.tensorboard=false"))
    tr = Trainer(cfg)
    tr.precompute_cache(1)
    assert tr.cache.misses == len(tr.train_set) and len(list((tmp_path / "c").rglob("*.safetensors"))) == 4
    key = tr.sampler.epoch_keys(0)[0]
    batch = collate([tr.train_set[key]])
    with torch.no_grad():
        cached = tr.compute_loss(batch, torch.Generator().manual_seed(1)).item()
        assert tr.cache.hits == 1
        tr.cache = None  # the same sample, encoded afresh
        fresh = tr.compute_loss(batch, torch.Generator().manual_seed(1)).item()
    assert cached == pytest.approx(fresh, rel=1e-2)  # float16 cache
