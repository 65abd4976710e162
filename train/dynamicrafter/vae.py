"""First stage: diffusers AutoencoderKL built from the LDM `ddconfig`, with key converters both ways.

LDM -> diffusers uses diffusers' own `convert_ldm_vae_checkpoint`; diffusers -> LDM (for writing checkpoint
names and for checking key lists) is the inverse written here. Latents are `posterior.sample() * 0.18215`;
video is encoded/decoded frame by frame (the original `perframe_ae` only changes batching).
"""

from __future__ import annotations

import re

import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

from .config import VAEConfig


def diffusers_vae_config(cfg: VAEConfig) -> dict:
    """Same mapping as diffusers' create_vae_diffusers_config_from_ldm, from our typed config."""
    blocks = [cfg.ch * m for m in cfg.ch_mult]
    return {
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_ch,
        "down_block_types": ["DownEncoderBlock2D"] * len(blocks),
        "up_block_types": ["UpDecoderBlock2D"] * len(blocks),
        "block_out_channels": blocks,
        "latent_channels": cfg.z_channels,
        "layers_per_block": cfg.num_res_blocks,
        "norm_num_groups": cfg.norm_num_groups,
        "scaling_factor": cfg.scale_factor,
    }


def build_vae(cfg: VAEConfig) -> AutoencoderKL:
    return AutoencoderKL(**diffusers_vae_config(cfg))


def vae_ckpt_to_native(state_dict: dict[str, torch.Tensor], cfg: VAEConfig) -> dict[str, torch.Tensor]:
    """LDM names (without `first_stage_model.`) -> diffusers names."""
    converted = convert_ldm_vae_checkpoint(state_dict, diffusers_vae_config(cfg))
    # diffusers silently drops keys it does not know: keep them so strict loading reports them.
    known = set(vae_native_to_ckpt(converted, cfg))
    converted.update({k: v for k, v in state_dict.items() if k not in known})
    return converted


_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_native_to_ckpt(state_dict: dict[str, torch.Tensor], cfg: VAEConfig) -> dict[str, torch.Tensor]:
    """diffusers names -> LDM names (attention projections back to 1x1 convs)."""
    n_up = len(cfg.ch_mult)
    out = {}
    for key, value in state_dict.items():
        new = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", new)
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", new)
        new = re.sub(
            r"decoder\.up_blocks\.(\d+)\.resnets\.", lambda m: f"decoder.up.{n_up - 1 - int(m[1])}.block.", new
        )
        new = re.sub(
            r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"decoder.up.{n_up - 1 - int(m[1])}.upsample.", new
        )
        new = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m[1]) + 1}.", new)
        m = re.match(r"(.*)mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)$", new)
        if m:
            new = f"{m[1]}mid.attn_1.{_ATTN[m[2]]}.{m[3]}"
            if m[2] != "group_norm" and m[3] == "weight" and value.dim() == 2:
                value = value[:, :, None, None]
        out[new] = value
    return out


def encode_video(
    vae: AutoencoderKL, x: torch.Tensor, generator: torch.Generator | None = None, sample: bool = True
) -> torch.Tensor:
    """x [b, 3, t, H, W] or [b, 3, H, W] in [-1, 1] -> scaled latents [b, 4, t, h, w] / [b, 4, h, w]."""
    video = x.dim() == 5
    if video:
        b, c, t, h, w = x.shape
        x = x.transpose(1, 2).reshape(b * t, c, h, w)
    dist = vae.encode(x.to(vae.dtype)).latent_dist
    z = dist.sample(generator) if sample else dist.mode()
    z = z * vae.config.scaling_factor
    if video:
        z = z.reshape(b, t, *z.shape[1:]).transpose(1, 2)
    return z


def decode_video(vae: AutoencoderKL, z: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """Scaled latents [b, 4, t, h, w] (or [b, 4, h, w]) -> pixels in ~[-1, 1], decoded `chunk` frames at a time."""
    video = z.dim() == 5
    if video:
        b, c, t, h, w = z.shape
        z = z.transpose(1, 2).reshape(b * t, c, h, w)
    z = z.to(vae.dtype) / vae.config.scaling_factor
    x = torch.cat([vae.decode(part).sample for part in z.split(chunk)])
    if video:
        x = x.reshape(b, t, *x.shape[1:]).transpose(1, 2)
    return x
