"""A training run's folder (train/training-contract.md): ``config.yaml`` and ``checkpoints/step-NNNNNNN`` with
``plugin.safetensors`` and ``trainer_state.json``. Finding, verifying and choosing the checkpoint to resume, and
reading the run's config: what the trainer and the inference loader share (without importing the trainer).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from annotate.config import ConfigError
from annotate.log import get_logger

from .config import TrainConfig, load_train_config

log = get_logger("train")

CKPT_RE = re.compile(r"^step-(\d{7})$")
STATE_FILE = "trainer_state.json"
PLUGIN_FILE = "plugin.safetensors"


def find_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """Newest complete checkpoint (final name + trainer state); temp folders never match."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return None
    done = [p for p in root.iterdir() if CKPT_RE.match(p.name) and (p / STATE_FILE).exists()]
    return max(done, key=lambda p: int(CKPT_RE.match(p.name)[1]), default=None)


def _nonneg_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def verify_checkpoint(path: str | os.PathLike) -> str | None:
    """None if the checkpoint is intact, else why not, naming the file: trainer_state.json parses with
    non-negative steps matching the folder name, every file it lists has its recorded size (older checkpoints
    without the list: plugin.safetensors present), plugin.safetensors reads with every tensor finite, and the
    torch zip files (optimizer, DeepSpeed states) pass their CRC check. Nothing is unpickled."""
    import zipfile

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        state = json.loads((path / STATE_FILE).read_text())
    except FileNotFoundError:
        return f"{STATE_FILE}: missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"{STATE_FILE}: not readable JSON ({e.__class__.__name__}: {e})"
    if not isinstance(state, dict):
        return f"{STATE_FILE}: not a JSON object"
    for key in ("global_step", "micro_step"):
        if not _nonneg_int(state.get(key)):
            return f"{STATE_FILE}: {key} must be a non-negative integer, got {state.get(key)!r}"
    if not isinstance(state.get("sampler"), dict):
        return f"{STATE_FILE}: sampler state missing"
    m = CKPT_RE.match(path.name)
    if m and int(m[1]) != state["global_step"]:
        return f"{STATE_FILE}: global_step {state['global_step']} does not match the folder name {path.name}"
    files = state.get("files", {PLUGIN_FILE: None})
    if not isinstance(files, dict):
        return f"{STATE_FILE}: files must be an object of file sizes"
    for name, size in sorted(files.items()):
        if Path(name).is_absolute() or ".." in Path(name).parts:
            return f"{STATE_FILE}: file {name!r} lies outside the checkpoint"
        f = path / name
        if not f.is_file():
            return f"{name}: missing"
        if size is not None and f.stat().st_size != size:
            return f"{name}: {f.stat().st_size} bytes, {size} recorded (truncated or replaced)"
        if f.suffix in (".bin", ".pt"):
            try:
                with zipfile.ZipFile(f) as z:
                    bad = z.testzip()
            except (OSError, zipfile.BadZipFile) as e:
                return f"{name}: not a readable torch file ({e})"
            if bad is not None:
                return f"{name}: damaged (CRC error in {bad})"
    try:
        weights = load_file(str(path / PLUGIN_FILE))
    except (OSError, SafetensorError, ValueError, RuntimeError) as e:
        return f"{PLUGIN_FILE}: not readable ({e.__class__.__name__}: {e})"
    if not weights:
        return f"{PLUGIN_FILE}: holds no tensors"
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        return f"{PLUGIN_FILE}: {len(bad)} tensors with non-finite values (first: {sorted(bad)[0]})"
    return None


def intact_checkpoint(output_dir: str | os.PathLike) -> tuple[Path | None, list[tuple[Path, str]]]:
    """Newest intact checkpoint of a run and the damaged ones newer than it (with the reason)."""
    root = Path(output_dir) / "checkpoints"
    found = sorted((p for p in root.iterdir() if CKPT_RE.match(p.name)), reverse=True) if root.is_dir() else []
    damaged = []
    for p in found:
        why = verify_checkpoint(p)
        if why is None:
            return p, damaged
        damaged.append((p, why))
    return None, damaged


def resolve_resume(cfg: TrainConfig, damaged: list | None = None) -> Path | None:
    """Which checkpoint to load; raises for resume=none on a non-empty folder without overwrite, for a damaged
    resume=FOLDER, and when every checkpoint of resume=auto is damaged. The damaged checkpoints newer than the
    one chosen are appended to ``damaged`` as (folder, reason)."""
    out = Path(cfg.run.output_dir)
    if cfg.resume == "none":
        if out.exists() and any(out.iterdir()) and not cfg.overwrite:
            raise ConfigError(f"run.output_dir {out} is not empty; resume=none refuses to overwrite it "
                              "(pass overwrite=true, or resume=auto to continue it)")
        return None
    if cfg.resume == "auto":
        path, bad = intact_checkpoint(out)
        if bad and path is None:
            raise ConfigError(f"no intact checkpoint in {out / 'checkpoints'}: " + "; ".join(
                f"{p.name}/{why}" for p, why in bad) + " (resume=none overwrite=true starts afresh)")
        if damaged is not None:
            damaged += bad
        return path
    path = Path(cfg.resume)
    if not (path / STATE_FILE).exists():
        raise ConfigError(f"resume={path}: not a complete checkpoint (no {STATE_FILE})")
    why = verify_checkpoint(path)
    if why is not None:
        raise ConfigError(f"resume={path}: damaged checkpoint: {why}")
    return path


def run_config_for(path: str | os.PathLike) -> TrainConfig | None:
    """The TrainConfig of the run a file (a plug-in) belongs to: config.yaml in the file's folder or up to
    three folders above (``checkpoints/step-N/plugin.safetensors``), or None."""
    for parent in list(Path(path).resolve().parents)[:4]:
        cfg_path = parent / "config.yaml"
        if cfg_path.is_file():
            try:
                return load_train_config(str(cfg_path))
            except Exception as e:  # noqa: BLE001 - a foreign config.yaml: fall back to the metadata
                log.warning("cannot read camera config from %s (%s); using the plug-in metadata", cfg_path, e)
                return None
    return None
