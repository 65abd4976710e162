"""Training faults (issue 12 items 6 and 7), on real tiny CPU runs: non-finite steps are skipped and counted,
N in a row stop the run, non-finite plug-in weights are never checkpointed, and a resume falls back from a
damaged checkpoint (truncated safetensors, bad JSON, missing file, NaN weights) to the newest intact one.

Faults are injected by a Trainer subclass of this module (NaN loss at chosen micro-steps, NaN plug-in weights
after loading a checkpoint) or by damaging real checkpoint files; the trainer has no flag for them."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from annotate.config import ConfigError
from train.__main__ import main
from train.config import load_train_config
from train.run_folder import intact_checkpoint, resolve_resume, verify_checkpoint
from train.trainer import Trainer, TrainingError

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "train" / "configs" / "tiny.yaml")
FAST = ["data.height=32", "data.width=32", "run.progress=false", "run.tensorboard=false", "validation.every=0",
        "optim.gradient_accumulation_steps=1"]


def overrides(ann: dict, out: Path, *extra: str) -> list[str]:
    return [f"data.annotation_dir={ann['annotation_dir']}", f"data.manifest={ann['manifest']}",
            f"run.output_dir={out}", *FAST, *extra]


class FaultyTrainer(Trainer):
    """Fault injection: a NaN loss at the given (1-based) micro-steps; NaN plug-in weights right after a resume.
    Records the plug-in weights before every training micro-step (``before[k]``)."""

    def __init__(self, cfg, nan_micro_steps=(), nan_weights_after_load=False):
        super().__init__(cfg)
        self.nan_micro_steps = set(nan_micro_steps)
        self.nan_weights_after_load = nan_weights_after_load
        self.before: dict[int, dict[str, torch.Tensor]] = {}

    def compute_loss(self, batch, gen, model=None):
        loss = super().compute_loss(batch, gen, model)
        if model is None:  # a training micro-step (validation passes its model)
            self.before[self.micro_step] = {k: v.detach().clone() for k, v in self.plugin.state_dict().items()}
            if self.micro_step in self.nan_micro_steps:
                loss = loss * float("nan")
        return loss

    def load_checkpoint(self, path):
        super().load_checkpoint(path)
        if self.nan_weights_after_load:
            with torch.no_grad():
                next(self.plugin.parameters()).fill_(float("nan"))


def rows(out: Path) -> dict[int, dict]:
    res = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "loss" in row:
            res[row["step"]] = row
    return res


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def ckpts(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").iterdir())


def test_nonfinite_steps_skipped_counted_and_n_in_a_row_stop(train_annotations, tmp_path):
    out = tmp_path / "run"
    cfg = load_train_config(TINY, overrides(train_annotations, out, "run.max_steps=3", "run.checkpoint_every=1",
                                            "run.checkpoints_total_limit=2", "optim.max_nonfinite_steps=2"))
    tr = FaultyTrainer(cfg, nan_micro_steps={2})
    tr.train()
    m = rows(out)
    assert [m[s]["step_skipped"] for s in (1, 2, 3)] == [False, True, False]
    assert [m[s]["nonfinite_steps"] for s in (1, 2, 3)] == [0, 1, 1]
    assert m[2]["loss"] != m[2]["loss"]  # NaN, logged as such
    assert not same(tr.before[1], tr.before[2])  # step 1 updated the plug-in
    assert same(tr.before[2], tr.before[3])  # step 2 (NaN) did not
    assert not same(tr.before[3], dict(tr.plugin.state_dict()))  # step 3 trained on
    adam_steps = {int(s["step"]) for s in tr.optimizer.optimizer.state.values()}
    assert adam_steps == {2}  # three steps, one skipped
    state = json.loads((out / "checkpoints" / "step-0000003" / "trainer_state.json").read_text())
    assert state["nonfinite_steps"] == 1 and state["nonfinite_in_a_row"] == 0
    assert ckpts(out) == ["step-0000002", "step-0000003"]

    # Resumed with every step NaN: two in a row (limit 2) stop the run with a one-line error; no checkpoint is
    # written or rotated (step 4 would be; the weights stay finite since nothing was applied).
    cfg = load_train_config(TINY, overrides(train_annotations, out, "run.max_steps=8", "run.checkpoint_every=100",
                                            "run.checkpoints_total_limit=2", "optim.max_nonfinite_steps=2"))
    tr = FaultyTrainer(cfg, nan_micro_steps=set(range(100)))
    with pytest.raises(TrainingError) as e:
        tr.train()
    msg = str(e.value)
    print(msg)
    assert "\n" not in msg and "2 optimizer steps in a row (steps 4-5)" in msg
    assert "optim.max_nonfinite_steps=2" in msg and "step-0000003" in msg
    m = rows(out)
    assert m[4]["step_skipped"] and m[5]["step_skipped"] and m[5]["nonfinite_steps"] == 3 and 6 not in m
    assert same(tr.before[4], tr.before[5]) and same(tr.before[5], dict(tr.plugin.state_dict()))
    assert ckpts(out) == ["step-0000002", "step-0000003"]


def test_nan_weights_are_never_checkpointed(train_annotations, tmp_path):
    out = tmp_path / "run"
    assert main(["--config", TINY, *overrides(train_annotations, out, "run.max_steps=2", "run.checkpoint_every=1",
                                               "run.checkpoints_total_limit=2")]) == 0
    good = {p: (out / "checkpoints" / p / "plugin.safetensors").read_bytes() for p in ckpts(out)}
    # Resumed, then the plug-in weights turn NaN: step 3 is skipped and its checkpoint (which would rotate
    # step-1 away under the limit of 2) is refused before anything is written.
    cfg = load_train_config(TINY, overrides(train_annotations, out, "run.max_steps=5", "run.checkpoint_every=1",
                                            "run.checkpoints_total_limit=2"))
    tr = FaultyTrainer(cfg, nan_weights_after_load=True)
    with pytest.raises(TrainingError, match=r"plug-in weights are non-finite at step 3 .*checkpoint step-0000003 "
                                            r"not written; newest good checkpoint: .*step-0000002") as e:
        tr.train()
    assert "\n" not in str(e.value)
    assert rows(out)[3]["step_skipped"]
    assert ckpts(out) == ["step-0000001", "step-0000002"]
    assert {p: (out / "checkpoints" / p / "plugin.safetensors").read_bytes() for p in ckpts(out)} == good
    assert all(verify_checkpoint(out / "checkpoints" / p) is None for p in good)


def test_negative_steps_refused(capsys, tmp_path):
    assert main(["--config", TINY, f"run.output_dir={tmp_path / 'x'}", "run.max_steps=-1"]) == 2
    assert capsys.readouterr().err.strip() == "error: run.max_steps must be >= 0, got -1"
    with pytest.raises(ConfigError, match="max_nonfinite_steps must be >= 1"):
        load_train_config(TINY, ["optim.max_nonfinite_steps=0"])
    assert not (tmp_path / "x").exists()


def _damage(ck: Path, kind: str) -> str:
    """Damage one real checkpoint; returns what the reason must name."""
    plugin, state = ck / "plugin.safetensors", ck / "trainer_state.json"
    if kind == "truncated_plugin":
        plugin.write_bytes(plugin.read_bytes()[: plugin.stat().st_size // 2])
        return "plugin.safetensors: "  # N bytes, M recorded (truncated ...)
    if kind == "truncated_plugin_unlisted":  # a checkpoint without the file list: the read itself must fail
        s = json.loads(state.read_text())
        del s["files"]
        state.write_text(json.dumps(s))
        plugin.write_bytes(plugin.read_bytes()[: plugin.stat().st_size // 2])
        return "plugin.safetensors: not readable"
    if kind == "nan_plugin":  # same size, so only the finiteness check can tell
        with safe_open(str(plugin), "pt") as f:
            meta = f.metadata()
        w = load_file(str(plugin))
        k = sorted(w)[0]
        w[k] = torch.full_like(w[k], float("nan"))
        save_file(w, str(plugin), metadata=meta)
        return "plugin.safetensors: 1 tensors with non-finite values"
    if kind == "bad_json":
        state.write_text(state.read_text()[:-7])
        return "trainer_state.json: not readable JSON"
    if kind == "negative_step":
        s = json.loads(state.read_text())
        s["global_step"] = -3
        state.write_text(json.dumps(s))
        return "trainer_state.json: global_step must be a non-negative integer, got -3"
    if kind == "missing_optimizer":
        (ck / "optimizer.bin").unlink()
        return "optimizer.bin: missing"
    if kind == "truncated_optimizer":
        opt = ck / "optimizer.bin"
        opt.write_bytes(opt.read_bytes()[:-100])
        return "optimizer.bin: "
    if kind == "missing_random_states":
        (ck / "random_states_0.pkl").unlink()
        return "random_states_0.pkl: missing"
    raise AssertionError(kind)


KINDS = ["truncated_plugin", "truncated_plugin_unlisted", "nan_plugin", "bad_json", "negative_step",
         "missing_optimizer", "truncated_optimizer", "missing_random_states"]


@pytest.fixture(scope="module")
def three_checkpoints(train_annotations, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "run"
    assert main(["--config", TINY, *overrides(train_annotations, out, "run.max_steps=3",
                                               "run.checkpoint_every=1")]) == 0
    assert ckpts(out) == ["step-0000001", "step-0000002", "step-0000003"]
    return out


def test_verify_checkpoint_names_the_damaged_file(three_checkpoints, tmp_path):
    src = three_checkpoints / "checkpoints" / "step-0000003"
    assert verify_checkpoint(src) is None
    files = json.loads((src / "trainer_state.json").read_text())["files"]
    assert {"plugin.safetensors", "optimizer.bin", "random_states_0.pkl"} <= set(files)
    for kind in KINDS:
        ck = tmp_path / kind / "step-0000003"
        shutil.copytree(src, ck)
        expected = _damage(ck, kind)
        why = verify_checkpoint(ck)
        print(kind, "->", why)
        assert why is not None and why.startswith(expected), (kind, why)


def test_resume_falls_back_to_newest_intact_checkpoint(three_checkpoints, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(three_checkpoints, out)
    _damage(out / "checkpoints" / "step-0000003", "truncated_plugin")
    _damage(out / "checkpoints" / "step-0000002", "bad_json")
    cfg = load_train_config(TINY, overrides(train_annotations_of(three_checkpoints), out, "run.max_steps=2",
                                            "run.checkpoint_every=1"))
    damaged: list = []
    assert resolve_resume(cfg, damaged).name == "step-0000001"
    assert [(p.name, why.split(":")[0]) for p, why in damaged] == [("step-0000003", "plugin.safetensors"),
                                                                   ("step-0000002", "trainer_state.json")]
    # The same command again: it says which file, sets the damaged ones aside and trains on from step 1.
    assert main(["--config", TINY, *overrides(train_annotations_of(three_checkpoints), out, "run.max_steps=2",
                                               "run.checkpoint_every=1")]) == 0
    text = capsys.readouterr().err  # the trainer's logger (basicConfig on stderr)
    assert re.search(r"step-0000003 is damaged \(plugin\.safetensors: \d+ bytes, \d+ recorded \(truncated", text)
    assert "step-0000002 is damaged (trainer_state.json: not readable JSON" in text
    assert "resuming from step-0000001" in text
    assert ckpts(out) == ["damaged-step-0000002", "damaged-step-0000003", "step-0000001", "step-0000002"]
    assert verify_checkpoint(out / "checkpoints" / "step-0000002") is None
    assert intact_checkpoint(out)[0].name == "step-0000002"
    resumed = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"event"' in x]
    assert resumed[-1] == {"event": "resume", "step": 1}


def test_no_intact_checkpoint_is_a_one_line_error(three_checkpoints, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(three_checkpoints, out)
    for name, kind in zip(ckpts(out), ("missing_optimizer", "nan_plugin", "truncated_plugin")):
        _damage(out / "checkpoints" / name, kind)
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert main(["--config", TINY, *overrides(train_annotations_of(three_checkpoints), out)]) == 2
    err = capsys.readouterr().err.strip()
    print(err)
    assert "\n" not in err and err.startswith(f"error: no intact checkpoint in {out / 'checkpoints'}: ")
    assert "step-0000003/plugin.safetensors: " in err and "step-0000001/optimizer.bin: missing" in err
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before  # nothing moved or written
    # resume=FOLDER naming a damaged checkpoint: refused, no fallback
    with pytest.raises(ConfigError, match="damaged checkpoint: plugin.safetensors: 1 tensors with non-finite"):
        resolve_resume(load_train_config(TINY, [f"run.output_dir={out}",
                                                f"resume={out / 'checkpoints' / 'step-0000002'}"]))


def train_annotations_of(run: Path) -> dict:
    """The annotation paths a run was trained on (from its config.yaml)."""
    cfg = load_train_config(str(run / "config.yaml"))
    return {"annotation_dir": cfg.data.annotation_dir, "manifest": cfg.data.manifest}


# The DeepSpeed engine steps inside accelerator.backward; the trainer switches ZeRO's overflow check on in fp32.
DS_DRIVER = """
import json, sys, torch
sys.path.insert(0, {tests!r})
from test_train_faults import FaultyTrainer, same
from train.config import load_train_config
cfg = load_train_config({tiny!r}, {args!r})
tr = FaultyTrainer(cfg, nan_micro_steps={{2}})
tr.train()
print("RESULT", json.dumps({{"engine_skipped": tr.model.skipped_steps, "nonfinite": tr.nonfinite_steps,
    "updated_1": not same(tr.before[1], tr.before[2]), "kept_2": same(tr.before[2], tr.before[3]),
    "updated_3": not same(tr.before[3], dict(tr.plugin.state_dict()))}}))
"""


def test_deepspeed_zero1_skips_nonfinite_step(train_annotations, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK",
                                                            "ACCELERATE_USE_DEEPSPEED")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    out = tmp_path / "ds"
    args = overrides(train_annotations, out, "run.deepspeed=train/configs/deepspeed_zero1.json", "run.max_steps=3",
                     "run.checkpoint_every=3")
    code = DS_DRIVER.format(tests=str(ROOT / "tests"), tiny=TINY, args=args)
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "zero_stage=1" in res.stdout
    result = json.loads(res.stdout.split("RESULT", 1)[1])
    assert result == {"engine_skipped": 1, "nonfinite": 1, "updated_1": True, "kept_2": True, "updated_3": True}
    m = rows(out)
    assert [m[s]["step_skipped"] for s in (1, 2, 3)] == [False, True, False]
    assert verify_checkpoint(out / "checkpoints" / "step-0000003") is None
    assert os.path.isdir(out / "checkpoints" / "step-0000003" / "pytorch_model")
