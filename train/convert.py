"""Convert an official DynamiCrafter checkpoint into one safetensors file per component.

    python -m train.convert pretrained_models/DynamiCrafter_512/model.ckpt out/dynamicrafter_512 [--config 512]

Writes OUT/{unet,image_proj_model,vae,text_encoder,image_encoder}.safetensors (native names: the UNet and
Resampler keep the checkpoint names, the VAE uses diffusers names, the CLIP towers transformers names) and
OUT/config.yaml. `train.dynamicrafter.load_dynamicrafter(OUT)` loads the folder back strictly.
"""

from __future__ import annotations

import argparse
import sys

import torch

from train.dynamicrafter.checkpoint import StateDictMismatchError
from train.dynamicrafter.diffusion import DiffusionSchedule
from train.dynamicrafter.model import load_dynamicrafter, save_components


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.convert", description=__doc__.split("\n")[1])
    parser.add_argument("checkpoint", help="model.ckpt (state_dict / DeepSpeed module) or .safetensors")
    parser.add_argument("out", help="output folder")
    parser.add_argument("--config", default=None, help="preset (tiny/256/512/1024) or YAML; default: detected")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None, help="cast weights")
    parser.add_argument("--unsafe-pickle", action="store_true", help="allow full unpickling (trusted files only)")
    args = parser.parse_args(argv)

    dtype = getattr(torch, args.dtype) if args.dtype else None
    try:
        model = load_dynamicrafter(args.checkpoint, args.config, dtype=dtype, unsafe_pickle=args.unsafe_pickle)
    except StateDictMismatchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    # The schedule is not written: it is rebuilt from the config, so it must agree with the checkpoint's.
    fresh = DiffusionSchedule(model.cfg.diffusion).state_dict()
    for name, value in model.schedule.state_dict().items():
        if not torch.allclose(value, fresh[name], rtol=1e-4, atol=1e-6, equal_nan=True):
            print(f"warning: checkpoint buffer {name!r} differs from the {model.cfg.name} schedule", file=sys.stderr)
    for path in save_components(model, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
