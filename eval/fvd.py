"""Fréchet Video Distance in the two published variants the authors report (``evaluation/fvd_test.py``).

- ``videogpt``: every frame resized bilinearly to 224x224 (aspect ratio not kept), scaled to [-1, 1],
  :class:`eval.i3d.InceptionI3d` with ``i3d_pretrained_400.pt``; features are the 400 logits averaged
  over time. JSON key ``FVD_videogpt``.
- ``styleganv``: shorter side resized bilinearly to 128 (the other side ``ceil``-ed), centre crop
  128x128, scaled to [-1, 1], the StyleGAN-V TorchScript I3D called with ``rescale=False, resize=True,
  return_features=True``. JSON key ``FVD_styleganv``.

Both resize with ``align_corners=False`` and no antialiasing, then map 0..255 to [-1, 1], as the
reference's ``fvdcal`` does. The Fréchet distance uses the unbiased covariance and, by default, the
TF-GAN trace-sqrt (``sqrt`` of ``sigma1`` by SVD, then the trace of the SVD square root of
``sqrt(sigma1) sigma2 sqrt(sigma1)``, singular values below 1e-10 left un-rooted), which is what the
reference computes. Eigenvalues of the product below 1e-10 stay un-rooted there, which biases the
distance up by at most ``2 * sum(lambda)`` over covariance eigenvalues ``lambda < 1e-5``: nothing for
I3D logits, visible only for tiny features (a set against itself then gives ~1e-4 of the trace
instead of 0). ``method="sqrtm"`` uses ``scipy.linalg.sqrtm(sigma1 @ sigma2)`` instead. All of it
in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from eval.log import logger

VARIANTS = ("videogpt", "styleganv")
FVD_KEYS = {"videogpt": "FVD_videogpt", "styleganv": "FVD_styleganv"}
FeatureFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class FVDConfig:
    variants: tuple[str, ...] = VARIANTS  # FVD variants to compute (videogpt: i3d_pretrained_400.pt, styleganv)
    videogpt_weights: str | None = None  # i3d_pretrained_400.pt
    styleganv_torchscript: str | None = None  # i3d_torchscript.pt
    batch_size: int = 16  # videos per I3D batch
    device: str = "cpu"  # FVD device: auto (cuda when available, batched), cpu, cuda:N
    num_frames: int | None = None  # None: all frames (every video of both sets must have the same count)
    method: Literal["svd", "sqrtm"] = "svd"  # matrix square root: svd (TF-GAN, the reference) or sqrtm


def from_weights() -> FVDConfig:
    """The FVD settings of a command: no variant named (then those whose I3D weights are given), device auto."""
    return FVDConfig(variants=(), device="auto")


def resolve(cfg: FVDConfig) -> FVDConfig:
    """``cfg`` ready to run: no variant named -> those whose I3D weights are given; device auto -> cuda when the
    driver has a GPU (batched there), else cpu."""
    variants = cfg.variants or tuple(v for v, path in (("videogpt", cfg.videogpt_weights),
                                                       ("styleganv", cfg.styleganv_torchscript)) if path)
    device = cfg.device if cfg.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    return replace(cfg, variants=variants, device=device)


# ----------------------------------------------------------------------------------------- preprocessing


def _as_float_frames(videos: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8-range ``[B, T, H, W, 3]`` -> float32 ``[B*T, 3, H, W]`` (values 0..255)."""
    v = torch.as_tensor(np.asarray(videos) if not isinstance(videos, torch.Tensor) else videos)
    if v.ndim != 5 or v.shape[-1] != 3:
        raise ValueError(f"expected videos [B, T, H, W, 3], got shape {tuple(v.shape)}")
    b, t, h, w, _ = v.shape
    return v.float().reshape(b * t, h, w, 3).permute(0, 3, 1, 2)


def _to_model_layout(frames: torch.Tensor, b: int, t: int) -> torch.Tensor:
    """``[B*T, 3, H, W]`` 0..255 -> ``[B, 3, T, H, W]`` in [-1, 1]."""
    _, c, h, w = frames.shape
    x = frames.reshape(b, t, c, h, w).transpose(1, 2).contiguous()
    return 2.0 * x / 255.0 - 1.0


def preprocess_videogpt(videos: np.ndarray | torch.Tensor, size: int = 224) -> torch.Tensor:
    """Bilinear resize to ``size x size`` (aspect not kept), scale to [-1, 1]: ``[B, 3, T, size, size]``."""
    b, t = np.shape(videos)[:2]
    frames = F.interpolate(_as_float_frames(videos), size=(size, size), mode="bilinear", align_corners=False)
    return _to_model_layout(frames, b, t)


def preprocess_styleganv(videos: np.ndarray | torch.Tensor, size: int = 128) -> torch.Tensor:
    """Shorter side to ``size`` (other side ceil-ed), centre crop ``size x size``, scale to [-1, 1]."""
    b, t, h, w = np.shape(videos)[:4]
    scale = size / min(h, w)
    target = (size, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), size)
    frames = F.interpolate(_as_float_frames(videos), size=target, mode="bilinear", align_corners=False)
    rh, rw = frames.shape[-2:]
    top, left = (rh - size) // 2, (rw - size) // 2
    frames = frames[:, :, top:top + size, left:left + size]
    return _to_model_layout(frames, b, t)


PREPROCESS = {"videogpt": preprocess_videogpt, "styleganv": preprocess_styleganv}


# ----------------------------------------------------------------------------------------- Fréchet distance


def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of ``[N, D]`` features, float64."""
    f = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features, np.float64)
    f = f.reshape(len(f), -1)
    if len(f) < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {len(f)}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _sym_sqrt_svd(mat: np.ndarray, eps: float = 1e-10) -> np.ndarray:
    """TF-GAN's symmetric square root: ``U diag(s') V^T`` with ``s' = sqrt(s)`` where ``s >= eps``."""
    u, s, vt = np.linalg.svd(mat)
    si = np.where(s < eps, s, np.sqrt(s))
    return (u * si) @ vt


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, method: str = "svd") -> float:
    """``tr(sqrt(sigma1 sigma2))``."""
    if method == "svd":
        root1 = _sym_sqrt_svd(sigma1)
        return float(np.trace(_sym_sqrt_svd(root1 @ sigma2 @ root1)))
    if method == "sqrtm":
        root = scipy.linalg.sqrtm(sigma1 @ sigma2)
        return float(np.trace(np.real(root)))
    raise ValueError(f"method must be 'svd' or 'sqrtm', got {method!r}")


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     method: str = "svd") -> float:
    """``||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2))``."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"feature statistics differ in shape: {mu1.shape}/{sigma1.shape} vs "
                         f"{mu2.shape}/{sigma2.shape}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2, method))


def fvd_from_features(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, method: str = "svd") -> float:
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake), method=method)


# ----------------------------------------------------------------------------------------- features


@torch.no_grad()
def extract_features(videos: Sequence[np.ndarray] | np.ndarray, model: FeatureFn, variant: str, batch_size: int = 16,
                     device: str | torch.device = "cpu", num_frames: int | None = None) -> np.ndarray:
    """Features ``[N, D]`` of uint8 videos ``[T, H, W, 3]`` (a list or a ``[N, T, H, W, 3]`` array)."""
    if variant not in PREPROCESS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    videos = list(videos)
    if not videos:
        raise ValueError("no videos")
    if num_frames is not None:
        short = [i for i, v in enumerate(videos) if len(v) < num_frames]
        if short:
            raise ValueError(f"videos {short[:5]} have fewer than {num_frames} frames")
        videos = [v[:num_frames] for v in videos]
    shapes = {tuple(np.shape(v)) for v in videos}
    if len(shapes) != 1:
        raise ValueError(f"videos differ in shape {sorted(shapes)[:4]}; set num_frames / resize to one size")
    feats = []
    for i in range(0, len(videos), batch_size):
        batch = PREPROCESS[variant](np.stack(videos[i:i + batch_size])).to(device)
        out = model(batch)
        feats.append(out.detach().float().reshape(len(batch), -1).cpu().numpy())
    return np.concatenate(feats).astype(np.float64)


def load_feature_model(variant: str, config: FVDConfig) -> FeatureFn:
    from eval.i3d import load_i3d, load_styleganv_i3d

    if variant == "videogpt":
        if not config.videogpt_weights:
            raise ValueError("FVD_videogpt needs videogpt_weights (path to i3d_pretrained_400.pt)")
        return load_i3d(config.videogpt_weights, config.device)
    if variant == "styleganv":
        if not config.styleganv_torchscript:
            raise ValueError("FVD_styleganv needs styleganv_torchscript (path to i3d_torchscript.pt)")
        return load_styleganv_i3d(config.styleganv_torchscript, config.device)
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def compute_fvd(real_videos: Sequence[np.ndarray], fake_videos: Sequence[np.ndarray], config: FVDConfig,
                models: dict[str, FeatureFn] | None = None) -> dict[str, float]:
    """FVD of every configured variant: ``{"FVD_videogpt": ..., "FVD_styleganv": ...}``.

    ``models`` may supply ready feature functions per variant (tests, or to reuse loaded networks).
    """
    out = {}
    for variant in config.variants:
        model = (models or {}).get(variant) or load_feature_model(variant, config)
        logger.info("FVD (%s): features of %d real and %d generated videos", variant, len(real_videos),
                    len(fake_videos))
        real = extract_features(real_videos, model, variant, config.batch_size, config.device, config.num_frames)
        fake = extract_features(fake_videos, model, variant, config.batch_size, config.device, config.num_frames)
        out[FVD_KEYS[variant]] = fvd_from_features(real, fake, config.method)
    return out


def _features_from_paths(paths: Sequence[str], model: FeatureFn, variant: str, config: FVDConfig,
                         description: str) -> np.ndarray:
    """Stream videos from disk batch by batch (only ``batch_size`` videos in memory at once)."""
    from annotate.video import read_frames
    from eval.log import progress

    feats = []
    shape = None
    batches = range(0, len(paths), config.batch_size)
    for i in progress(batches, description, total=len(batches)):
        vids = [read_frames(p) for p in paths[i:i + config.batch_size]]
        if config.num_frames is not None:
            vids = [v[:config.num_frames] for v in vids]
        for p, v in zip(paths[i:i + config.batch_size], vids):
            if shape is None:
                shape = v.shape
            elif v.shape != shape:
                raise ValueError(f"{p}: shape {v.shape} differs from the first video's {shape}; FVD needs equal "
                                 "frame counts and sizes (set num_frames)")
        feats.append(extract_features(vids, model, variant, config.batch_size, config.device))
    return np.concatenate(feats)


def fvd_from_paths(real_paths: Sequence[str], fake_paths: Sequence[str], config: FVDConfig,
                   models: dict[str, FeatureFn] | None = None) -> dict[str, float]:
    """Like :func:`compute_fvd`, reading the videos (mp4 or image folders) from disk as it goes."""
    out = {}
    for variant in config.variants:
        model = (models or {}).get(variant) or load_feature_model(variant, config)
        real = _features_from_paths(list(map(str, real_paths)), model, variant, config, f"FVD {variant}: real")
        fake = _features_from_paths(list(map(str, fake_paths)), model, variant, config, f"FVD {variant}: generated")
        out[FVD_KEYS[variant]] = fvd_from_features(real, fake, config.method)
        logger.info("%s = %.4f (%d real, %d generated videos)", FVD_KEYS[variant], out[FVD_KEYS[variant]],
                    len(real), len(fake))
    return out
