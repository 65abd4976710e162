"""Scene-constrained noise shaping (as the authors' ``realcam_i2v.py`` and ``lvdm/models/samplers/ddim.py``) and
continuation pasting, as DDIM ``x_t_hook``s.

Mask: a preview pixel is visible when any channel is not black (in [-1, 1]: |x + 1| >= 1e-4, i.e. uint8 > 0);
erosion with a k x k all-ones kernel and reflect padding keeps a pixel only if all k*k neighbours are visible;
bilinear resize (align_corners=True) to the latent size; binarise at 0.9; the same mask for every latent
channel. z_preview is the VAE latent of the preview with latent frame 0 replaced by the input image's latent.
At each DDIM step whose DDPM timestep t >= threshold, before the UNet call:
``x_t <- q_sample(z_preview, t, fresh noise) * M + (1 - M) * x_t``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from train.dynamicrafter.diffusion import DiffusionSchedule

Hook = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def visibility(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [F, H, W, 3] previews (or float [F, 3, H, W] in [-1, 1]) -> float {0, 1} [F, H, W]."""
    if isinstance(frames, np.ndarray) and frames.dtype == np.uint8:
        return torch.from_numpy((frames > 0).any(axis=-1).astype(np.float32))
    x = torch.as_tensor(frames).float()
    return ((x + 1).abs() >= 1e-4).any(dim=1).float()


def erode(vis: torch.Tensor, kernel: int = 5) -> torch.Tensor:
    """[F, H, W] {0, 1} -> {0, 1}: a pixel stays only if all kernel x kernel neighbours (reflect padding) are 1."""
    if kernel <= 1:
        return vis.clone()
    if kernel % 2 == 0:
        raise ValueError("erosion kernel size must be odd")
    pad = kernel // 2
    x = F.pad(vis[:, None].float(), (pad, pad, pad, pad), mode="reflect")
    s = F.conv2d(x, torch.ones(1, 1, kernel, kernel, dtype=x.dtype))[:, 0]
    return (s >= kernel * kernel - 1e-3).float()


def latent_mask(eroded: torch.Tensor, latent_hw: tuple[int, int], binarize: float = 0.9) -> torch.Tensor:
    """[F, H, W] -> [F, h, w] {0, 1}: bilinear (align_corners=True) resize, then >= binarize -> 1."""
    small = F.interpolate(eroded[:, None].float(), size=tuple(latent_hw), mode="bilinear", align_corners=True)[:, 0]
    return (small >= binarize).float()


def shaping_mask(frames, latent_hw: tuple[int, int], kernel: int = 5,
                 binarize: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel mask after erosion [F, H, W], latent mask [F, h, w]) of preview frames."""
    eroded = erode(visibility(frames), kernel)
    return eroded, latent_mask(eroded, latent_hw, binarize)


def _noise(shape, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(like.device, like.dtype)


class NoiseShaper:
    """x_t hook: paste the noised preview latent inside the mask at every step with t >= threshold.

    z_preview [b, c, F, h, w]; mask [F, h, w], [b, F, h, w] or [b, 1, F, h, w]. `shaped_timesteps` records
    the DDPM timestep of every shaped step (settings.json's shaped_timesteps). The noise of each shaped step is
    the next ``torch.randn(z_preview.shape)`` draw of ``generator``."""

    def __init__(self, schedule: DiffusionSchedule, z_preview: torch.Tensor, mask: torch.Tensor,
                 threshold: int = 900, generator: torch.Generator | None = None):
        self.schedule, self.z, self.threshold, self.generator = schedule, z_preview, int(threshold), generator
        m = mask.float()
        if m.dim() == 3:
            m = m[None, None]
        elif m.dim() == 4:
            m = m[:, None]
        self.mask = m.to(z_preview.device, z_preview.dtype)
        self.shaped_timesteps: list[int] = []

    def __call__(self, index: int, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if int(t[0]) < self.threshold:
            return x
        noise = _noise(self.z.shape, self.generator, x)
        self.shaped_timesteps.append(int(t[0]))
        noised = self.schedule.q_sample(self.z.to(x.dtype), t, noise)
        return noised * self.mask + (1 - self.mask) * x


class OverlapPaster:
    """x_t hook of a continuation: the first N latent frames of x_t become q_sample(origin_z0, t) at every
    step; `finalize` pastes the clean latents into the result."""

    def __init__(self, schedule: DiffusionSchedule, z0: torch.Tensor, generator: torch.Generator | None = None):
        self.schedule, self.z0, self.generator = schedule, z0, generator
        self.n = z0.shape[2]
        self.pasted_timesteps: list[int] = []

    def __call__(self, index: int, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[:, :, : self.n] = self.schedule.q_sample(self.z0.to(x.dtype), t, _noise(self.z0.shape, self.generator, x))
        self.pasted_timesteps.append(int(t[0]))
        return x

    def finalize(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[:, :, : self.n] = self.z0.to(x.dtype)
        return x


def chain(*hooks: Hook | None) -> Hook | None:
    """One hook running the given ones in order (None entries skipped); None when there are none."""
    hooks = [h for h in hooks if h is not None]
    if not hooks:
        return None

    def run(index: int, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        for h in hooks:
            x = h(index, t, x)
        return x

    return run
