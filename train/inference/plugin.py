"""Loading a trained camera plug-in (``plugin.safetensors`` of train/trainer.py) onto a DynamiCrafter backbone.

Accepted paths: the ``plugin.safetensors`` file, a checkpoint folder holding it (``checkpoints/step-N``), or a
run folder (its newest complete checkpoint). The plug-in's CameraConfig comes from the run's ``config.yaml``
(searched in the parent folders) or, failing that, the defaults with the ``kind`` stored in the file's
metadata. Loading is strict: a missing or unexpected key is an error.

The loaded plug-in carries ``modes`` (the concatenation modes it was trained with: file metadata, else the
run's config.yaml, else basic only) and ``scale_source`` (its camera units: ``relative`` = RealEstate10K
units, anything else = metres; file metadata, else config.yaml, else the kind's paper default), which the
pipeline and train/sample.py check before sampling.
"""

from __future__ import annotations

from pathlib import Path

import torch

from train.run_folder import PLUGIN_FILE, find_checkpoint, run_config_for


def find_plugin_file(path: str | Path) -> Path:
    path = Path(path)
    if path.is_file():
        return path
    if (path / PLUGIN_FILE).is_file():
        return path / PLUGIN_FILE
    if path.is_dir():
        ckpt = find_checkpoint(path)
        if ckpt is not None and (ckpt / PLUGIN_FILE).is_file():
            return ckpt / PLUGIN_FILE
    raise FileNotFoundError(f"no {PLUGIN_FILE} at {path} (give the file, a checkpoint folder or a run folder)")


def plugin_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def camera_config_for(plugin_file: Path):
    """The run's CameraConfig, else defaults + file kind."""
    from train.config import CameraConfig

    run = run_config_for(plugin_file)
    if run is not None:
        return run.camera
    kind = plugin_metadata(plugin_file).get("kind", "realcam")
    return CameraConfig(kind=kind)


def training_facts(plugin_file: Path, kind: str) -> tuple[tuple[str, ...], str]:
    """(trained modes, scale_source) of a plug-in file: metadata, else config.yaml, else the defaults."""
    from train.camera.modes import modes_from_metadata, parse_modes
    from train.config import DEFAULT_SCALE_SOURCE

    meta = plugin_metadata(plugin_file)
    run = None if ("modes" in meta and "scale_source" in meta) else run_config_for(plugin_file)
    if "modes" in meta or run is None:
        modes = modes_from_metadata(meta)
    else:
        modes = tuple(parse_modes(run.modes))
    source = meta.get("scale_source") or (run.data.scale_source if run is not None else DEFAULT_SCALE_SOURCE[kind])
    return modes, source


def load_camera_plugin(model, path: str | Path, camera_cfg=None):
    """Attach a CameraPlugin to `model.unet` (via attn1_adapter) and load its weights strictly."""
    from safetensors.torch import load_file

    from train.build import build_plugin

    file = find_plugin_file(path)
    cfg = camera_cfg or camera_config_for(file)
    plugin = build_plugin(model, cfg)
    sd = load_file(str(file))
    own = plugin.state_dict()
    plugin.load_state_dict({k: v.to(own[k].dtype) if k in own else v for k, v in sd.items()}, strict=True)
    plugin.to(model.device, model.dtype).eval()
    plugin.requires_grad_(False)
    plugin.source = str(file)
    plugin.modes, plugin.scale_source = training_facts(file, cfg.kind)
    return plugin


def is_metric(plugin) -> bool:
    """Trained on metric cameras (RealCam) rather than RealEstate10K's relative units (the baselines)."""
    return getattr(plugin, "scale_source", "condition_frame") != "relative"


def save_plugin(plugin, path: str | Path, modes: str | dict | None = None, scale_source: str | None = None) -> Path:
    """Write a plug-in as the trainer does (float32 tensors; metadata kind, modes, scale_source) - for tests and
    conversions. Unset modes / scale_source: basic only / the kind's paper default."""
    from safetensors.torch import save_file

    from train.camera.modes import modes_metadata, parse_modes
    from train.config import DEFAULT_SCALE_SOURCE

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"kind": plugin.kind, "modes": modes_metadata(parse_modes(modes or "basic")),
            "scale_source": scale_source or DEFAULT_SCALE_SOURCE[plugin.kind]}
    save_file({k: v.detach().float().cpu().contiguous() for k, v in plugin.state_dict().items()}, str(path),
              metadata=meta)
    return path


def camera_condition(plugin, c2w, intrinsics, image_hw, seed: int = 0):
    """adapter_cond for [F, 4, 4] metric c2w and [F, 4] pixel intrinsics (numpy or torch), batch 1."""
    dev = next(plugin.parameters()).device
    c2w_t = torch.as_tensor(c2w, dtype=torch.float32, device=dev)[None]
    intr_t = torch.as_tensor(intrinsics, dtype=torch.float32, device=dev)[None]
    with torch.no_grad():
        return plugin.condition(c2w_t, intr_t, tuple(image_hw), torch.Generator().manual_seed(seed))
