"""Images for the model: the one resize-and-centre-crop that training, inference and evaluation share.

:func:`resize_crop` resizes uint8 RGB frames keeping the aspect ratio so that they cover the model size, then
crops the centre, following :class:`annotate.camera.ResizeCrop`'s plan (which also gives the intrinsics).
``train/data.py`` (training and evaluation samples) and ``train/inference/scene.py`` (the user's image, the
previous video of a continuation, the last image of an interpolation) both call it, so the model sees the
same pixels for the same frame in training and at inference.

Resampling: **bilinear with antialiasing** (a triangle filter widened by the downscale factor, as PIL's
``BILINEAR`` and torch's ``antialias=True``), computed in uint8 and rounded once. Why this one:

* it is what the weights were trained on. CamI2V's RealEstate10K loader (``CameraControl/data/realestate10k.py``,
  the loader RealCam-I2V's plug-ins were trained with) resizes with torchvision ``Resize(256, antialias=True)``,
  whose default interpolation is bilinear; DynamiCrafter's own video loader (``lvdm/data/webvid.py``) and CamI2V's
  inference (``single_image_for_inference.py``) use torchvision's default (bilinear) too. The bicubic in
  ``dynamicrafter-architecture.md`` is the CLIP image encoder's own 224x224 resize inside the model, which
  stays as it is; the PIL bicubic that inference used before matched neither;
* it is the fastest antialiased filter: torch's uint8 channels-last kernel resizes 16 640x360 frames in
  ~15 ms on one core (PIL's bilinear ~3x, a bicubic kernel wider still), which the training loader's
  10 samples/s per core needs. Without antialiasing a 1.4x-2.8x downscale of RealEstate10K's 640x360 or
  1280x720 frames aliases fine texture.

The uint8 result is within one grey level of the same filter computed in floating point (PIL and torch agree
to one level too); a frame resized alone or inside a batch gives the same pixels.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from annotate.camera import ResizeCrop


class ImageError(ValueError):
    """An unreadable image; the message names the file."""


def load_image(path: str | os.PathLike, name: str | None = None) -> np.ndarray:
    """Any image file (or file-like object) -> uint8 RGB ``[H, W, 3]``."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))  # a writable array (torch refuses to wrap read-only ones)
    except OSError as e:
        raise ImageError(f"{name or path}: unreadable image ({e})") from None


def resize_crop(images: np.ndarray, out_hw: tuple[int, int]) -> tuple[np.ndarray, ResizeCrop]:
    """uint8 ``[H, W, 3]`` or ``[N, H, W, 3]`` -> the same at ``out_hw`` (bilinear, antialiased; centre crop)
    and the plan (for the intrinsics)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 [H, W, 3] or [N, H, W, 3] images, got {images.dtype} {images.shape}")
    plan = ResizeCrop.plan(images.shape[-3:-1], (int(out_hw[0]), int(out_hw[1])))
    (h, w), t, left = plan.out_hw, plan.top, plan.left
    if plan.resized_hw == images.shape[-3:-1]:
        return np.ascontiguousarray(images[..., t:t + h, left:left + w, :]), plan
    batch = images if images.ndim == 4 else images[None]
    if not batch.flags.writeable:  # torch only reads it, but warns about wrapping a read-only array
        batch = batch.copy()
    # [N, H, W, 3] memory viewed as channels-last NCHW: no copy in, and torch's vectorised uint8 kernel
    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=plan.resized_hw, mode="bilinear", align_corners=False, antialias=True)
    out = x[:, :, t:t + h, left:left + w].permute(0, 2, 3, 1).contiguous().numpy()
    return (out if images.ndim == 4 else out[0]), plan


def resize_crop_map(values: np.ndarray, plan: ResizeCrop) -> np.ndarray:
    """A float map of an image (metric depth) brought to the image's model crop: nearest neighbour to the plan's
    resized size (never blending depths across an edge), then the same centre crop as :func:`resize_crop`."""
    (rh, rw), (h, w) = plan.resized_hw, plan.out_hw
    m = np.asarray(values, np.float32)
    if m.shape != (rh, rw):
        m = np.asarray(Image.fromarray(m).resize((rw, rh), Image.Resampling.NEAREST))  # float32: mode F
    return np.ascontiguousarray(m[plan.top:plan.top + h, plan.left:plan.left + w])
