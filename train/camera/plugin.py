"""The camera plug-in and the camera-controlled UNet (see the package docstring)."""

from __future__ import annotations

import torch
from torch import nn

from annotate.camera import invert_rigid_torch, plucker_embedding

from ..config import CameraConfig
from ..dynamicrafter.unet import UNetModel, iter_temporal_blocks
from .adapters import CameraCondition, MotionCtrlAdapter, PluckerAdapter
from .epipolar import epipolar_mask, pad_registers
from .pose_encoder import CameraPoseEncoder


class CameraPlugin(nn.Module):
    def __init__(self, unet: UNetModel, cfg: CameraConfig):
        super().__init__()
        self.kind, self.cfg = cfg.kind, cfg
        ucfg = unet.cfg
        channels = [m * ucfg.model_channels for m in ucfg.channel_mult]
        self.epipolar = cfg.kind in ("realcam", "cami2v")
        self.pose_encoder = None
        if cfg.kind != "motionctrl":
            self.pose_encoder = CameraPoseEncoder(channels, cfg.encoder_heads, cfg.encoder_res_blocks,
                                                  cfg.encoder_max_len)
        self.adapters = nn.ModuleDict()
        self.levels: set[int] = set()
        for name, level, block in iter_temporal_blocks(unet):
            dim, heads = block.norm1.normalized_shape[0], block.attn1.heads
            if self.pose_encoder is not None and dim != channels[level]:
                raise ValueError(f"{name}: block width {dim} != pose feature width {channels[level]}")
            if cfg.kind == "motionctrl":
                adapter = MotionCtrlAdapter(dim, cfg.motionctrl_hidden)
            else:
                adapter = PluckerAdapter(dim, heads, self.epipolar, cfg.num_register_tokens)
            self.adapters[name.replace(".", "__")] = adapter
            object.__setattr__(block, "attn1_adapter", adapter)  # not a registered submodule of the UNet
            self.levels.add(level)

    def condition(self, c2w: torch.Tensor, intrinsics: torch.Tensor, image_hw: tuple[int, int],
                  generator: torch.Generator | None = None) -> CameraCondition:
        """c2w [b, F, 4, 4] relative (scaled) cameras, pixel intrinsics [b, F, 4] at image_hw."""
        cond = CameraCondition()
        if self.kind == "motionctrl":
            cond.rt = invert_rigid_torch(c2w.float())[..., :3, :4].flatten(-2)
            return cond
        height, width = image_hw
        with torch.no_grad():
            rays = plucker_embedding(c2w, intrinsics, height, width).transpose(1, 2)  # [b, 6, F, H, W]
        dtype = next(self.pose_encoder.parameters()).dtype
        cond.features = self.pose_encoder(rays.to(dtype))
        if self.epipolar:
            chosen = self.cfg.epipolar_levels
            for level in sorted(self.levels):
                if chosen is not None and level not in chosen:
                    cond.masks[level] = None  # full attention (the 512 config's d=8 quirk)
                    continue
                feat_hw = tuple(cond.features[level].shape[-2:])
                mask = epipolar_mask(c2w, intrinsics, feat_hw, image_hw, self.cfg.epipolar_self, generator)
                cond.masks[level] = pad_registers(mask, self.cfg.num_register_tokens)
        return cond


class CameraControlledUNet(nn.Module):
    """The module handed to ``accelerator.prepare``: plugin + frozen UNet in one forward (so DDP / DeepSpeed see
    the plugin's parameters used). The UNet is held unregistered: DDP and DeepSpeed then neither broadcast, cast
    nor checkpoint its frozen 1.4B parameters (every rank loads them itself; DeepSpeed 0.19 also cannot broadcast
    the 0-dim ``alpha`` parameter of the 256 model)."""

    def __init__(self, unet: UNetModel, plugin: CameraPlugin):
        super().__init__()
        self.plugin = plugin
        object.__setattr__(self, "unet", unet)

    def forward(self, x, t, context, fs, c2w, intrinsics, image_hw, generator=None):
        cond = self.plugin.condition(c2w, intrinsics, image_hw, generator)
        return self.unet(x, t, context, fs=fs, adapter_cond=cond)


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, frozen)"""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in module.parameters()) - trainable
