"""Per-block camera adapters, hooked into the backbone's ``attn1_adapter`` extension point.

A temporal block then computes ``x = x + attn1(n) + adapter(n, cond, site)`` with ``n = norm1(x)``
(tokens ``[(b h w), t, c]``), which is CamI2V's ``add_to_main_branch``: with p the pose feature of the block's
level, ``adapter = PlückerProj(n + p) + Epipolar(n + p)`` (the authors' ``CameraControl/CamI2V/*``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .epipolar import EpipolarAttention


@dataclass
class CameraCondition:
    """What every adapter reads (passed to the UNet as ``adapter_cond``)."""

    features: list[torch.Tensor] = field(default_factory=list)  # per level [b, c, t, h, w]
    masks: dict[int, torch.Tensor | None] = field(default_factory=dict)  # per level [b, 1, N, R + N]
    rt: torch.Tensor | None = None  # MotionCtrl: [b, t, 12] relative w2c rows


def _tokens(x: torch.Tensor, b: int, t: int, h: int, w: int) -> torch.Tensor:
    """[(b h w), t, c] -> [b, (t h w), c]"""
    return x.view(b, h, w, t, -1).permute(0, 3, 1, 2, 4).reshape(b, t * h * w, -1)


def _untokens(x: torch.Tensor, b: int, t: int, h: int, w: int) -> torch.Tensor:
    return x.view(b, t, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b * h * w, t, -1)


class PluckerAdapter(nn.Module):
    """CameraCtrl (projection only) or CamI2V / RealCam-I2V (projection + epipolar attention)."""

    def __init__(self, dim: int, heads: int, epipolar: bool, num_register_tokens: int = 4):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.epipolar = EpipolarAttention(dim, heads, num_register_tokens) if epipolar else None

    def forward(self, n: torch.Tensor, cond: CameraCondition, site) -> torch.Tensor:
        b, t, h, w = site.batch, site.frames, site.height, site.width
        p = cond.features[site.level]
        y = n + p.permute(0, 3, 4, 2, 1).reshape(b * h * w, t, -1).to(n.dtype)
        z = self.proj(y)
        if self.epipolar is not None:
            z = z + _untokens(self.epipolar(_tokens(y, b, t, h, w), cond.masks.get(site.level)), b, t, h, w)
        return z


class MotionCtrlAdapter(nn.Module):
    """MotionCtrl's camera module through the extension point: MLP(cat(n, RT)) with the 3x4 relative w2c of each
    frame broadcast over pixels; last layer zero-initialised so training starts at the backbone."""

    def __init__(self, dim: int, hidden: int = 0):
        super().__init__()
        hidden = hidden or dim
        self.mlp = nn.Sequential(nn.Linear(dim + 12, hidden), nn.SiLU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, n: torch.Tensor, cond: CameraCondition, site) -> torch.Tensor:
        b, t, h, w = site.batch, site.frames, site.height, site.width
        rt = cond.rt.to(n.dtype)[:, None, None].expand(b, h, w, t, 12).reshape(b * h * w, t, 12)
        return self.mlp(torch.cat([n, rt], dim=-1))
