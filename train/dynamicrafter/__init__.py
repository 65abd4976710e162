"""From-scratch DynamiCrafter backbone (UNet, conditioning, VAE, diffusion) that loads the official checkpoints.

Modules: config (typed configs + YAML presets in configs/), unet + attention (3D UNet, camera extension point),
resampler (image_proj_model), conditioning (CLIP towers + open_clip key converter + tokenizer), vae (diffusers
AutoencoderKL + LDM key converter), diffusion (schedule, loss, DDIM + CFG), checkpoint (reading, strict loading),
model (full model, checkpoint naming, loading), tiny (random tiny model for tests).
"""

from __future__ import annotations

import importlib

# Lazy: importing one light submodule (config, or a constant the preflight reads) must not load the UNet,
# the CLIP towers and transformers (~10 s) before the preflight has said what is missing.
_WHERE = {
    "StateDictMismatchError": "checkpoint",
    "load_strict": "checkpoint",
    "read_state_dict": "checkpoint",
    "ModelConfig": "config",
    "load_config": "config",
    "DDIMSampler": "diffusion",
    "DiffusionSchedule": "diffusion",
    "ddim_timesteps": "diffusion",
    "DynamiCrafter": "model",
    "checkpoint_to_native": "model",
    "load_dynamicrafter": "model",
    "native_to_checkpoint": "model",
    "Resampler": "resampler",
    "UNetModel": "unet",
    "iter_temporal_blocks": "unet",
}
__all__ = ["DDIMSampler", "DiffusionSchedule", "DynamiCrafter", "ModelConfig", "Resampler", "StateDictMismatchError",
           "UNetModel", "checkpoint_to_native", "ddim_timesteps", "iter_temporal_blocks", "load_config",
           "load_dynamicrafter", "load_strict", "native_to_checkpoint", "read_state_dict"]


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
