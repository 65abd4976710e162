"""What one inference run writes: video.mp4, preview.mp4, mask.png, trajectory.txt, settings.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from annotate.files import atomic_path, write_json
from annotate.video import write_video

from .trajectory import Trajectory, write_re10k

VIDEO, PREVIEW, MASK, TRAJECTORY, SETTINGS = "video.mp4", "preview.mp4", "mask.png", "trajectory.txt", "settings.json"


def mask_strip(pixel_mask: np.ndarray, latent_mask: np.ndarray | None = None) -> np.ndarray:
    """uint8 [R*H, F*W] strip: row 1 the eroded pixel mask of each frame left to right, row 2 (if given) the
    binarised latent mask upsampled (nearest) to the image size. White = shaped."""
    f, h, w = pixel_mask.shape
    rows = [np.concatenate(list(pixel_mask), axis=1)]
    if latent_mask is not None:
        lh, lw = latent_mask.shape[1:]
        up = latent_mask.repeat(h // lh, axis=1).repeat(w // lw, axis=2)
        rows.append(np.concatenate(list(up), axis=1))
    return (np.concatenate(rows, axis=0) * 255).round().astype(np.uint8)


def write_outputs(out_dir: str | Path, result, image_intr: np.ndarray, image_hw: tuple[int, int],
                  settings: dict, stride: int = 1, fps: float = 8.0) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"video": out / VIDEO}
    write_video(out / VIDEO, result.video, fps=fps)
    if result.preview is not None:
        write_video(out / PREVIEW, result.preview, fps=fps)
        paths["preview"] = out / PREVIEW
    if result.pixel_mask is not None:
        with atomic_path(out / MASK, keep_suffix=True) as tmp:  # PIL picks the format from the suffix
            Image.fromarray(mask_strip(result.pixel_mask, result.latent_mask)).save(tmp)
        paths["mask"] = out / MASK
    write_re10k(out / TRAJECTORY, Trajectory(result.c2w, result.intrinsics), image_intr, image_hw, stride)
    paths["trajectory"] = out / TRAJECTORY
    settings = dict(settings)
    settings["shaped_timesteps"] = result.shaped_timesteps
    settings["pasted_timesteps"] = result.pasted_timesteps
    settings["outputs"] = {k: v.name for k, v in paths.items()} | {"settings": SETTINGS}
    write_json(out / SETTINGS, settings)
    paths["settings"] = out / SETTINGS
    return paths

