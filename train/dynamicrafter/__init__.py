"""From-scratch DynamiCrafter backbone (UNet, conditioning, VAE, diffusion) that loads the official checkpoints.

Modules: config (typed configs + YAML presets in configs/), unet + attention (3D UNet, camera extension point),
resampler (image_proj_model), conditioning (CLIP towers + open_clip key converter + tokenizer), vae (diffusers
AutoencoderKL + LDM key converter), diffusion (schedule, loss, DDIM + CFG), checkpoint (reading, strict loading),
model (full model, checkpoint naming, loading), tiny (random tiny model for tests).
"""

from .checkpoint import StateDictMismatchError, load_strict, read_state_dict
from .config import ModelConfig, load_config
from .diffusion import DDIMSampler, DiffusionSchedule, ddim_timesteps
from .model import DynamiCrafter, checkpoint_to_native, load_dynamicrafter, native_to_checkpoint
from .resampler import Resampler
from .unet import UNetModel, iter_temporal_blocks

__all__ = [
    "DDIMSampler",
    "DiffusionSchedule",
    "DynamiCrafter",
    "ModelConfig",
    "Resampler",
    "StateDictMismatchError",
    "UNetModel",
    "checkpoint_to_native",
    "ddim_timesteps",
    "iter_temporal_blocks",
    "load_config",
    "load_dynamicrafter",
    "load_strict",
    "native_to_checkpoint",
    "read_state_dict",
]
