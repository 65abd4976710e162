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

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from annotate.camera import w2c_to_c2w

log = logging.getLogger("realcam.inference")

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def build_parser() -> argparse.ArgumentParser:
    from annotate.config import HelpFormatter

    p = argparse.ArgumentParser(prog="python -m train.sample", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter, epilog=trajectory_help())
    io = p.add_argument_group("inputs and outputs")
    io.add_argument("--image", help="condition image (any size); not needed with --continue-from")
    io.add_argument("--trajectory", default="dolly:distance=0.5",
                    help="preset spec (see the presets below), keyframe .json or RealEstate10K .txt")
    io.add_argument("--prompt", default="", help="text prompt")
    io.add_argument("--out", required=True, help="output folder")
    io.add_argument("--fps", type=float, default=8.0, help="fps of the written videos")
    mdl = p.add_argument_group("model")
    mdl.add_argument("--checkpoint", help="DynamiCrafter model.ckpt / .safetensors / train.convert folder")
    mdl.add_argument("--config", help="backbone preset name or yaml (default: detected from the checkpoint)")
    mdl.add_argument("--tokenizer", help="CLIP tokenizer folder (vocab.json + merges.txt)")
    mdl.add_argument("--plugin", help="camera plug-in: plugin.safetensors, a checkpoint folder or a run folder")
    mdl.add_argument("--tiny", action="store_true", help="random tiny model (tests, smoke runs)")
    mdl.add_argument("--tiny-seed", type=int, default=0, help="seed of the random tiny model's weights")
    mdl.add_argument("--device", default="auto", help="auto: cuda when available, else cpu; or cpu, cuda:N")
    mdl.add_argument("--dtype", choices=("auto", *DTYPES), default="auto",
                     help="auto: bf16 on a CUDA GPU that supports it, else fp16 on CUDA, fp32 on the CPU")
    cam = p.add_argument_group("camera and scene")
    cam.add_argument("--intrinsics", help="normalised fx,fy,cx,cy of the input image (RealEstate10K convention)")
    cam.add_argument("--depth-model", default=None, help="Depth Anything V2 metric hub id or folder "
                     "(default: annotate.depth.DEFAULT_MODEL)")
    cam.add_argument("--depth-file", help=".npy or .npz (array 'depth') metric depth of the image")
    cam.add_argument("--trace-scale", type=float, default=1.0, help="multiply translations (default 1)")
    cam.add_argument("--annotations", help="annotation folder: a camera file takes its clip's metric c2w_metric")
    cam.add_argument("--trajectory-scale", type=float, default=None,
                     help="metres per unit of a RealEstate10K camera file (instead of --annotations)")
    cam.add_argument("--loop", action="store_true", help="out-and-back trajectory, last frame = the image")
    cam.add_argument("--ease", action="store_true", help="ease in/out the keyframe timing")
    cam.add_argument("--point-size", type=int, default=2, help="splat size of the preview's points (pixels)")
    cam.add_argument("--no-outlier-removal", action="store_true", help="keep depth outliers in the point cloud")
    smp = p.add_argument_group("sampling")
    smp.add_argument("--seed", type=int, default=12333, help="sampling seed")
    smp.add_argument("--steps", type=int, default=25, help="DDIM steps")
    smp.add_argument("--cfg", type=float, default=7.5, help="classifier-free guidance scale")
    smp.add_argument("--guidance-rescale", type=float, default=0.7, help="CFG rescale (0 = off)")
    smp.add_argument("--eta", type=float, default=1.0, help="DDIM eta (0 = deterministic)")
    smp.add_argument("--spacing", default="uniform_trailing", choices=("uniform", "uniform_trailing"),
                     help="DDIM timestep spacing")
    smp.add_argument("--frame-stride", type=int, default=None,
                     help="video frames (camera-file lines) between generated frames (default: the model's, 8)")
    smp.add_argument("--fs", type=int, default=None,
                     help="fs/fps embedding value (default: from the stride, as the backbone was trained)")
    smp.add_argument("--no-progress", action="store_true", help="no DDIM progress bar")
    smp.add_argument("--frames", type=int, default=None, help="frames to generate (default: the model's)")
    smp.add_argument("--height", type=int, default=None, help="video height (default: the model's)")
    smp.add_argument("--width", type=int, default=None, help="video width (default: the model's)")
    shp = p.add_argument_group("scene-constrained noise shaping")
    shp.add_argument("--noise-shaping", action="store_true", help="scene-constrained noise shaping of the "
                     "first steps from the depth preview")
    shp.add_argument("--shaping-threshold", type=int, default=900, help="shape the noise while t >= this")
    shp.add_argument("--erosion-kernel", type=int, default=5, help="erosion of the preview's valid mask (pixels)")
    shp.add_argument("--mask-binarize", type=float, default=0.9, help="latent mask threshold")
    mod = p.add_argument_group("modes")
    mod.add_argument("--last-image", help="interpolation: the last frame's image")
    mod.add_argument("--continue-from", help="continuation: a previous output folder (video.mp4 + "
                     "trajectory.txt) or an mp4")
    mod.add_argument("--num-overlap", type=int, default=4, help="continuation: overlapping (latent) frames")
    mod.add_argument("--allow-untrained-mode", action="store_true",
                     help="sample in a concatenation mode the plug-in was not trained with")
    return p


def trajectory_help() -> str:
    """The presets section of train/inference/trajectory.py's docstring (their one description)."""
    from train.inference import trajectory

    doc = trajectory.__doc__ or ""
    start = doc.find("Presets (")
    end = doc.find("JSON keyframes:", start)
    if start < 0 or end < start:
        return f"trajectory presets: {', '.join(trajectory.PRESETS)} (see train/inference/trajectory.py)"
    return "trajectory p" + doc[start + 1:end].strip().replace("``", "") + "\n"


def load_model(args):
    from train.dynamicrafter.config import load_config

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.tiny:
        from train.dynamicrafter.tiny import build_tiny_model

        cfg = load_config(args.config or "tiny")
        model = build_tiny_model(Path(args.out) / ".tiny_tokenizer", seed=args.tiny_seed, config=cfg)
    else:
        if not args.checkpoint:
            raise SystemExit("give --checkpoint (or --tiny for the random test model)")
        from train.dynamicrafter.conditioning import Tokenizer
        from train.dynamicrafter.model import load_dynamicrafter

        cfg = load_config(args.config) if args.config else None
        tok = None
        if args.tokenizer:
            tok = Tokenizer(args.tokenizer, (cfg.text_encoder.context_length if cfg else 77))
        model = load_dynamicrafter(args.checkpoint, config=cfg, tokenizer=tok)
    model.to(device, DTYPES[resolve_dtype(args.dtype, device)])
    model.schedule.float()
    return model.eval()


def resolve_dtype(name: str, device) -> str:
    """auto: bf16 on a CUDA GPU that has it (fp16 overflows more easily in the VAE), else fp16; fp32 on the CPU."""
    if name != "auto":
        return name
    if torch.device(device).type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


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


def main(argv: list[str] | None = None) -> dict:
    from annotate.re10k import read_camera_file
    from annotate.video import read_frames
    from train.inference.outputs import write_outputs
    from train.inference.pipeline import Pipeline, SampleOptions
    from train.inference.scene import load_image, read_depth_file, resize_crop, user_intrinsics
    from train.inference.trajectory import continuation_trajectory, load_trajectory

    args = build_parser().parse_args(argv)
    from annotate.log import setup_logging
    from annotate.preflight import EXIT_CODE
    from train.preflight import check_sample

    problems = check_sample(args)  # before any model loads (minutes) and before --out is written
    if problems:
        print(f"error: {problems.message()}", file=sys.stderr)
        raise SystemExit(EXIT_CODE)
    setup_logging(1)
    t0 = time.time()
    model = load_model(args)
    s = model.cfg.sampling
    hw = (args.height or s.height, args.width or s.width)
    frames = args.frames or s.frames
    from train.inference.pipeline import default_frame_stride

    stride = args.frame_stride or default_frame_stride(model.cfg)
    plugin = None
    if args.plugin:
        from train.inference.plugin import load_camera_plugin

        plugin = load_camera_plugin(model, args.plugin)
        log.info("camera plug-in %s (%s; modes %s; cameras %s)", plugin.source, plugin.kind,
                 ",".join(plugin.modes), plugin.scale_source)
    else:
        log.warning("no --plugin: the backbone runs without camera control")
    units = camera_units(args, plugin)

    # ---- condition image(s)
    overlap = None
    prev_c2w = None
    if args.continue_from:
        src = Path(args.continue_from)
        video_path = src / "video.mp4" if src.is_dir() else src
        prev = np.stack([resize_crop(f, hw)[0] for f in read_frames(video_path)])
        if not 0 < args.num_overlap < min(frames, len(prev) + 1):
            raise SystemExit(f"--num-overlap must be in 1..{min(frames - 1, len(prev))}")
        overlap = prev[-args.num_overlap:]
        image0 = overlap[0]
        image, plan = resize_crop(image0, hw)
        if src.is_dir() and (src / "trajectory.txt").exists():
            prev_c2w = w2c_to_c2w(read_camera_file(src / "trajectory.txt").w2c)
            prev_c2w[:, :3, 3] /= args.trace_scale  # the file holds scaled poses; scaling is applied again below
        else:
            log.warning("continuation without the previous trajectory.txt: the overlap frames get the poses of "
                        "the given trajectory")
    else:
        if not args.image:
            raise SystemExit("give --image (or --continue-from)")
        image0 = load_image(args.image)
        image, plan = resize_crop(image0, hw)
    if args.intrinsics:
        intr = plan.intrinsics(np.array([float(v) for v in args.intrinsics.split(",")], np.float64))
    else:
        intr = user_intrinsics(plan)
    last = resize_crop(load_image(args.last_image), hw)[0] if args.last_image else None

    # ---- depth
    depth = None
    predictor = None
    if args.depth_file:
        try:
            depth = read_depth_file(args.depth_file, image0.shape[:2], plan, hw)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
    else:
        from annotate.depth import DEFAULT_MODEL, DepthAnythingPredictor, DepthConfig

        dev = "cuda" if model.device.type == "cuda" else "cpu"
        predictor = DepthAnythingPredictor(DepthConfig(model=args.depth_model or DEFAULT_MODEL, device=dev))
        depth = predictor.predict(image[None])[0]
    centre = depth[hw[0] // 4: 3 * hw[0] // 4, hw[1] // 4: 3 * hw[1] // 4]
    scene_depth = float(np.median(centre[np.isfinite(centre) & (centre > 0)])) if centre.size else None

    # ---- trajectory
    try:
        traj = load_trajectory(args.trajectory, frames, intr, hw, stride=stride, loop=args.loop,
                               ease=args.ease or None, scene_depth=scene_depth, annotations=args.annotations,
                               trajectory_scale=args.trajectory_scale)
    except ValueError as e:
        raise SystemExit(f"{args.trajectory}: {e}") from None
    if overlap is not None and prev_c2w is not None:
        traj = continuation_trajectory(prev_c2w, len(overlap), traj)

    mode = "continue" if overlap is not None else "interp" if last is not None else "loop" if args.loop else "plain"
    opts = SampleOptions(prompt=args.prompt, seed=args.seed, steps=args.steps, cfg_scale=args.cfg,
                         guidance_rescale=args.guidance_rescale, eta=args.eta, spacing=args.spacing,
                         frame_stride=stride, fs=args.fs, trace_scale=args.trace_scale,
                         noise_shaping=args.noise_shaping, shaping_threshold=args.shaping_threshold,
                         erosion_kernel=args.erosion_kernel, mask_binarize=args.mask_binarize,
                         point_size=args.point_size, outlier_removal=not args.no_outlier_removal, mode=mode,
                         allow_untrained_mode=args.allow_untrained_mode, progress=not args.no_progress)
    from train.camera.modes import UntrainedModeError

    try:
        result = Pipeline(model, plugin).generate(image, intr, traj, opts, depth=depth, last_image=last,
                                                  overlap_frames=overlap)
    except UntrainedModeError as e:
        raise SystemExit(str(e)) from None
    settings = {
        "options": opts.to_dict(),
        "inputs": {"image": args.image, "last_image": args.last_image, "continue_from": args.continue_from,
                   "num_overlap": len(overlap) if overlap is not None else 0, "trajectory": args.trajectory,
                   "loop": args.loop, "ease": args.ease, "annotations": args.annotations,
                   "trajectory_scale": args.trajectory_scale, "trajectory_units": units, "frame_stride": stride},
        "model": {"checkpoint": args.checkpoint, "tiny": args.tiny, "config": model.cfg.name,
                  "plugin": getattr(plugin, "source", None), "plugin_kind": getattr(plugin, "kind", None),
                  "plugin_modes": list(getattr(plugin, "modes", []) or []),
                  "plugin_scale_source": getattr(plugin, "scale_source", None),
                  "device": str(model.device), "dtype": str(model.dtype).replace("torch.", "")},
        "image": {"size_hw": list(hw), "source_hw": list(image0.shape[:2]), "resized_hw": list(plan.resized_hw),
                  "crop_top_left": [plan.top, plan.left], "intrinsics_px": intr.tolist()},
        "depth": {"file": args.depth_file, "model": None if args.depth_file else (args.depth_model or "default"),
                  "scene_depth_m": scene_depth, "points": result.cloud_size},
        "frames": frames, "fps": args.fps, "seconds": round(time.time() - t0, 2),
        "command": " ".join(sys.argv) if argv is None else "python -m train.sample " + " ".join(argv),
    }
    paths = write_outputs(args.out, result, intr, hw, settings, stride=stride, fps=args.fps)
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return {"paths": paths, "result": result, "settings": settings}


if __name__ == "__main__":
    main()
