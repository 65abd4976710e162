"""Optional disk cache of the frozen encoders' outputs (``run.cache_dir``).

One safetensors file per *sample*, keyed by sha1(model name, clip id, sampled frame indices (= start and stride),
resolution, condition index, caption): the VAE posterior mean/std of the frames ``[4, F, h, w]``, the CLIP image
tokens of the condition frame (before the frozen Resampler) and the caption's text embedding. Because samples are
deterministic in (seed, epoch, index), ``run.cache_epochs = E`` precomputes exactly the samples of the first E
epochs before training; later misses are computed and stored on the fly. The posterior is sampled at training time
(``mean + std * noise`` from the step's generator), so cached and uncached runs give the same losses up to the
cache's float16 rounding. Files are written atomically (:func:`annotate.files.atomic_path`) so ranks can share a folder.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from annotate.files import atomic_path


def sample_key(model_name: str, clip_id: str, frame_indices, hw: tuple[int, int], cond: int, caption: str) -> str:
    idx = ",".join(str(int(i)) for i in frame_indices)
    raw = f"{model_name}|{clip_id}|{idx}|{hw[0]}x{hw[1]}|{cond}|{caption}"
    return hashlib.sha1(raw.encode()).hexdigest()


class EncoderCache:
    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = 0

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        p = self.path(key)
        if not p.exists():
            self.misses += 1
            return None
        self.hits += 1
        return load_file(str(p))

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        with atomic_path(self.path(key)) as tmp:  # per-process temp names: ranks can share the folder
            save_file({k: v.detach().to("cpu", torch.float16).contiguous() for k, v in tensors.items()}, str(tmp))
