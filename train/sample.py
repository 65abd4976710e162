"""Camera-controlled image-to-video inference: ``python -m train.sample``.

    python -m train.sample --image room.jpg --trajectory orbit:angle=20 --prompt "a living room" \\
        --checkpoint pretrained/DynamiCrafter/model.ckpt --plugin runs/realcam --out outputs/sample \\
        [--noise-shaping] [--loop] [--last-image end.jpg] [--continue-from outputs/prev --num-overlap 4]

Trajectories: a preset (dolly, truck, pedestal, pan, tilt, orbit, zoom with ``:key=value`` parameters, metres
and degrees; see train/inference/trajectory.py), a JSON keyframe file or a RealEstate10K camera file. A camera
file is in RealEstate10K's relative units: give ``--annotations OUT`` (the annotation folder: the clip's metric
``c2w_metric``, clip = the file's stem) or ``--trajectory-scale S`` (metres per unit); a metric plug-in (trained
on metric cameras) refuses a camera file without either. ``--frame-stride`` (default: 8, the paper's test
stride) picks every n-th line of a camera file; the fs embedding follows it (``fs_embedding``) unless ``--fs``.
A plug-in samples only in the concatenation modes it was trained with (``--allow-untrained-mode`` overrides).
The image is resized keeping its aspect ratio and centre-cropped to the model size; intrinsics default to the
reference's rule for user images (f = 0.5 * max(resized H, W), centred principal point) or are given
normalised (RealEstate10K convention) with ``--intrinsics``. Depth: Depth Anything V2 metric (``--depth-model``,
hub id or local folder) or a file (``--depth-file`` .npy/.npz ``depth``, metres, image or model size).
Without ``--plugin`` the backbone runs without camera control (the preview and noise shaping still follow the
trajectory). ``--tiny`` uses the random tiny test model (no checkpoint).

Writes to ``--out``: video.mp4, preview.mp4, mask.png, trajectory.txt (RealEstate10K), settings.json.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from annotate.camera import w2c_to_c2w
from train.inference.model import ModelSource, command_flags, load_model, load_plugin

log = logging.getLogger("realcam.inference")


@dataclass
class SampleConfig:
    """One sampling run: its inputs, model, camera and scene, sampling and mode (the options of the same names)."""

    out: str  # output folder
    image: str | None = None  # condition image (any size); not needed with --continue-from
    trajectory: str = "dolly:distance=0.5"  # preset spec (see the presets above), keyframe .json or RealEstate10K .txt
    prompt: str = ""  # text prompt
    fps: float = 8.0  # fps of the written videos
    model: ModelSource = field(default_factory=ModelSource)  # the backbone and plug-in (train/inference/model.py)
    intrinsics: str | None = None  # normalised fx,fy,cx,cy of the input image (RealEstate10K convention)
    depth_model: str | None = None  # Depth Anything V2 metric hub id or folder (null: annotate.depth.DEFAULT_MODEL)
    depth_file: str | None = None  # .npy or .npz (array 'depth') metric depth of the image
    trace_scale: float = 1.0  # multiply translations
    annotations: str | None = None  # annotation folder: a camera file takes its clip's metric c2w_metric
    trajectory_scale: float | None = None  # metres per unit of a RealEstate10K camera file (instead of --annotations)
    loop: bool = False  # out-and-back trajectory, last frame = the image
    ease: bool = False  # ease in/out the keyframe timing
    point_size: int = 2  # splat size of the preview's points (pixels)
    outlier_removal: bool = True  # drop depth outliers from the point cloud
    seed: int = 12333  # sampling seed
    steps: int = 25  # DDIM steps
    cfg: float = 7.5  # classifier-free guidance scale
    guidance_rescale: float = 0.7  # CFG rescale (0 = off)
    eta: float = 1.0  # DDIM eta (0 = deterministic)
    spacing: Literal["uniform", "uniform_trailing"] = "uniform_trailing"  # DDIM timestep spacing
    frame_stride: int | None = None  # video frames (camera-file lines) between generated frames (null: the model's, 8)
    fs: int | None = None  # fs/fps embedding value (null: from the stride, as the backbone was trained)
    progress: bool = True  # DDIM progress bar
    frames: int | None = None  # frames to generate (null: the model's)
    height: int | None = None  # video height (null: the model's)
    width: int | None = None  # video width (null: the model's)
    noise_shaping: bool = False  # scene-constrained noise shaping of the first steps from the depth preview
    shaping_threshold: int = 900  # shape the noise while t >= this
    erosion_kernel: int = 5  # erosion of the preview's valid mask (pixels)
    mask_binarize: float = 0.9  # latent mask threshold
    last_image: str | None = None  # interpolation: the last frame's image
    continue_from: str | None = None  # continuation: a previous output folder (video.mp4 + trajectory.txt) or an mp4
    num_overlap: int = 4  # continuation: overlapping (latent) frames
    allow_untrained_mode: bool = False  # sample in a concatenation mode the plug-in was not trained with


def trajectory_help() -> str:
    """The presets section of train/inference/trajectory.py's docstring (their one description)."""
    from train.inference import trajectory

    doc = trajectory.__doc__ or ""
    start = doc.find("Presets (")
    end = doc.find("JSON keyframes:", start)
    if start < 0 or end < start:
        return f"trajectory presets: {', '.join(trajectory.PRESETS)} (see train/inference/trajectory.py)"
    return "trajectory p" + doc[start + 1:end].strip().replace("``", "") + "\n"


def camera_units(args, plugin) -> str:
    """How a RealEstate10K camera file becomes metres, or a refusal that explains the choice."""
    from train.inference.plugin import is_metric
    from train.inference.trajectory import is_camera_file

    if not is_camera_file(args.trajectory):
        if args.annotations or args.trajectory_scale is not None:
            raise SystemExit("--annotations / --trajectory-scale apply to a RealEstate10K camera file only; "
                             f"{args.trajectory!r} is a preset or keyframe file (already in metres)")
        return "metres"
    if args.annotations and args.trajectory_scale is not None:
        raise SystemExit("give --annotations or --trajectory-scale, not both")
    if args.annotations:
        return "metres (annotated c2w_metric)"
    if args.trajectory_scale is not None:
        return f"metres (x {args.trajectory_scale} per unit)"
    if plugin is not None and is_metric(plugin):
        raise SystemExit(
            f"{args.trajectory} is a RealEstate10K camera file in relative units, but the plug-in "
            f"{plugin.source} was trained on metric cameras (scale_source={plugin.scale_source}): give "
            "--annotations OUT (the annotation folder; its c2w_metric of this clip) or --trajectory-scale S "
            "(metres per unit), or --trajectory-scale 1 to use the file's units as metres on purpose")
    return "relative (file units)"


def main(cfg: SampleConfig) -> dict:
    """Preflight (every problem of the inputs, before any model loads and before ``out`` is written: a
    :class:`annotate.preflight.PreflightError`), then sample and write the outputs; the paths, the pipeline's
    result and the settings."""
    from annotate.re10k import read_camera_file
    from annotate.video import read_frames
    from train.inference.outputs import write_outputs
    from train.inference.pipeline import Pipeline, SampleOptions
    from train.inference.scene import load_image, read_depth_file, resize_crop, user_intrinsics
    from train.inference.trajectory import continuation_trajectory, load_trajectory
    from train.preflight import check_sample

    check_sample(cfg).raise_if_any()  # before any model loads (minutes) and before --out is written
    t0 = time.time()
    model = load_model(cfg.model, cfg.out)
    s = model.cfg.sampling
    hw = (cfg.height or s.height, cfg.width or s.width)
    frames = cfg.frames or s.frames
    from train.inference.pipeline import default_frame_stride

    stride = cfg.frame_stride or default_frame_stride(model.cfg)
    plugin = load_plugin(model, cfg.model)
    if plugin is not None:
        log.info("camera plug-in %s (%s; modes %s; cameras %s)", plugin.source, plugin.kind,
                 ",".join(plugin.modes), plugin.scale_source)
    else:
        log.warning("no --plugin: the backbone runs without camera control")
    units = camera_units(cfg, plugin)

    # ---- condition image(s)
    overlap = None
    prev_c2w = None
    if cfg.continue_from:
        src = Path(cfg.continue_from)
        video_path = src / "video.mp4" if src.is_dir() else src
        prev = np.stack([resize_crop(f, hw)[0] for f in read_frames(video_path)])
        if not 0 < cfg.num_overlap < min(frames, len(prev) + 1):
            raise SystemExit(f"--num-overlap must be in 1..{min(frames - 1, len(prev))}")
        overlap = prev[-cfg.num_overlap:]
        image0 = overlap[0]
        image, plan = resize_crop(image0, hw)
        if src.is_dir() and (src / "trajectory.txt").exists():
            prev_c2w = w2c_to_c2w(read_camera_file(src / "trajectory.txt").w2c)
            prev_c2w[:, :3, 3] /= cfg.trace_scale  # the file holds scaled poses; scaling is applied again below
        else:
            log.warning("continuation without the previous trajectory.txt: the overlap frames get the poses of "
                        "the given trajectory")
    else:
        if not cfg.image:
            raise SystemExit("give --image (or --continue-from)")
        image0 = load_image(cfg.image)
        image, plan = resize_crop(image0, hw)
    if cfg.intrinsics:
        intr = plan.intrinsics(np.array([float(v) for v in cfg.intrinsics.split(",")], np.float64))
    else:
        intr = user_intrinsics(plan)
    last = resize_crop(load_image(cfg.last_image), hw)[0] if cfg.last_image else None

    # ---- depth
    depth = None
    predictor = None
    if cfg.depth_file:
        try:
            depth = read_depth_file(cfg.depth_file, image0.shape[:2], plan, hw)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
    else:
        from annotate.depth import DEFAULT_MODEL, DepthAnythingPredictor, DepthConfig

        dev = "cuda" if model.device.type == "cuda" else "cpu"
        predictor = DepthAnythingPredictor(DepthConfig(model=cfg.depth_model or DEFAULT_MODEL, device=dev))
        depth = predictor.predict(image[None])[0]
    centre = depth[hw[0] // 4: 3 * hw[0] // 4, hw[1] // 4: 3 * hw[1] // 4]
    scene_depth = float(np.median(centre[np.isfinite(centre) & (centre > 0)])) if centre.size else None

    # ---- trajectory
    try:
        traj = load_trajectory(cfg.trajectory, frames, intr, hw, stride=stride, loop=cfg.loop,
                               ease=cfg.ease or None, scene_depth=scene_depth, annotations=cfg.annotations,
                               trajectory_scale=cfg.trajectory_scale)
    except ValueError as e:
        raise SystemExit(f"{cfg.trajectory}: {e}") from None
    if overlap is not None and prev_c2w is not None:
        traj = continuation_trajectory(prev_c2w, len(overlap), traj)

    mode = "continue" if overlap is not None else "interp" if last is not None else "loop" if cfg.loop else "plain"
    opts = SampleOptions(prompt=cfg.prompt, seed=cfg.seed, steps=cfg.steps, cfg_scale=cfg.cfg,
                         guidance_rescale=cfg.guidance_rescale, eta=cfg.eta, spacing=cfg.spacing,
                         frame_stride=stride, fs=cfg.fs, trace_scale=cfg.trace_scale,
                         noise_shaping=cfg.noise_shaping, shaping_threshold=cfg.shaping_threshold,
                         erosion_kernel=cfg.erosion_kernel, mask_binarize=cfg.mask_binarize,
                         point_size=cfg.point_size, outlier_removal=cfg.outlier_removal, mode=mode,
                         allow_untrained_mode=cfg.allow_untrained_mode, progress=cfg.progress)
    from train.camera.modes import UntrainedModeError

    try:
        result = Pipeline(model, plugin).generate(image, intr, traj, opts, depth=depth, last_image=last,
                                                  overlap_frames=overlap)
    except UntrainedModeError as e:
        raise SystemExit(str(e)) from None
    settings = {
        "options": opts.to_dict(),
        "inputs": {"image": cfg.image, "last_image": cfg.last_image, "continue_from": cfg.continue_from,
                   "num_overlap": len(overlap) if overlap is not None else 0, "trajectory": cfg.trajectory,
                   "loop": cfg.loop, "ease": cfg.ease, "annotations": cfg.annotations,
                   "trajectory_scale": cfg.trajectory_scale, "trajectory_units": units, "frame_stride": stride},
        "model": {"checkpoint": cfg.model.checkpoint, "tiny": cfg.model.tiny, "config": model.cfg.name,
                  "plugin": getattr(plugin, "source", None), "plugin_kind": getattr(plugin, "kind", None),
                  "plugin_modes": list(getattr(plugin, "modes", []) or []),
                  "plugin_scale_source": getattr(plugin, "scale_source", None),
                  "device": str(model.device), "dtype": str(model.dtype).replace("torch.", "")},
        "image": {"size_hw": list(hw), "source_hw": list(image0.shape[:2]), "resized_hw": list(plan.resized_hw),
                  "crop_top_left": [plan.top, plan.left], "intrinsics_px": intr.tolist()},
        "depth": {"file": cfg.depth_file, "model": None if cfg.depth_file else (cfg.depth_model or "default"),
                  "scene_depth_m": scene_depth, "points": result.cloud_size},
        "frames": frames, "fps": cfg.fps, "seconds": round(time.time() - t0, 2),
        "command": command().command_line(cfg),
    }
    paths = write_outputs(cfg.out, result, intr, hw, settings, stride=stride, fps=cfg.fps)
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return {"paths": paths, "result": result, "settings": settings}


def command():
    from annotate.command import Command

    from .command_line import preset_reader

    flags = command_flags(SampleConfig)  # the model's: --checkpoint, --backbone, ... (model.*)
    return Command(SampleConfig, lambda cfg, args: main(cfg), "python -m train.sample",
                   __doc__.split("\n\n")[0] + "\n\n" + trajectory_help(),
                   flags=flags, presets="YAML preset of this command's keys (below), e.g. a --print-config output",
                   load_preset=preset_reader("python -m train.sample"), print_result=False,
                   log_level=logging.INFO)  # the run's steps at info, as always


def cli(argv: list[str] | None = None) -> int:
    return command().main(argv)


if __name__ == "__main__":
    sys.exit(cli())
