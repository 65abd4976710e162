"""Building the models of a run from its TrainConfig: the DynamiCrafter backbone (``model``), frozen, and the
camera plug-in on its UNet (``camera``). The trainer and the inference loader (train/inference/plugin.py) share
it, so the loader does not import the trainer.
"""

from __future__ import annotations

from pathlib import Path

import torch

from annotate.log import get_logger

from .config import CameraConfig, TrainConfig

log = get_logger("train")


def build_backbone(cfg: TrainConfig, scratch: Path):
    from .dynamicrafter import config as dcfg
    from .dynamicrafter.conditioning import Tokenizer
    from .dynamicrafter.model import DynamiCrafter, load_dynamicrafter
    from .dynamicrafter.tiny import build_tiny_model

    mcfg = dcfg.load_config(cfg.model.preset)
    mcfg.unet.use_checkpoint = cfg.model.gradient_checkpointing
    if cfg.model.checkpoint:
        tok = Tokenizer(cfg.model.tokenizer, mcfg.text_encoder.context_length) if cfg.model.tokenizer else None
        return load_dynamicrafter(cfg.model.checkpoint, config=mcfg, tokenizer=tok)
    if mcfg.name.endswith("tiny") and not cfg.model.tokenizer:
        return build_tiny_model(scratch / "tokenizer", seed=cfg.run.seed % (2**31), config=mcfg)
    log.warning("model.checkpoint is empty: random backbone weights")
    if cfg.model.tokenizer:
        mcfg.text_encoder.tokenizer_path = cfg.model.tokenizer
    return DynamiCrafter(mcfg).eval()


def freeze(backbone: torch.nn.Module) -> None:
    backbone.requires_grad_(False)
    backbone.eval()


def dropout_off(module: torch.nn.Module) -> None:
    """Frozen backbone: no dropout, but keep `training` on the blocks so gradient checkpointing stays active."""
    for m in module.modules():
        if isinstance(m, torch.nn.Dropout):
            m.eval()


def build_plugin(backbone, camera: CameraConfig):
    """A fresh camera plug-in attached to ``backbone.unet`` (its attn1_adapter hooks)."""
    from .camera import CameraPlugin

    return CameraPlugin(backbone.unet, camera)
