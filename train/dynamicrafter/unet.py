"""DynamiCrafter 3D UNet (state-dict names match `model.diffusion_model.*` of the official checkpoints).

Layout: frames are folded into the batch ((b t) c h w) everywhere except in the temporal layers.
Every ResBlock is followed by a temporal convolution (checkpoint spelling `temopral_conv`); attention levels hold
a SpatialTransformer (text+image cross-attention) and a TemporalTransformer; `init_attn` is one more temporal
transformer right after the input conv. The frame stride / fps `fs` is embedded like the timestep and added.

Extension points for the trainer:
- `adapter_cond`: passed to every temporal BasicTransformerBlock's `attn1_adapter` (see attention.py),
  except in `init_attn`. `iter_temporal_blocks(unet)` lists the blocks with their feature level.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import BasicTransformerBlock, SpatialTransformer, TemporalTransformer
from .config import UNetConfig

TEXT_TOKENS = 77
IMAGE_TOKENS_PER_FRAME = 16  # hard-coded in the original per-frame context split


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos, sin] (cos first, as in the checkpoints' training code)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32) computed in float32 (ResBlocks and the output head)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = None if self.weight is None else self.weight.float()
        b = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).type(x.dtype)


class TemporalConvBlock(nn.Module):
    """4 x [GN, SiLU, (Dropout), Conv3d k=(3,1,1)] with an identity residual; conv4 zero-initialised."""

    def __init__(self, channels: int, dropout: float = 0.1):
        super().__init__()

        def conv():
            return nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))

        self.conv1 = nn.Sequential(nn.GroupNorm(32, channels), nn.SiLU(), conv())
        self.conv2 = nn.Sequential(nn.GroupNorm(32, channels), nn.SiLU(), nn.Dropout(dropout), conv())
        self.conv3 = nn.Sequential(nn.GroupNorm(32, channels), nn.SiLU(), nn.Dropout(dropout), conv())
        self.conv4 = nn.Sequential(nn.GroupNorm(32, channels), nn.SiLU(), nn.Dropout(dropout), conv())
        nn.init.zeros_(self.conv4[-1].weight)
        nn.init.zeros_(self.conv4[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv4(self.conv3(self.conv2(self.conv1(x))))


class ResBlock(nn.Module):
    """GN-SiLU-conv, + emb, GN-SiLU-dropout-conv, + skip; then the temporal conv over (b c t h w)."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int,
        temporal_conv: bool,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.in_layers = nn.Sequential(GroupNorm32(32, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, 1, 1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(32, out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1),
        )
        nn.init.zeros_(self.out_layers[-1].weight)
        nn.init.zeros_(self.out_layers[-1].bias)
        self.skip_connection = nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)
        self.temopral_conv = TemporalConvBlock(out_channels, dropout=0.1) if temporal_conv else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor, batch: int) -> torch.Tensor:
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, emb, batch, use_reentrant=False)
        return self._forward(x, emb, batch)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor, batch: int) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        h = self.skip_connection(x) + self.out_layers(h)
        if self.temopral_conv is not None:
            bt, c, hh, ww = h.shape
            h = h.view(batch, bt // batch, c, hh, ww).transpose(1, 2)
            h = self.temopral_conv(h).transpose(1, 2).reshape(bt, c, hh, ww)
        return h


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class UNetStage(nn.Sequential):
    """One `input_blocks.i` / `middle_block` / `output_blocks.i`: dispatches the right inputs to each layer."""

    def forward(self, x, emb, context, batch, adapter_cond=None):
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb, batch)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            elif isinstance(layer, TemporalTransformer):
                bt, c, h, w = x.shape
                x = x.view(batch, bt // batch, c, h, w).transpose(1, 2)
                x = layer(x, adapter_cond).transpose(1, 2).reshape(bt, c, h, w)
            else:
                x = layer(x)
        return x


class UNetModel(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        mc = cfg.model_channels
        emb_dim = mc * 4
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if cfg.fs_condition:
            self.fps_embedding = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            nn.init.zeros_(self.fps_embedding[-1].weight)
            nn.init.zeros_(self.fps_embedding[-1].bias)

        def heads(ch: int) -> tuple[int, int]:
            return ch // cfg.num_head_channels, cfg.num_head_channels

        def attention(ch: int, ds: int) -> list[nn.Module]:
            n, d = heads(ch)
            layers: list[nn.Module] = [
                SpatialTransformer(
                    ch, n, d, cfg.transformer_depth, 0.0, cfg.context_dim, cfg.use_linear,
                    cfg.image_cross_attention, cfg.image_cross_attention_scale_learnable, cfg.use_checkpoint,
                )
            ]  # fmt: skip
            if cfg.temporal_attention:
                level = int(math.log2(ds))
                layers.append(
                    TemporalTransformer(ch, n, d, cfg.transformer_depth, 0.0, cfg.use_linear, cfg.use_checkpoint, level)
                )
            return layers

        def resblock(ch_in: int, ch_out: int) -> ResBlock:
            return ResBlock(ch_in, emb_dim, cfg.dropout, ch_out, cfg.temporal_conv, cfg.use_checkpoint)

        self.input_blocks = nn.ModuleList([UNetStage(nn.Conv2d(cfg.in_channels, mc, 3, padding=1))])
        if cfg.addition_attention:
            # 8 heads of num_head_channels, Conv1d projections, never sees the camera adapter (level None).
            self.init_attn = UNetStage(
                TemporalTransformer(
                    mc, 8, cfg.num_head_channels, cfg.transformer_depth, 0.0, False, cfg.use_checkpoint, None
                )
            )
        chans, ch, ds = [mc], mc, 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [resblock(ch, mult * mc)]
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    layers += attention(ch, ds)
                self.input_blocks.append(UNetStage(*layers))
                chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(UNetStage(Downsample(ch)))
                chans.append(ch)
                ds *= 2

        self.middle_block = UNetStage(resblock(ch, ch), *attention(ch, ds), resblock(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [resblock(ch + chans.pop(), mult * mc)]
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    layers += attention(ch, ds)
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(UNetStage(*layers))

        self.out = nn.Sequential(GroupNorm32(32, ch), nn.SiLU(), nn.Conv2d(mc, cfg.out_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def split_context(self, context: torch.Tensor, frames: int) -> torch.Tensor:
        """[b, L, c] -> [(b t), L', c]. If L == 77 + 16*t, frame f gets cat(text, image tokens 16f..16f+15)."""
        b, length, c = context.shape
        if length == TEXT_TOKENS + frames * IMAGE_TOKENS_PER_FRAME:
            text = context[:, :TEXT_TOKENS].repeat_interleave(frames, dim=0)
            image = context[:, TEXT_TOKENS:].reshape(b * frames, IMAGE_TOKENS_PER_FRAME, c)
            return torch.cat([text, image], dim=1)
        return context.repeat_interleave(frames, dim=0)

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        fs: torch.Tensor | int | None = None,
        adapter_cond: Any = None,
    ) -> torch.Tensor:
        """x [b, c_in, t, h, w], timesteps [b], context [b, L, context_dim], fs [b] or int -> [b, c_out, t, h, w]."""
        b, _, t, h, w = x.shape
        timesteps = timesteps.expand(b) if timesteps.dim() == 1 else timesteps.reshape(1).expand(b)
        emb = self.time_embed(timestep_embedding(timesteps, self.cfg.model_channels).to(x.dtype))
        if self.cfg.fs_condition:
            if fs is None:
                fs = self.cfg.default_fs
            fs = torch.as_tensor(fs, device=x.device).reshape(-1).expand(b)
            emb = emb + self.fps_embedding(timestep_embedding(fs, self.cfg.model_channels).to(x.dtype))
        emb = emb.repeat_interleave(t, dim=0)
        context = self.split_context(context, t)

        hs = x.transpose(1, 2).reshape(b * t, -1, h, w)
        skips = []
        for i, block in enumerate(self.input_blocks):
            hs = block(hs, emb, context, b, adapter_cond)
            if i == 0 and self.cfg.addition_attention:
                hs = self.init_attn(hs, emb, context, b)
            skips.append(hs)
        hs = self.middle_block(hs, emb, context, b, adapter_cond)
        for block in self.output_blocks:
            hs = block(torch.cat([hs, skips.pop()], dim=1), emb, context, b, adapter_cond)
        y = self.out(hs.type(x.dtype))
        return y.reshape(b, t, -1, h, w).transpose(1, 2)


def iter_temporal_blocks(unet: UNetModel) -> Iterator[tuple[str, int, BasicTransformerBlock]]:
    """(name, feature level, block) for every temporal BasicTransformerBlock the camera adapter may hook
    (all TemporalTransformers except `init_attn`)."""
    for name, module in unet.named_modules():
        if isinstance(module, TemporalTransformer) and module.level is not None:
            for j, block in enumerate(module.transformer_blocks):
                yield f"{name}.transformer_blocks.{j}", module.level, block
