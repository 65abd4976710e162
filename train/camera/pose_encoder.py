"""CameraCtrl pose encoder: Plücker rays [b, 6, F, H, W] -> one feature map per UNet level.

PixelUnshuffle(8) (6 * 64 = 384 channels at latent resolution), conv3x3 to channels[0], then per level
``res_blocks`` x (T2I-Adapter ResnetBlock (ksize 1, identity skip, avg-pool downsample at the start of every
level but the first) -> temporal self-attention block with sinusoidal position encoding). Channels are the
UNet's ``channel_mult * model_channels``: [320, 640, 1280, 1280] for DynamiCrafter, scaled down for tiny.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, down: bool, ksize: int = 1):
        super().__init__()
        self.down = nn.AvgPool2d(2, 2) if down else None
        self.in_conv = nn.Conv2d(cin, cout, ksize, 1, ksize // 2) if cin != cout else None
        self.block1 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.act = nn.ReLU()
        self.block2 = nn.Conv2d(cout, cout, ksize, 1, ksize // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down is not None:
            x = self.down(x)
        if self.in_conv is not None:
            x = self.in_conv(x)
        return x + self.block2(self.act(self.block1(x)))


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return pe


class TemporalAttentionBlock(nn.Module):
    """AnimateDiff-style temporal self-attention (tokens [(b h w), f, c]) + GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, max_len: int = 16):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff_in = nn.Linear(dim, dim * 8)  # GEGLU: value and gate, mult 4
        self.ff_out = nn.Linear(dim * 4, dim)
        self.register_buffer("pe", sinusoidal_table(max_len, dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, f, c = x.shape
        h = self.norm1(x) + self.pe[:f].to(x.dtype)

        def split(t):
            return t.view(n, f, self.heads, -1).transpose(1, 2)

        a = F.scaled_dot_product_attention(split(self.to_q(h)), split(self.to_k(h)), split(self.to_v(h)))
        x = x + self.to_out(a.transpose(1, 2).reshape(n, f, c))
        v, gate = self.ff_in(self.norm2(x)).chunk(2, dim=-1)
        return x + self.ff_out(v * F.gelu(gate))


class CameraPoseEncoder(nn.Module):
    def __init__(self, channels: list[int], heads: int = 8, res_blocks: int = 2, max_len: int = 16,
                 downscale: int = 8, in_channels: int = 6):
        super().__init__()
        self.unshuffle = nn.PixelUnshuffle(downscale)
        self.conv_in = nn.Conv2d(in_channels * downscale**2, channels[0], 3, 1, 1)
        self.res = nn.ModuleList()
        self.attn = nn.ModuleList()
        prev = channels[0]
        for i, ch in enumerate(channels):
            self.res.append(nn.ModuleList(
                ResnetBlock(prev if j == 0 else ch, ch, down=(j == 0 and i > 0)) for j in range(res_blocks)))
            self.attn.append(nn.ModuleList(TemporalAttentionBlock(ch, heads, max_len) for _ in range(res_blocks)))
            prev = ch

    def forward(self, plucker: torch.Tensor) -> list[torch.Tensor]:
        """[b, 6, F, H, W] -> [[b, c_l, F, H/8/2^l, W/8/2^l] for each level l]."""
        b, _, f, _, _ = plucker.shape
        x = self.conv_in(self.unshuffle(plucker.transpose(1, 2).flatten(0, 1)))
        features = []
        for res, attn in zip(self.res, self.attn):
            for r, a in zip(res, attn):
                x = r(x)
                _, c, h, w = x.shape
                t = x.view(b, f, c, h, w).permute(0, 3, 4, 1, 2).reshape(b * h * w, f, c)
                x = a(t).view(b, h, w, f, c).permute(0, 3, 4, 1, 2).reshape(b * f, c, h, w)
            features.append(x.view(b, f, *x.shape[1:]).transpose(1, 2))
        return features
