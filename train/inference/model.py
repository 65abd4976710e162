"""The model of the sampling commands (``train.sample``, the editor's Generate, ``eval generate``): one typed
:class:`ModelSource` of the backbone and its camera plug-in, and the one loader of each (:func:`load_model`,
:func:`load_plugin`).

Each command nests it as ``model`` (keys ``model.checkpoint``, ...) and keeps the historical option names
through :func:`model_flags`: ``--checkpoint``, ``--backbone`` (key ``config``), ``--tokenizer``, ``--plugin``,
``--tiny``, ``--tiny-seed``, ``--device``, ``--dtype``.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class ModelSource:
    """The backbone and its camera plug-in, and where and in which precision they run."""

    checkpoint: str | None = None  # DynamiCrafter model.ckpt / .safetensors / train.convert folder
    config: str | None = None  # backbone preset or yaml (null: detected from the checkpoint; tiny: the tiny preset)
    tokenizer: str | None = None  # CLIP tokenizer folder (vocab.json + merges.txt)
    # camera plug-in: plugin.safetensors, a checkpoint folder or a run folder (null: the backbone alone, without
    # camera control)
    plugin: str | None = None
    tiny: bool = False  # random tiny model (tests, smoke runs): no checkpoint
    tiny_seed: int = 0  # seed of the random tiny model's weights
    # auto: cuda when available (this process's GPU, LOCAL_RANK, under accelerate launch / torchrun), else cpu;
    # or cpu, cuda:N
    device: str = "auto"
    # auto: bf16 on a CUDA GPU that supports it, else fp16 on CUDA, fp32 on the CPU
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = "auto"

    @property
    def available(self) -> bool:
        """A model can be loaded: the tiny one or a checkpoint."""
        return self.tiny or bool(self.checkpoint)


def model_flags(prefix: str = "model.") -> dict[str, str]:
    """The options of :class:`ModelSource` (their historical names) -> its keys under ``prefix``."""
    from train.command_line import BACKBONE_FLAG

    names = {"config": BACKBONE_FLAG}
    return {names.get(k, "--" + k.replace("_", "-")): prefix + k
            for k in ("checkpoint", "config", "tokenizer", "plugin", "tiny", "tiny_seed", "device", "dtype")}


def command_flags(cls: type, renamed: dict[str, str] | None = None) -> dict[str, str]:
    """--option -> key of a command's config that nests :class:`ModelSource` as ``model``: each other field is
    --its-name (or its option in ``renamed``), and the model's options come in its place."""
    flags: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        flags.update(model_flags("model.") if f.name == "model" else
                     {(renamed or {}).get(f.name, "--" + f.name.replace("_", "-")): f.name})
    return flags


def resolve_device(name: str) -> str:
    """auto: cuda when available (cuda:LOCAL_RANK in a process of accelerate launch / torchrun: one GPU each),
    else cpu."""
    if name != "auto":
        return name
    if not torch.cuda.is_available():
        return "cpu"
    rank = os.environ.get("LOCAL_RANK")
    return f"cuda:{int(rank)}" if rank else "cuda"


def resolve_dtype(name: str, device) -> str:
    """auto: bf16 on a CUDA GPU that has it (fp16 overflows more easily in the VAE), else fp16; fp32 on the CPU."""
    if name != "auto":
        return name
    if torch.device(device).type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def load_model(cfg: ModelSource, scratch: str | Path | None = None):
    """The backbone of ``cfg`` on its device in its dtype (the noise schedule stays fp32), in eval mode. The tiny
    model writes its tokenizer into ``scratch/.tiny_tokenizer`` (the command's output folder; default: a new
    temporary folder)."""
    from train.dynamicrafter.config import load_config

    device = resolve_device(cfg.device)
    if cfg.tiny:
        from train.dynamicrafter.tiny import build_tiny_model

        scratch = Path(scratch) if scratch is not None else Path(tempfile.mkdtemp(prefix="realcam_tiny_"))
        backbone = load_config(cfg.config or "tiny")
        model = build_tiny_model(scratch / ".tiny_tokenizer", seed=cfg.tiny_seed, config=backbone)
    else:
        if not cfg.checkpoint:
            raise SystemExit("give --checkpoint (or --tiny for the random test model)")
        from train.dynamicrafter.conditioning import Tokenizer
        from train.dynamicrafter.model import load_dynamicrafter

        backbone = load_config(cfg.config) if cfg.config else None
        tok = None
        if cfg.tokenizer:
            tok = Tokenizer(cfg.tokenizer, (backbone.text_encoder.context_length if backbone else 77))
        model = load_dynamicrafter(cfg.checkpoint, config=backbone, tokenizer=tok)
    model.to(device, DTYPES[resolve_dtype(cfg.dtype, device)])
    model.schedule.float()
    return model.eval()


def load_plugin(model, cfg: ModelSource):
    """The camera plug-in of ``cfg.plugin`` on ``model`` (None without one: the backbone alone)."""
    if not cfg.plugin:
        return None
    from train.inference.plugin import load_camera_plugin

    return load_camera_plugin(model, cfg.plugin)
