"""Camera-controlled image-to-video sampling in every mode: plain, noise-shaped, loop, interpolation, continuation.

``generate`` runs one clip at the model size:

1. preview: metric depth of the condition image -> point cloud (scene.py) -> splats along the trajectory;
2. conditioning: ``model.get_conditioning`` (CLIP text + image tokens, concat latent). Interpolation and loop
   use DynamiCrafter's interpolation conditioning (concat = latents of frame 0 and frame T-1, zeros between;
   loop: T-1 is the input image again) - wired end to end here, unlike the authors' code (its ``interp_mode`` is off);
3. camera: the plug-in's ``adapter_cond`` (metric c2w relative to the condition frame x trace_scale, pixel
   intrinsics), given to the conditional *and* unconditional UNet calls (as the authors' sampler does);
4. DDIM (``DynamiCrafter.denoise``, the loop the trainer's validation samples use too) with the hooks of
   shaping.py: noise shaping at t >= threshold, continuation pasting of the first ``num_overlap`` latent
   frames at every step and clean at the end.

Concatenation modes (train/camera/modes.py): with a camera plug-in, the mode must be one the plug-in was trained
with (plain: basic, loop/interp: interpolation, continue: continuation; ``allow_untrained_mode`` overrides),
and continuation gives the UNet the clean overlap latents in the condition video as in training (frames 0..n-1,
zeros after). Without a plug-in the backbone's own layouts are used (continuation: first-frame latent repeated).

Randomness: ``seed`` drives the VAE posterior sample of the condition and the DDIM noise exactly as
``DynamiCrafter.sample`` does; the hook noise (seed + 1) and the VAE samples of the preview / overlap frames
(seed + 2) have their own generators, so shaping with no shaped step reproduces the plain sample exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from annotate.log import get_logger

from .scene import PointCloud, point_cloud, render_preview
from .shaping import NoiseShaper, OverlapPaster, chain, shaping_mask
from .trajectory import Trajectory

log = get_logger("inference")

MODES = ("plain", "loop", "interp", "continue")
# Frame stride: video frames (camera-file lines) between generated frames. The paper's test protocol uses 8
# for every model (the authors' ``realestate10k.py`` test loader); it is separate from the fs embedding value
# (fs_embedding).
DEFAULT_FRAME_STRIDE = {"dynamicrafter_256": 8, "dynamicrafter_512": 8, "dynamicrafter_1024": 8}
FPS_MODELS = ("dynamicrafter_512", "dynamicrafter_1024")  # fs embedding = fps_ori // stride ('fps')


def default_frame_stride(model_cfg) -> int:
    return DEFAULT_FRAME_STRIDE.get(model_cfg.name, 8)


def fs_embedding(model_cfg, stride: int, fps_ori: float = 30.0) -> int:
    """The fs value the backbone was trained with for this stride: the stride itself (256 / tiny, 'fs'
    models) or the frame rate fps_ori // stride (512 / 1024, 'fps' models)."""
    if model_cfg.name in FPS_MODELS:
        return max(1, int(fps_ori // stride))
    return int(stride)


@dataclass
class SampleOptions:
    prompt: str = ""
    seed: int = 12333
    steps: int = 25
    cfg_scale: float = 7.5
    guidance_rescale: float = 0.7
    eta: float = 1.0
    spacing: str = "uniform_trailing"
    frame_stride: int = 8  # video frames between generated frames (the paper's test stride)
    fs: int | None = None  # fs embedding value; None = fs_embedding(model, frame_stride)
    trace_scale: float = 1.0  # translations x this for the camera condition and the preview
    noise_shaping: bool = False
    shaping_threshold: int = 900  # shape every DDIM step with DDPM t >= this
    erosion_kernel: int = 5
    mask_binarize: float = 0.9
    point_size: int = 2
    outlier_removal: bool = True
    mode: str = "plain"  # plain | loop | interp | continue
    allow_untrained_mode: bool = False  # sample in a mode the plug-in was not trained with
    progress: bool = False  # rich progress bar over the DDIM steps (stderr)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SampleResult:
    video: np.ndarray  # uint8 [F, H, W, 3]
    latents: torch.Tensor  # [1, 4, F, h, w]
    c2w: np.ndarray  # [F, 4, 4] as given to the camera condition and the preview (trace scale applied)
    intrinsics: np.ndarray  # [F, 4] pixels
    preview: np.ndarray | None = None  # uint8 [F, H, W, 3]
    pixel_mask: np.ndarray | None = None  # float [F, H, W] after erosion
    latent_mask: np.ndarray | None = None  # float [F, h, w]
    shaped_timesteps: list[int] = field(default_factory=list)
    pasted_timesteps: list[int] = field(default_factory=list)
    concat: torch.Tensor | None = None  # the UNet's concat condition [1, 4, F, h, w]
    cloud_size: int = 0


def to_tensor(frames: np.ndarray, device, dtype=torch.float32) -> torch.Tensor:
    """uint8 [H, W, 3] -> [1, 3, H, W], or [F, H, W, 3] -> [1, 3, F, H, W], in [-1, 1]."""
    x = torch.tensor(np.asarray(frames), dtype=torch.float32) / 127.5 - 1.0
    x = x.permute(2, 0, 1)[None] if x.dim() == 3 else x.permute(3, 0, 1, 2)[None]
    return x.to(device, dtype)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """[1, 3, F, H, W] in ~[-1, 1] -> uint8 [F, H, W, 3]."""
    return ((video[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).cpu().numpy()


class Pipeline:
    def __init__(self, model, plugin=None, depth_predictor=None):
        self.model, self.plugin, self.depth_predictor = model, plugin, depth_predictor

    # -------------------------------------------------------------------------------- scene
    def depth(self, image: np.ndarray) -> np.ndarray:
        if self.depth_predictor is None:
            raise RuntimeError("no depth: pass depth= or a depth predictor (needed for the preview and shaping)")
        return np.asarray(self.depth_predictor.predict(image[None])[0], np.float32)

    def scene(self, image: np.ndarray, intr: np.ndarray, depth: np.ndarray | None,
              opts: SampleOptions) -> PointCloud:
        depth = self.depth(image) if depth is None else np.asarray(depth, np.float32)
        return point_cloud(image, depth, intr, outlier_removal=opts.outlier_removal)

    # -------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def generate(self, image: np.ndarray, intr: np.ndarray, traj: Trajectory, opts: SampleOptions, *,
                 depth: np.ndarray | None = None, last_image: np.ndarray | None = None,
                 overlap_frames: np.ndarray | None = None, preview: bool = True) -> SampleResult:
        """`image` uint8 [H, W, 3] at the model size (the condition frame); `intr` its pixel intrinsics.

        mode plain/loop: as given (loop: give an out-and-back trajectory; the concat condition's last frame is
        the image); interp: `last_image` (same size) is the last frame; continue: `overlap_frames` uint8
        [N, H, W, 3] are the clip's first N frames (frame 0 should be `image`)."""
        m = self.model
        mode = opts.mode
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        h, w = image.shape[:2]
        frames = len(traj)
        if mode == "interp" and last_image is None:
            raise ValueError("interp mode needs last_image")
        if mode == "continue" and overlap_frames is None:
            raise ValueError("continue mode needs overlap_frames")
        if self.plugin is not None:
            from train.camera.modes import check_mode

            check_mode(mode, getattr(self.plugin, "modes", ("basic",)),
                       f"camera plug-in {getattr(self.plugin, 'source', '(in memory)')}", opts.allow_untrained_mode)
        if mode == "loop":
            last_image = image
        elif mode != "interp":
            last_image = None
        traj = traj.scaled(opts.trace_scale) if opts.trace_scale != 1.0 else traj
        c2w, intr_f = traj.c2w, traj.intrinsics_for(intr)

        cloud = None
        prev_frames = None
        if preview or opts.noise_shaping:
            if depth is None and self.depth_predictor is None:
                if opts.noise_shaping:
                    raise RuntimeError("noise shaping needs depth (depth= or a depth predictor)")
            else:
                cloud = self.scene(image, intr, depth, opts)
                prev_frames = render_preview(cloud, c2w, intr_f, (h, w), opts.point_size)

        dev, dt = m.device, m.dtype
        gen = torch.Generator().manual_seed(opts.seed)
        hook_gen = torch.Generator().manual_seed(opts.seed + 1)
        enc_gen = torch.Generator().manual_seed(opts.seed + 2)
        img_t = to_tensor(image, dev, dt)
        last_t = to_tensor(last_image, dev, dt) if last_image is not None else None
        cond, uncond = m.get_conditioning(img_t, [opts.prompt], frames, gen, last_t)
        z_img = cond["concat"][:, :, 0]
        b, _, _, lh, lw = cond["concat"].shape

        unet_kwargs = {}
        if self.plugin is not None:
            from .plugin import camera_condition

            unet_kwargs["adapter_cond"] = camera_condition(self.plugin, c2w, intr_f, (h, w), opts.seed)

        shaper = paster = None
        pixel_mask = lat_mask = None
        if prev_frames is not None:
            pm, lm = shaping_mask(prev_frames, (lh, lw), opts.erosion_kernel, opts.mask_binarize)
            pixel_mask, lat_mask = pm.numpy(), lm.numpy()
            if opts.noise_shaping:
                z_prev = m.encode_first_stage(to_tensor(prev_frames, dev, dt), enc_gen).float()
                z_prev[:, :, 0] = z_img.float()  # latent frame 0 = the true latent of the input image
                shaper = NoiseShaper(m.schedule, z_prev, lm.to(dev), opts.shaping_threshold, hook_gen)
        if mode == "continue":
            n = len(overlap_frames)
            if not 0 < n < frames:
                raise ValueError(f"num_overlap {n} must be in 1..{frames - 1}")
            z0 = m.encode_first_stage(to_tensor(overlap_frames, dev, dt), enc_gen).float()
            z0[:, :, 0] = z_img.float()
            paster = OverlapPaster(m.schedule, z0, hook_gen)
            if self.plugin is not None:  # the continuation layout the plug-in was trained with
                for c in (cond, uncond):
                    c["concat"] = torch.zeros_like(c["concat"])
                    c["concat"][:, :, :n] = z0.to(c["concat"].dtype)

        fs_val = opts.fs if opts.fs is not None else fs_embedding(m.cfg, opts.frame_stride)
        latents = m.denoise(cond, uncond, steps=opts.steps, spacing=opts.spacing, eta=opts.eta,
                            cfg_scale=opts.cfg_scale, guidance_rescale=opts.guidance_rescale, fs=int(fs_val),
                            generator=gen, x_t_hook=chain(shaper, paster), progress=opts.progress, **unet_kwargs)
        if paster is not None:
            latents = paster.finalize(latents)
        video = to_uint8(m.decode_first_stage(latents.to(dt)))
        return SampleResult(
            video=video, latents=latents.cpu(), c2w=c2w, intrinsics=intr_f, preview=prev_frames,
            pixel_mask=pixel_mask, latent_mask=lat_mask,
            shaped_timesteps=list(shaper.shaped_timesteps) if shaper else [],
            pasted_timesteps=list(paster.pasted_timesteps) if paster else [],
            concat=cond["concat"].cpu(), cloud_size=len(cloud) if cloud is not None else 0)
