"""Convert an official DynamiCrafter checkpoint into one safetensors file per component.

    python -m train.convert pretrained_models/DynamiCrafter_512/model.ckpt out/dynamicrafter_512 [--backbone 512]

Writes OUT/{unet,image_proj_model,vae,text_encoder,image_encoder}.safetensors (native names: the UNet and
Resampler keep the checkpoint names, the VAE uses diffusers names, the CLIP towers transformers names) and
OUT/config.yaml. `train.dynamicrafter.load_dynamicrafter(OUT)` loads the folder back strictly.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from train.dynamicrafter.checkpoint import StateDictMismatchError
from train.dynamicrafter.diffusion import DiffusionSchedule
from train.dynamicrafter.model import load_dynamicrafter, save_components


@dataclass
class ConvertConfig:
    checkpoint: str  # model.ckpt (state_dict / DeepSpeed module) or .safetensors
    out: str  # output folder
    config: str | None = None  # backbone preset (tiny/256/512/1024) or YAML (null: detected)
    dtype: Literal["float32", "float16", "bfloat16"] | None = None  # cast weights (null: as stored)
    unsafe_pickle: bool = False  # allow full unpickling (trusted files only)


def main(cfg: ConvertConfig) -> list[Path]:
    """Load the checkpoint strictly (:class:`StateDictMismatchError` when it does not fit the config) and write
    one safetensors file per component and config.yaml; the written paths."""
    dtype = getattr(torch, cfg.dtype) if cfg.dtype else None
    model = load_dynamicrafter(cfg.checkpoint, cfg.config, dtype=dtype, unsafe_pickle=cfg.unsafe_pickle)
    # The schedule is not written: it is rebuilt from the config, so it must agree with the checkpoint's.
    fresh = DiffusionSchedule(model.cfg.diffusion).state_dict()
    for name, value in model.schedule.state_dict().items():
        if not torch.allclose(value, fresh[name], rtol=1e-4, atol=1e-6, equal_nan=True):
            print(f"warning: checkpoint buffer {name!r} differs from the {model.cfg.name} schedule", file=sys.stderr)
    return list(save_components(model, cfg.out))


def _run(cfg: ConvertConfig, args) -> int:
    try:
        paths = main(cfg)
    except StateDictMismatchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


def command():
    from annotate.command import Command

    from .command_line import BACKBONE_FLAG, preset_reader

    return Command(ConvertConfig, _run, "python -m train.convert", __doc__.split("\n")[1],
                   positionals=("checkpoint", "out"),
                   flags={BACKBONE_FLAG: "config", "--dtype": "dtype", "--unsafe-pickle": "unsafe_pickle"},
                   load_preset=preset_reader("python -m train.convert"))


def cli(argv: list[str] | None = None) -> int:
    return command().main(argv)


if __name__ == "__main__":
    sys.exit(cli())
