"""Preflight of ``python -m train`` and ``python -m train.sample``: every input exists with the expected kind,
the arguments parse and the launch matches the config, checked before any model, DeepSpeed or process group
starts and before anything is written (see annotate/preflight.py). ``make check-assets`` runs the trainer's
alone.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from annotate.config import ConfigError
from annotate.preflight import (
    Problems,
    need_annotation_dir,
    need_depth_model,
    need_file,
    need_folder,
    need_manifest,
    need_output_folder,
    need_tokenizer,
)

if TYPE_CHECKING:
    from train.inference.model import ModelSource

CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".safetensors")
ASSETS = "train/assets.md"
# Set by accelerate launch / torchrun in every process they start.
LAUNCH_VARS = ("WORLD_SIZE", "LOCAL_RANK")
ACCELERATE_8XH100 = "train/configs/accelerate_8xh100.yaml"


def launched() -> bool:
    return any(v in os.environ for v in LAUNCH_VARS)


def check_checkpoint(problems: Problems, path: str, key: str) -> bool:
    """The official DynamiCrafter checkpoint file or a ``python -m train.convert`` folder."""
    from train.dynamicrafter.checkpoint import COMPONENTS

    fix = (f"download the official checkpoint ({ASSETS}: huggingface-cli download Doubiiu/DynamiCrafter model.ckpt "
           "--local-dir pretrained/DynamiCrafter) or give a folder written by python -m train.convert")
    p = Path(path)
    if p.is_dir():
        return need_folder(problems, p, key, fix, contains=("config.yaml",)
                           + tuple(f"{c}.safetensors" for c in COMPONENTS))
    return need_file(problems, p, key, fix, CHECKPOINT_SUFFIXES)


def check_model_options(pb: Problems, model: ModelSource) -> None:
    """The model options that sampling commands share (train.sample, the editor, eval generate): --tiny or a
    checkpoint (with a tokenizer unless it is a converted folder), a backbone preset, a plug-in."""
    if model.tiny:
        pass
    elif not model.checkpoint:
        pb.add("no --checkpoint", f"give --checkpoint pretrained/DynamiCrafter/model.ckpt ({ASSETS}) or --tiny "
               "for the random test model")
    else:
        check_checkpoint(pb, model.checkpoint, "--checkpoint")
        if not model.tokenizer and not Path(model.checkpoint).is_dir():
            pb.add("no --tokenizer: the backbone's text encoder needs the CLIP tokenizer",
                   f"give --tokenizer pretrained/open_clip_tokenizer ({ASSETS}, 'CLIP tokenizer')")
    if model.tokenizer:
        need_tokenizer(pb, model.tokenizer, "--tokenizer")
    if model.config:
        check_backbone_preset(pb, model.config, "--backbone")
    if model.plugin and not Path(model.plugin).exists():
        pb.add(f"--plugin {model.plugin!r}: no such file or folder",
               "give plugin.safetensors, a checkpoint folder or a run folder of python -m train")


def check_backbone_preset(problems: Problems, preset: str, key: str) -> bool:
    from train.dynamicrafter.config import PRESET_DIR

    if Path(preset).suffix:
        return need_file(problems, preset, key, "give a backbone YAML or a preset name")
    if not (PRESET_DIR / f"{preset}.yaml").is_file():
        names = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        problems.add(f"{key}={preset!r} is not a backbone preset", f"choose from {', '.join(names)} or give a YAML")
        return False
    return True


def launch_command(config_path: str | None, overrides: list[str] | None = None) -> str:
    """The ``accelerate launch`` command line of a multi-GPU preset (what ``make train`` runs)."""
    return " ".join(["accelerate launch --config_file", ACCELERATE_8XH100, "-m train --config",
                     shlex.quote(config_path or "CONFIG"), *map(shlex.quote, overrides or [])])


def check_train(cfg, config_path: str | None = None, overrides: list[str] | None = None,
                launch: bool = True) -> Problems:
    """Every problem of a trainer config that would stop the run later (``cfg`` is a checked TrainConfig);
    ``launch=False`` (``--check`` on a login node) leaves out the launch: accelerate launch and the GPU."""
    from train.run_folder import resolve_resume

    pb = Problems("python -m train")
    d, m, r = cfg.data, cfg.model, cfg.run
    need_annotation_dir(pb, d.annotation_dir, "data.annotation_dir")
    need_manifest(pb, d.manifest, "data.manifest")
    if d.captions:
        need_file(pb, d.captions, "data.captions", f"captions of the clips ({ASSETS}, 'captions'), or "
                  "data.captions='' to train with empty prompts", (".csv", ".json"))
    check_backbone_preset(pb, m.preset, "model.preset")
    tiny = Path(m.preset).stem.endswith("tiny")
    if m.checkpoint:
        check_checkpoint(pb, m.checkpoint, "model.checkpoint")
    if m.tokenizer:
        need_tokenizer(pb, m.tokenizer, "model.tokenizer")
    elif not tiny and not Path(m.checkpoint).is_dir():
        pb.add(f"model.tokenizer is empty, but the {m.preset} backbone's text encoder needs the CLIP tokenizer",
               f"model.tokenizer=pretrained/open_clip_tokenizer after downloading it ({ASSETS}, 'CLIP tokenizer')")
    need_output_folder(pb, r.output_dir, "run.output_dir")
    if r.deepspeed:
        if need_file(pb, r.deepspeed, "run.deepspeed", "give the DeepSpeed JSON (train/configs/deepspeed_zero1.json) "
                     "or run.deepspeed='' for plain DDP / one process", (".json",)) and launch and not launched():
            cmd = launch_command(config_path, overrides)
            pb.add(f"run.deepspeed={r.deepspeed} is a multi-GPU DeepSpeed setup, but this process was not started "
                   "by accelerate launch (no WORLD_SIZE / LOCAL_RANK)",
                   f"launch it with `{cmd}` (= make train CONFIG={config_path or 'CONFIG'}), or add "
                   "run.deepspeed='' to train in this one process")
    if launch and r.mixed_precision == "fp16":
        import torch

        if not torch.cuda.is_available():
            pb.add("run.mixed_precision=fp16 needs a CUDA GPU and none is visible",
                   "run on a GPU node, or add run.mixed_precision=no (or bf16) to train on the CPU")
    try:
        resolve_resume(cfg)  # resume=none on a used folder, damaged checkpoints
    except ConfigError as e:
        pb.add(str(e))  # names its own fix
    return pb


# ------------------------------------------------------------------------------------------------ train.sample


def check_trajectory(pb: Problems, spec: str, frames: int, stride: int, loop: bool, annotations: str | None,
                     trajectory_scale: float | None, key: str = "--trajectory", parse: bool = True) -> None:
    """Parse the trajectory with the sampler's own loader (presets, keyframe JSON, camera files)."""
    from train.inference.trajectory import PRESETS, is_camera_file, load_trajectory

    p = Path(spec)
    if not p.exists() and (p.suffix.lower() in (".txt", ".json") or os.sep in spec):
        pb.add(f"{key} {spec!r}: no such file", f"give an existing camera/keyframe file or a preset "
               f"({', '.join(PRESETS)}, e.g. orbit:angle=20)")
        return
    if not is_camera_file(spec) and (annotations or trajectory_scale is not None):
        pb.add(f"--annotations / --trajectory-scale apply to a RealEstate10K camera file only; {spec!r} is a preset "
               "or keyframe file (already in metres)", "drop --annotations / --trajectory-scale")
        return
    if not parse:
        return
    intr = np.array([128.0, 128.0, 128.0, 128.0])  # any valid pinhole: only parsing is checked here
    try:
        load_trajectory(spec, max(2, frames), intr, (256, 256), stride=stride, loop=loop,
                        annotations=annotations, trajectory_scale=trajectory_scale)
    except (ValueError, KeyError, OSError) as e:
        pb.add(f"{key} {spec!r}: {e}", f"presets: {', '.join(PRESETS)} with :key=value parameters (see "
               "python -m train.sample --help), a keyframe .json or a RealEstate10K camera .txt")


def check_sample(args) -> Problems:
    """Every problem of a ``train.sample`` config (:class:`train.sample.SampleConfig`, its model in ``args.model``)
    that would otherwise show after loading the models."""
    pb = Problems("python -m train.sample")
    need_output_folder(pb, args.out, "--out")
    if args.continue_from:
        src = Path(args.continue_from)
        if src.is_dir():
            need_file(pb, src / "video.mp4", "--continue-from", "give a previous output folder of train.sample")
        else:
            need_file(pb, src, "--continue-from", "give a previous output folder or an mp4")
    elif not args.image:
        pb.add("no condition image", "give --image IMAGE (or --continue-from a previous output)")
    else:
        need_file(pb, args.image, "--image", "give an existing image file")
    if args.last_image:
        need_file(pb, args.last_image, "--last-image", "give an existing image file")
    if args.depth_file:
        need_file(pb, args.depth_file, "--depth-file", "a .npy or .npz (array 'depth') in metres", (".npy", ".npz"))
    else:
        need_depth_model(pb, args.depth_model, "--depth-model")
    check_model_options(pb, args.model)
    if args.annotations:
        need_annotation_dir(pb, args.annotations, "--annotations")
    if args.intrinsics:
        try:
            vals = [float(v) for v in args.intrinsics.split(",")]
            if len(vals) != 4 or min(vals) <= 0:
                raise ValueError
        except ValueError:
            pb.add(f"--intrinsics {args.intrinsics!r} is not four positive numbers",
                   "give normalised fx,fy,cx,cy, e.g. 0.5,0.89,0.5,0.5")
    if args.annotations and args.trajectory_scale is not None:
        pb.add("both --annotations and --trajectory-scale given", "give one of them")
    else:  # a camera file with an unusable annotation folder is reported above, not parsed again here
        check_trajectory(pb, args.trajectory, args.frames or 16, args.frame_stride or 8, args.loop,
                         args.annotations, args.trajectory_scale,
                         parse=not args.annotations or Path(args.annotations, "clips").is_dir())
    return pb
