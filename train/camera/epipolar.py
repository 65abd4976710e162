"""Hard epipolar masks and the epipolar cross-frame attention of CamI2V (the authors' ``CameraControl/CamI2V/*``).

Mask: for query pixel x in frame i and key frame j, with T_ij = inv(c2w_j) @ c2w_i = [R | t],
E = [t]x R, F = K_j^-T E K_i^-1, the line l = F x (normalised by |(l1, l2)|) and key pixel x' of frame j is
attended iff |l . x'| < d * sqrt(2) / 2, d = the feature cell size in image pixels (8, 16, 32, 64).
Coordinates are image pixels with the project's pixel-centre convention: feature cell (r, c) is centred at
((c + 0.5) d_x, (r + 0.5) d_y) (the reference writes idx*d + d/2 - 0.5 with integer-centred pixels).
A frame attends to itself fully (``self_mode="full"``); ``"perturbed"`` follows the released code literally,
replacing a zero translation (the diagonal) by N(0, 1) * 1e-6 so the self-mask is a random line through x.
Other frame pairs with zero translation (pure rotation: no epipolar geometry) get that perturbation too.
Register tokens are prepended to keys/values and always attendable, so no query row is ever empty.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from annotate.camera import intrinsics_matrix_torch, invert_rigid_torch, skew_torch


@torch.no_grad()
def epipolar_mask(c2w: torch.Tensor, intr_px: torch.Tensor, feat_hw: tuple[int, int], image_hw: tuple[int, int],
                  self_mode: str = "full", generator: torch.Generator | None = None) -> torch.Tensor:
    """c2w [b, F, 4, 4], pixel intrinsics [b, F, 4] (image resolution) -> bool [b, F*h*w, F*h*w]
    (query index (i, r, c) row-major, key index (j, r', c') likewise)."""
    c2w, intr_px = c2w.double(), intr_px.double()
    b, f = c2w.shape[:2]
    (h, w), (ih, iw) = feat_hw, image_hw
    dy, dx = ih / h, iw / w
    rel = invert_rigid_torch(c2w)[:, None, :, :, :] @ c2w[:, :, None]  # [b, i, j]: camera i -> camera j
    rot, t = rel[..., :3, :3], rel[..., :3, 3]
    zero = t.norm(dim=-1) < 1e-9
    if zero.any():
        noise = torch.randn(t.shape, generator=generator, dtype=t.dtype).to(t.device) * 1e-6
        t = torch.where(zero[..., None], noise, t)
    kinv = torch.linalg.inv(intrinsics_matrix_torch(intr_px))  # [b, F, 3, 3]
    fmat = kinv[:, None].transpose(-1, -2) @ skew_torch(t) @ rot @ kinv[:, :, None]  # K_j^-T [t]x R K_i^-1
    v, u = torch.meshgrid((torch.arange(h, dtype=c2w.dtype, device=c2w.device) + 0.5) * dy,
                          (torch.arange(w, dtype=c2w.dtype, device=c2w.device) + 0.5) * dx, indexing="ij")
    x = torch.stack([u.reshape(-1), v.reshape(-1), torch.ones(h * w, dtype=c2w.dtype, device=c2w.device)], -1)
    masks = []
    for n in range(b):  # one sample at a time: the float distances are F^2 (hw)^2
        lines = torch.einsum("ijmn,pn->ijpm", fmat[n], x)
        lines = lines / lines[..., :2].norm(dim=-1, keepdim=True).clamp_min(1e-12)
        dist = torch.einsum("ijpm,qm->ijpq", lines.float(), x.float()).abs()
        m = dist < max(dx, dy) * math.sqrt(2) / 2
        if self_mode == "full":
            m[torch.arange(f), torch.arange(f)] = True
        masks.append(m.permute(0, 2, 1, 3).reshape(f * h * w, f * h * w))
    return torch.stack(masks)


def pad_registers(mask: torch.Tensor, num_registers: int) -> torch.Tensor:
    """bool [b, N, N] -> [b, 1, N, R + N] with the register columns always True (SDPA layout)."""
    b, n, _ = mask.shape
    return torch.cat([mask.new_ones(b, n, num_registers), mask], dim=-1)[:, None]


class EpipolarAttention(nn.Module):
    """Cross-attention of every token to every token of all frames (+ register tokens), masked; to_out zero."""

    def __init__(self, dim: int, heads: int, num_register_tokens: int = 4):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)
        self.register_tokens = nn.Parameter(torch.randn(num_register_tokens, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x [b, N, c]; mask bool [b, 1, N, R + N] (from :func:`pad_registers`) or None (full attention)."""
        b, n, c = x.shape
        ctx = torch.cat([self.register_tokens.to(x.dtype)[None].expand(b, -1, -1), x], dim=1)

        def split(t):
            return t.view(b, t.shape[1], self.heads, -1).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.to_q(x)), split(self.to_k(ctx)), split(self.to_v(ctx)),
                                             attn_mask=mask)
        return self.to_out(out.transpose(1, 2).reshape(b, n, c))
