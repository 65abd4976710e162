"""Generate the evaluation set: ``python -m eval generate`` writes what ``python -m eval run`` reads.

    python -m eval generate --checkpoint pretrained/DynamiCrafter/model.ckpt --plugin runs/realcam256 \\
        --annotations outputs/re10k_annotation --manifest data/re10k/manifest.csv --out results/realcam256/exp

The paper's protocol (the authors' ``main/trainer.py --test``) by default: the test split, its first ``--limit``
(1000) clips in a stable order (sorted clip ids) or the clips listed in ``--clips``, 16 frames at stride 8 from
frame 0, condition
frame 0, 256x256, 25 DDIM steps (uniform_trailing, eta 1), CFG 7.5 with guidance rescale 0.7, camera CFG 1.0
(off), and noise shaping at t >= 900 for RealCam plug-ins (``004_realcam-i2v_paste900``). The cameras are the
clip's, relative to frame 0, in the units the plug-in was trained on (metres for RealCam: the condition frame's
scale, train/data.py; RealEstate10K units for the baselines).

Output folder (matched by clip id)::

    OUT/samples/<clip>.mp4      generated video
    OUT/gt_video/<clip>.mp4     the ground-truth frames at the model size
    OUT/camera_data/<clip>.txt  the reference's 18-column rows: fx fy cx cy (pixels), 0 0, 12 w2c values
    OUT/generate.json           the settings of the run

Each file is written under a temporary name and renamed, camera_data last, so a clip counts as done only when
all three exist: a rerun skips finished clips (resumable). Clips are generated ``--batch-size`` at a time. Under
``accelerate launch`` (or torchrun) every process takes the clips ``rank::world_size``. ``--tiny`` runs the random
tiny backbone with a fresh (identity) RealCam plug-in at the tiny model's size and the manifest's depth maps,
for CI and smoke runs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from annotate.camera import ResizeCrop
from annotate.command import Command
from annotate.files import atomic_write_text
from annotate.re10k import write_camera_data_file
from annotate.video import write_video
from eval.log import logger, progress
from train.inference.model import ModelSource, command_flags

SUBDIRS = ("samples", "gt_video", "camera_data")


@dataclass
class GenerateConfig:
    out_dir: str  # experiment folder (what `eval run` reads)
    annotation_dir: str  # annotation folder (clips/*.parquet)
    manifest: str  # the annotation job's manifest (clip_id -> video_path)
    # the backbone and plug-in (train/inference/model.py); eval's difference: with tiny and no plugin, a fresh
    # (identity) RealCam plug-in at the tiny model's size instead of the backbone alone
    model: ModelSource = field(default_factory=ModelSource)
    split: str = "test"  # split of the annotation folder to evaluate
    limit: int = 1000  # first N clips in sorted order (0 = all)
    clips: str = ""  # file with clip ids, one per line (that order); overrides the sorted order
    captions: str = ""  # CSV or JSON as train/data.py reads
    frames: int = 16  # frames per video
    stride: int = 8  # frame stride of the ground-truth clip
    height: int | None = None  # None: 256 (tiny: the tiny model's size)
    width: int | None = None  # None: 256 (tiny: the tiny model's size)
    steps: int | None = None  # DDIM steps; None: 25 (tiny: the tiny model's)
    cfg_scale: float = 7.5  # classifier-free guidance scale
    guidance_rescale: float = 0.7  # CFG rescale
    camera_cfg: float = 1.0  # camera CFG (only 1.0, the paper's, is implemented)
    eta: float = 1.0  # DDIM eta
    spacing: Literal["uniform", "uniform_trailing"] = "uniform_trailing"  # DDIM timestep spacing
    noise_shaping: Literal["auto", "on", "off"] = "auto"  # auto: on for RealCam plug-ins
    shaping_threshold: int = 900  # shape the noise while t >= this
    depth: Literal["auto", "model", "manifest"] = "auto"  # noise shaping's depth (auto: manifest with tiny, else model)
    depth_model: str = ""  # Depth Anything V2 metric hub id or folder ("" = annotate.depth.DEFAULT_MODEL)
    batch_size: int = 4  # clips per DDIM run
    seed: int = 12333  # sampling seed
    fps: float = 8.0  # fps of the written videos
    show_progress: bool = True  # progress bar


# ------------------------------------------------------------------------------------------------ setup


def shard() -> tuple[int, int]:
    """(rank, world size) from accelerate launch / torchrun's environment; (0, 1) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def select_clips(ids: list[str], cfg: GenerateConfig) -> list[str]:
    """Sorted ids (or the --clips list, in its order), cut to --limit."""
    if cfg.clips:
        wanted = [line.strip() for line in Path(cfg.clips).read_text().splitlines() if line.strip()]
        have = set(ids)
        missing = [c for c in wanted if c not in have]
        if missing:
            raise ValueError(f"{cfg.clips}: {len(missing)} clip(s) not kept in split {cfg.split!r} of "
                             f"{cfg.annotation_dir}, e.g. {missing[:3]}")
        ids = wanted
    else:
        ids = sorted(ids)
    return ids[: cfg.limit] if cfg.limit else ids


def is_done(out: Path, name: str) -> bool:
    return all((out / sub / f"{name}{ext}").is_file() for sub, ext in zip(SUBDIRS, (".mp4", ".mp4", ".txt")))


def _load_model_and_plugin(cfg: GenerateConfig):
    """train.sample's model and plug-in (device auto: this process's GPU under accelerate launch / torchrun);
    with tiny and no plug-in a fresh RealCam one."""
    from train.inference.model import load_model, load_plugin

    model = load_model(cfg.model, cfg.out_dir)
    plugin = load_plugin(model, cfg.model)
    if plugin is None and cfg.model.tiny:  # zero-initialised: the backbone's output, through every code path
        from train.camera import CameraPlugin
        from train.config import CameraConfig

        plugin = CameraPlugin(model.unet, CameraConfig(kind="realcam")).to(model.device, model.dtype).eval()
        plugin.requires_grad_(False)
        plugin.source, plugin.modes, plugin.scale_source = "fresh tiny plug-in", ("basic",), "condition_frame"
    return model, plugin


def _depth_source(cfg: GenerateConfig, model):
    mode = cfg.depth if cfg.depth != "auto" else ("manifest" if cfg.model.tiny else "model")
    if mode not in ("model", "manifest"):
        raise ValueError(f"--depth must be model, manifest or auto, got {cfg.depth!r}")
    if mode == "manifest":
        return mode, None
    from annotate.depth import DEFAULT_MODEL, DepthAnythingPredictor, DepthConfig

    return mode, DepthAnythingPredictor(DepthConfig(model=cfg.depth_model or DEFAULT_MODEL, device=str(model.device)))


def _manifest_depth(clip: dict, frame: int, hw: tuple[int, int]) -> np.ndarray:
    """The manifest's depth map of one frame, resized (nearest) and centre-cropped like the frames."""
    from annotate.depth import PrecomputedDepth
    from annotate.images import resize_crop_map

    if not clip.get("depth_path"):
        raise ValueError(f"clip {clip['clip_id']}: the manifest has no depth_path (use --depth model)")
    src = PrecomputedDepth(clip["depth_path"], clip["num_frames"], unit=clip.get("depth_unit", ""))
    d = np.asarray(src.depth[frame], np.float32) * src.factor
    return resize_crop_map(d, ResizeCrop.plan(d.shape, hw))


# ------------------------------------------------------------------------------------------------ generation


@torch.no_grad()
def generate_batch(model, plugin, samples: list[dict], depths: list[np.ndarray | None], cfg: GenerateConfig,
                   shaping: bool, steps: int) -> list[np.ndarray]:
    """Videos (uint8 [F, H, W, 3]) of a batch of dataset samples, one DDIM run for the whole batch."""
    from train.inference.pipeline import fs_embedding, to_tensor, to_uint8
    from train.inference.scene import point_cloud, render_preview
    from train.inference.shaping import NoiseShaper, shaping_mask

    dev, dt = model.device, model.dtype
    b = len(samples)
    video = torch.stack([s["video"] for s in samples])  # [b, 3, F, H, W] in [-1, 1]
    _, _, f, h, w = video.shape
    gen = torch.Generator().manual_seed(cfg.seed)
    hook_gen = torch.Generator().manual_seed(cfg.seed + 1)
    enc_gen = torch.Generator().manual_seed(cfg.seed + 2)
    image = video[:, :, 0].to(dev, dt)
    cond, uncond = model.get_conditioning(image, [s["caption"] for s in samples], f, gen)
    lh, lw = cond["concat"].shape[-2:]
    kwargs = {}
    if plugin is not None:
        c2w = torch.stack([s["c2w"] for s in samples]).to(dev)
        intr = torch.stack([s["intrinsics"] for s in samples]).to(dev)
        kwargs["adapter_cond"] = plugin.condition(c2w, intr, (h, w), torch.Generator().manual_seed(cfg.seed))
    hook = None
    if shaping:
        previews, masks = [], []
        for s, depth in zip(samples, depths):
            img = to_uint8(s["video"][None, :, :1])[0]
            intr0 = s["intrinsics"][0].double().numpy()
            cloud = point_cloud(img, depth, intr0)
            prev = render_preview(cloud, s["c2w"].double().numpy(), s["intrinsics"].double().numpy(), (h, w))
            previews.append(prev)
            masks.append(shaping_mask(prev, (lh, lw))[1])
        z_prev = torch.cat([model.encode_first_stage(to_tensor(p, dev, dt), enc_gen).float() for p in previews])
        z_prev[:, :, 0] = cond["concat"][:, :, 0].float()  # latent frame 0 = the true latent of the image
        hook = NoiseShaper(model.schedule, z_prev, torch.stack(masks).to(dev), cfg.shaping_threshold, hook_gen)
    fs = torch.tensor([fs_embedding(model.cfg, int(s["stride"])) for s in samples], dtype=torch.long, device=dev)
    latents = model.denoise(cond, uncond, steps=steps, spacing=cfg.spacing, eta=cfg.eta, cfg_scale=cfg.cfg_scale,
                            guidance_rescale=cfg.guidance_rescale, fs=fs, generator=gen, x_t_hook=hook, **kwargs)
    out = model.decode_first_stage(latents.to(dt))
    return [to_uint8(out[i:i + 1]) for i in range(b)]


def run_generate(cfg: GenerateConfig) -> dict:
    """Generate every selected clip not already done; returns counts and the settings written."""
    from train.config import DataConfig
    from train.data import CameraVideoDataset, load_clips

    if cfg.camera_cfg != 1.0:
        raise ValueError("camera CFG other than 1.0 is not implemented (the paper's evaluation uses 1.0)")
    t0 = time.time()
    out = Path(cfg.out_dir)
    for sub in SUBDIRS:
        (out / sub).mkdir(parents=True, exist_ok=True)
    model, plugin = _load_model_and_plugin(cfg)
    s = model.cfg.sampling
    hw = (cfg.height or (s.height if cfg.model.tiny else 256), cfg.width or (s.width if cfg.model.tiny else 256))
    steps = cfg.steps or (s.steps if cfg.model.tiny else 25)
    scale_source = getattr(plugin, "scale_source", "relative") if plugin is not None else "relative"
    data = DataConfig(annotation_dir=cfg.annotation_dir, manifest=cfg.manifest, split=cfg.split, val_split=cfg.split,
                      captions=cfg.captions, frames=cfg.frames, height=hw[0], width=hw[1], val_stride=cfg.stride,
                      scale_source=scale_source, val_max_clips=0)
    clips = {c["clip_id"]: c for c in load_clips(data, cfg.split)}
    if not clips:
        raise ValueError(f"no kept clips of split {cfg.split!r} with >= {cfg.frames} frames in {cfg.annotation_dir}")
    chosen = select_clips(list(clips), cfg)
    rank, world = shard()
    mine = chosen[rank::world]
    todo = [c for c in mine if not is_done(out, c)]
    from annotate.manifest import read_manifest, resolve_path

    extra = {r["clip_id"]: r for r in read_manifest(cfg.manifest)[0]}
    base = Path(cfg.manifest).parent
    for c in todo:  # depth files of the manifest, resolved like the videos
        clips[c]["depth_path"] = resolve_path(extra.get(c, {}).get("depth_path"), base)
        clips[c]["depth_unit"] = extra.get(c, {}).get("depth_unit") or ""
    dataset = CameraVideoDataset(data, train=False, clips=[clips[c] for c in todo])
    kind = getattr(plugin, "kind", None)
    shaping = {"on": True, "off": False, "auto": kind == "realcam"}.get(cfg.noise_shaping)
    if shaping is None:
        raise ValueError(f"--noise-shaping must be auto, on or off, got {cfg.noise_shaping!r}")
    depth_mode, predictor = _depth_source(cfg, model) if shaping else ("none", None)
    settings = {"config": asdict(cfg), "resolved": {
        "height": hw[0], "width": hw[1], "steps": steps, "noise_shaping": shaping, "depth": depth_mode,
        "plugin": getattr(plugin, "source", None), "plugin_kind": kind,
        "plugin_modes": list(getattr(plugin, "modes", []) or []), "camera_units": scale_source,
        "backbone": model.cfg.name, "dtype": str(model.dtype).replace("torch.", ""), "device": str(model.device),
        "clips_selected": len(chosen), "rank": rank, "world_size": world}}
    if rank == 0:
        atomic_write_text(out / "generate.json", json.dumps(settings, indent=1) + "\n")
    logger.info("%d clips selected, %d on this process, %d already done, %d to generate", len(chosen), len(mine),
                len(mine) - len(todo), len(todo))
    done = 0
    batches = [list(range(i, min(i + cfg.batch_size, len(todo)))) for i in range(0, len(todo), cfg.batch_size)]
    for batch in progress(batches, "generate", total=len(batches), enabled=cfg.show_progress):
        samples = [dataset[i] for i in batch]
        depths: list[np.ndarray | None] = [None] * len(samples)
        if shaping:
            for j, smp in enumerate(samples):
                if predictor is not None:
                    depths[j] = np.asarray(predictor.predict(_uint8_frame0(smp)[None])[0], np.float32)
                else:
                    depths[j] = _manifest_depth(clips[smp["clip_id"]], int(smp["frame_indices"][0]), hw)
        videos = generate_batch(model, plugin, samples, depths, cfg, shaping, steps)
        for smp, vid in zip(samples, videos):
            name = smp["clip_id"]
            gt = ((smp["video"].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy()
            write_video(out / "samples" / f"{name}.mp4", vid, fps=cfg.fps)  # atomic
            write_video(out / "gt_video" / f"{name}.mp4", gt, fps=cfg.fps)
            write_camera_data_file(out / "camera_data" / f"{name}.txt", smp["intrinsics"].double().numpy(),
                                   smp["c2w"].double().numpy())
            done += 1
    return {"selected": len(chosen), "this_process": len(mine), "skipped_done": len(mine) - len(todo),
            "generated": done, "seconds": round(time.time() - t0, 1), "out_dir": str(out)}


def _uint8_frame0(sample: dict) -> np.ndarray:
    return ((sample["video"][:, 0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


# ------------------------------------------------------------------------------------------------ command line

# The historical option names; every other field is --its-name. The backbone preset's option is
# --backbone (as train.sample): --config is every command's YAML preset of the config itself (annotate/command.py).
RENAMED = {"out_dir": "--out", "annotation_dir": "--annotations", "cfg_scale": "--cfg", "show_progress": "--progress"}
FLAGS = command_flags(GenerateConfig, RENAMED)  # the model's: --checkpoint, --backbone, ... (model.*)


def main(cfg: GenerateConfig) -> dict:
    """Preflight (before the model loads and before ``out_dir`` is created), then :func:`run_generate`."""
    from eval.preflight import check_generate

    check_generate(cfg).raise_if_any()
    return run_generate(cfg)


def command() -> Command:
    from eval.log import ERRORS, LOG_LEVEL
    from train.command_line import preset_reader

    return Command(GenerateConfig, lambda cfg, args: main(cfg), "python -m eval generate", __doc__.split("\n\n")[0],
                   flags=FLAGS, log_level=LOG_LEVEL, errors=ERRORS,
                   load_preset=preset_reader("python -m eval generate"))  # a backbone preset given to --config


def cli(argv: list[str] | None = None) -> int:
    return command().main(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(cli())
