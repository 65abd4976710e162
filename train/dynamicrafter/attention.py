"""Attention blocks of the DynamiCrafter UNet: cross-attention with the image branch, spatial and temporal
transformers.

Camera extension point (used by the CamI2V / RealCam trainer, nothing here depends on it):
every `BasicTransformerBlock` has an attribute `attn1_adapter` (None by default, so it adds no state-dict keys).
When it is set to a module and the UNet is called with `adapter_cond=...`, a temporal block computes

    n = norm1(x);  x = x + attn1(n) + attn1_adapter(n, adapter_cond, site)

where `site` (`TemporalSite`) tells the adapter the downsample level (log2 of the UNet downsample factor; the
middle block gets the level of its resolution, i.e. the last feature map) and the (b, t, h, w) layout of the
tokens ((b*h*w), t, c). The extra `init_attn` block has `level=None` and never calls the adapter.
Use `train.dynamicrafter.unet.iter_temporal_blocks` to attach adapters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class TemporalSite:
    """Where a temporal block sits: feature level and token layout (tokens are ((b*h*w), t, c))."""

    level: int
    batch: int
    frames: int
    height: int
    width: int


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class CrossAttention(nn.Module):
    """Multi-head attention (q/k/v without bias, scale d^-0.5). Self-attention when `context` is None.

    With `image_cross_attention`, the context is [text (77 tokens), image tokens]: the text goes through
    to_k/to_v, the image tokens through to_k_ip/to_v_ip, two separate softmaxes share the query and the outputs
    are summed, the image part scaled by 1 or (tanh(alpha) + 1) when `scale_learnable`.
    Without it, a given context is truncated to its first 77 (text) tokens, as in the original.
    """

    def __init__(
        self,
        query_dim: int,
        context_dim: int | None = None,
        heads: int = 8,
        dim_head: int = 64,
        dropout: float = 0.0,
        image_cross_attention: bool = False,
        scale_learnable: bool = False,
        text_context_len: int = 77,
    ):
        super().__init__()
        inner = heads * dim_head
        context_dim = context_dim or query_dim
        self.heads = heads
        self.text_context_len = text_context_len
        self.image_cross_attention = image_cross_attention
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(dropout))
        if image_cross_attention:
            self.to_k_ip = nn.Linear(context_dim, inner, bias=False)
            self.to_v_ip = nn.Linear(context_dim, inner, bias=False)
            if scale_learnable:
                self.alpha = nn.Parameter(torch.tensor(0.0))
        if not hasattr(self, "alpha"):
            self.alpha = None

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        h = self.heads
        return _merge(F.scaled_dot_product_attention(_heads(q, h), _heads(k, h), _heads(v, h)))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        q = self.to_q(x)
        if context is None:
            return self.to_out(self._attend(q, self.to_k(x), self.to_v(x)))
        text = context[:, : self.text_context_len]
        out = self._attend(q, self.to_k(text), self.to_v(text))
        if self.image_cross_attention:
            image = context[:, self.text_context_len :]
            out_ip = self._attend(q, self.to_k_ip(image), self.to_v_ip(image))
            if self.alpha is not None:
                out_ip = out_ip * (torch.tanh(self.alpha) + 1)
            out = out + out_ip
        return self.to_out(out)


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(dropout), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """x += attn1(LN x) [+ adapter]; x += attn2(LN x, context); x += FF(LN x).

    Module registration order (attn1, ff, attn2, norms) follows the checkpoint's key order.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        dropout: float = 0.0,
        context_dim: int | None = None,
        image_cross_attention: bool = False,
        scale_learnable: bool = False,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        self.attn1 = CrossAttention(dim, None, heads, dim_head, dropout)
        self.ff = FeedForward(dim, dropout=dropout)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head, dropout, image_cross_attention, scale_learnable)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.use_checkpoint = use_checkpoint
        self.attn1_adapter: nn.Module | None = None  # camera extension point, see module docstring

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        adapter_cond: Any = None,
        site: TemporalSite | None = None,
    ) -> torch.Tensor:
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, context, adapter_cond, site, use_reentrant=False)
        return self._forward(x, context, adapter_cond, site)

    def _forward(self, x, context, adapter_cond, site):
        n = self.norm1(x)
        h = self.attn1(n)
        if self.attn1_adapter is not None and adapter_cond is not None and site is not None:
            h = h + self.attn1_adapter(n, adapter_cond, site)
        x = x + h
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


class SpatialTransformer(nn.Module):
    """Attention over the h*w tokens of each frame (frames folded into the batch); attn2 reads the context."""

    def __init__(
        self,
        channels: int,
        heads: int,
        dim_head: int,
        depth: int = 1,
        dropout: float = 0.0,
        context_dim: int | None = None,
        use_linear: bool = True,
        image_cross_attention: bool = False,
        scale_learnable: bool = False,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        inner = heads * dim_head
        self.use_linear = use_linear
        self.norm = _group_norm(channels)
        self.proj_in = nn.Linear(channels, inner) if use_linear else nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(
                inner, heads, dim_head, dropout, context_dim, image_cross_attention, scale_learnable, use_checkpoint
            )
            for _ in range(depth)
        )
        self.proj_out = nn.Linear(inner, channels) if use_linear else nn.Conv2d(inner, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        if not self.use_linear:
            y = self.proj_in(y)
        y = y.flatten(2).transpose(1, 2)  # (b t) (h w) c
        if self.use_linear:
            y = self.proj_in(y)
        for block in self.transformer_blocks:
            y = block(y, context)
        if self.use_linear:
            y = self.proj_out(y)
        y = y.transpose(1, 2).reshape(b, -1, h, w)
        if not self.use_linear:
            y = self.proj_out(y)
        return y + x


class TemporalTransformer(nn.Module):
    """Self-attention over the frames at each pixel (tokens ((b*h*w), t, c)); attn2 is self-attention too.

    No positional encoding and no mask (DynamiCrafter settings). `level` is the camera-feature level of this
    block (None for `init_attn`, which the camera adapter must skip). With use_linear False (`init_attn`),
    proj_in/proj_out are Conv1d(k=1), as in the checkpoint.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        dim_head: int,
        depth: int = 1,
        dropout: float = 0.0,
        use_linear: bool = True,
        use_checkpoint: bool = False,
        level: int | None = None,
    ):
        super().__init__()
        inner = heads * dim_head
        self.level = level
        self.norm = _group_norm(channels)
        self.proj_in = nn.Linear(channels, inner) if use_linear else nn.Conv1d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, heads, dim_head, dropout, None, use_checkpoint=use_checkpoint)
            for _ in range(depth)
        )
        self.proj_out = nn.Linear(inner, channels) if use_linear else nn.Conv1d(inner, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    @staticmethod
    def _linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # A k=1 Conv1d over time is a Linear over channels.
        weight = layer.weight if layer.weight.dim() == 2 else layer.weight[..., 0]
        return F.linear(x, weight, layer.bias)

    def forward(self, x: torch.Tensor, adapter_cond: Any = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.norm(x).permute(0, 3, 4, 2, 1).reshape(b * h * w, t, c)
        y = self._linear(self.proj_in, y)
        site = None
        if adapter_cond is not None and self.level is not None:
            site = TemporalSite(self.level, b, t, h, w)
        for block in self.transformer_blocks:
            y = block(y, None, adapter_cond, site)
        y = self._linear(self.proj_out, y)
        y = y.reshape(b, h, w, t, c).permute(0, 4, 3, 1, 2)
        return y + x
