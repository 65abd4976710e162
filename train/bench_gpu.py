"""One GPU benchmark (issue 15): depth throughput, the RealCam training step and DDIM sampling, one JSON.

    python -m train.bench_gpu --out bench/gpu.json            # one CUDA GPU, < 8 min (make bench-gpu)
    python -m train.bench_gpu --smoke --out bench/gpu_smoke.json   # tiny configs on the CPU (CI)

All models have random weights built from configs (no downloads), with the real architectures:

1. **Depth Anything V2 Metric-Large** (DINOv2 ViT-L/14 + DPT head, 335 M params, a transformers config) in
   fp16 at the annotation job's input size (640x360 frames -> 294x518 model input, batch ``clip.depth.batch_size``
   of ``annotate/configs/cluster.yaml``): model images/s, and end to end through ``DepthAnythingPredictor``
   (CPU pre-processing, the model, resizing back to the frame) as the job runs it.
2. **Training step** of the 256 DynamiCrafter UNet (1.4 B, frozen, bf16 weights) with the RealCam plug-in
   (fp32 master weights, bf16 autocast, AdamW) on cached latents: samples/s per GPU and peak memory at batch 8,
   16 frames, with gradient checkpointing on and off (an out-of-memory is recorded, not fatal).
3. **DDIM sampling**: seconds per 16-frame 256x256 video, the preset's 50 steps with classifier-free guidance
   (two UNet passes a step), the RealCam camera condition, VAE decode included.

The paper's anchor is ~4.4 training samples/s per H100 (50k steps x 64 in 25 h on 8 GPUs); the goal is 2x.
Without CUDA the command refuses in one line unless ``--smoke`` is given.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from annotate.files import write_json
from train.build import dropout_off

PAPER_SAMPLES_PER_S_PER_GPU = 50_000 * 64 / (25 * 3600) / 8
SECTIONS = ("depth", "train", "sample")
FRAME_HW = (360, 640)  # RealEstate10K frames as the annotation job decodes them

log = logging.getLogger("realcam")


class Timer:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
        self.s = time.perf_counter() - self.t0


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    from train.bench_backbone import peak_rss_mb

    return peak_rss_mb()


# --------------------------------------------------------------------------------------------- depth


def depth_anything_config(smoke: bool):
    """Depth Anything V2 Metric-Indoor-Large's architecture (the hub config's values), or a tiny one."""
    from transformers import DepthAnythingConfig, Dinov2Config

    if smoke:
        backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, mlp_ratio=2,
                                patch_size=14, image_size=98, out_indices=[1, 2, 3, 4], reshape_hidden_states=False)
        return DepthAnythingConfig(backbone_config=backbone, depth_estimation_type="metric", max_depth=20,
                                   neck_hidden_sizes=[16, 32, 64, 64], fusion_hidden_size=16, head_hidden_size=16,
                                   reassemble_hidden_size=32)
    backbone = Dinov2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4,
                            patch_size=14, image_size=518, out_indices=[5, 12, 18, 24], reshape_hidden_states=False)
    return DepthAnythingConfig(backbone_config=backbone, depth_estimation_type="metric", max_depth=20,
                               neck_hidden_sizes=[256, 512, 1024, 1024], fusion_hidden_size=256, head_hidden_size=32,
                               reassemble_hidden_size=1024)


def bench_depth(device: torch.device, smoke: bool, batch: int, iters: int, e2e_frames: int) -> dict:
    from transformers import DepthAnythingForDepthEstimation
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

    from annotate.depth import DepthAnythingPredictor, DepthConfig

    size = 98 if smoke else 518
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    model = DepthAnythingForDepthEstimation(depth_anything_config(smoke))
    proc = DPTImageProcessorPil(do_resize=True, size={"height": size, "width": size}, keep_aspect_ratio=True,
                                ensure_multiple_of=14, resample=3, do_rescale=True, do_normalize=True,
                                image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    frames = np.random.default_rng(0).integers(0, 256, (max(batch, e2e_frames), *FRAME_HW, 3), dtype=np.uint8)
    in_hw = tuple(proc(images=list(frames[:1]), return_tensors="pt")["pixel_values"].shape[-2:])
    out = {"params": sum(p.numel() for p in model.parameters()), "dtype": str(dtype).removeprefix("torch."),
           "frame_hw": FRAME_HW, "input_hw": in_hw, "batch": batch}
    model.to(device, dtype).eval()
    x = torch.randn(batch, 3, *in_hw, device=device, dtype=dtype)
    _reset_peak(device)
    with torch.inference_mode():
        for _ in range(2):  # warm-up: kernels, allocator
            model(pixel_values=x)
        with Timer(device) as t:
            for _ in range(iters):
                model(pixel_values=x)
    out["model_images_per_s"] = batch * iters / t.s
    out["model_peak_memory_mb"] = _peak_mb(device)
    # End to end as the job runs it: saved folder -> DepthAnythingPredictor (pre-processing on the CPU).
    with tempfile.TemporaryDirectory(prefix="realcam_bench_depth_") as tmp:
        model.to("cpu", torch.float32).save_pretrained(tmp)
        proc.save_pretrained(tmp)
        del model
        pred = DepthAnythingPredictor(DepthConfig(model=tmp, batch_size=batch, device=str(device),
                                                  local_files_only=True))
        pred.predict(frames[:batch])  # warm-up
        with Timer(device) as t:
            maps = pred.predict(frames[:e2e_frames])
    assert maps.shape == (e2e_frames, *FRAME_HW)
    out["end_to_end_images_per_s"] = e2e_frames / t.s
    out["end_to_end_frames"] = e2e_frames
    return out


# --------------------------------------------------------------------------------------------- UNet


def build_backbone(device: torch.device, smoke: bool, tokenizer_dir: Path):
    """The DynamiCrafter (256 preset, or tiny) with random weights and a byte-level tokenizer, on ``device``."""
    from train.dynamicrafter.config import load_config
    from train.dynamicrafter.model import DynamiCrafter
    from train.dynamicrafter.tiny import write_tiny_tokenizer

    cfg = load_config("tiny" if smoke else "256")
    cfg.text_encoder.tokenizer_path = str(write_tiny_tokenizer(tokenizer_dir))
    cfg.text_encoder.vocab_size = max(cfg.text_encoder.vocab_size, 514)
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the GPU: seconds instead of minutes on the CPU
        model = DynamiCrafter(cfg)
    return model.eval()


def camera_inputs(b: int, frames: int, hw: tuple[int, int], device: torch.device, seed: int = 0):
    """A forward walk with a slow turn per sample (c2w [b, F, 4, 4]) and pixel intrinsics [b, F, 4]."""
    g = torch.Generator().manual_seed(seed)
    c2w = torch.eye(4).repeat(b, frames, 1, 1)
    s = torch.linspace(0, 1, frames)
    yaw = 0.3 * s[None] * (torch.rand(b, 1, generator=g) - 0.5)
    c2w[..., 0, 0], c2w[..., 0, 2], c2w[..., 2, 0], c2w[..., 2, 2] = yaw.cos(), yaw.sin(), -yaw.sin(), yaw.cos()
    c2w[..., 2, 3] = s[None] * (0.5 + torch.rand(b, 1, generator=g))
    h, w = hw
    intr = torch.tensor([0.5 * w, 0.5 * w, 0.5 * w, 0.5 * h]).repeat(b, frames, 1)
    return c2w.to(device), intr.to(device)


def set_checkpointing(unet: torch.nn.Module, on: bool) -> None:
    for m in unet.modules():
        if hasattr(m, "use_checkpoint"):
            m.use_checkpoint = on


def bench_train_step(bb, plugin, device: torch.device, batch: int, frames: int, steps: int, warmup: int,
                     checkpointing: bool, dtype: torch.dtype | None) -> dict:
    """Training steps on cached latents: frozen UNet (``dtype`` weights), plug-in in fp32 under autocast."""
    from train.camera import CameraControlledUNet

    cfg = bb.cfg
    unet = bb.unet
    set_checkpointing(unet, checkpointing)
    unet.train()
    dropout_off(unet)
    model = CameraControlledUNet(unet, plugin)
    params = [p for p in plugin.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    h = w = cfg.sampling.height // 8
    g = torch.Generator().manual_seed(0)
    z = torch.randn(batch, 4, frames, h, w, generator=g).to(device)
    concat = z[:, :, :1].expand(-1, -1, frames, -1, -1)
    ctx = torch.randn(batch, 77 + 16 * cfg.resampler.video_length, cfg.unet.context_dim, generator=g).to(device)
    fs = torch.full((batch,), 3, device=device)
    c2w, intr = camera_inputs(batch, frames, (cfg.sampling.height, cfg.sampling.width), device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()

    def step():
        t = torch.randint(0, bb.schedule.num_timesteps, (batch,), generator=g).to(device)
        noise = torch.randn(z.shape, generator=g).to(device)
        with autocast:
            loss, _ = bb.schedule.training_loss(
                lambda x_t, t_: model(torch.cat([x_t, concat], 1), t_, ctx, fs, c2w, intr,
                                      (cfg.sampling.height, cfg.sampling.width), g), z, t=t, noise=noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    _reset_peak(device)
    out = {"batch": batch, "frames": frames, "latent_hw": (h, w), "gradient_checkpointing": checkpointing,
           "trainable_params": sum(p.numel() for p in params)}
    try:
        for _ in range(warmup):
            step()
        with Timer(device) as t:
            for _ in range(steps):
                loss = step()
        out.update(step_s=t.s / steps, samples_per_s=batch * steps / t.s, peak_memory_mb=_peak_mb(device),
                   loss_finite=bool(torch.isfinite(loss).item()))
    except torch.OutOfMemoryError as e:
        out.update(error=f"out of memory: {str(e).splitlines()[0]}", peak_memory_mb=_peak_mb(device))
    finally:
        opt.state.clear()  # free the AdamW moments before the next configuration
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def bench_sampling(bb, plugin, device: torch.device, frames: int, steps: int) -> dict:
    cfg = bb.cfg
    hw = (cfg.sampling.height, cfg.sampling.width)
    bb.unet.eval()
    image = torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(1)).to(device) * 2 - 1
    c2w, intr = camera_inputs(1, frames, hw, device, seed=1)

    def sample(n):
        with torch.no_grad():
            cond = plugin.condition(c2w, intr, hw, torch.Generator().manual_seed(0))
            return bb.sample(image.to(bb.dtype), "a living room", frames=frames, steps=n, seed=0, adapter_cond=cond)

    sample(2)  # warm-up
    _reset_peak(device)
    with Timer(device) as t:
        video = sample(steps)
    return {"frames": frames, "hw": hw, "steps": steps, "cfg_scale": cfg.sampling.cfg_scale,
            "unet_passes": 2 * steps, "seconds_per_video": t.s, "peak_memory_mb": _peak_mb(device),
            "output_shape": list(video.shape)}


# --------------------------------------------------------------------------------------------- main


@dataclass
class BenchGpuConfig:
    out: str = "bench/gpu.json"  # the result JSON
    smoke: bool = False  # tiny configs on the CPU (seconds; what CI runs)
    batch: int = 8  # training samples per GPU
    depth_batch: int | None = None  # depth images per batch (null: cluster.yaml's clip.depth.batch_size)
    sections: list[Literal["depth", "train", "sample"]] = field(default_factory=lambda: list(SECTIONS))  # parts to run


def main(a: BenchGpuConfig) -> dict:
    """Run the sections, write ``out``; the result. Without CUDA (and without ``smoke``) a one-line SystemExit."""
    a = dataclasses.replace(a)  # depth_batch is filled in below; the caller's config stays as given
    if not a.smoke and not torch.cuda.is_available():
        raise SystemExit("bench-gpu needs a CUDA GPU and torch.cuda.is_available() is False here "
                         "(python -m train.bench_gpu --smoke runs the tiny CPU variant)")
    device = torch.device("cpu" if a.smoke else "cuda")
    if a.smoke:
        torch.set_num_threads(1)  # tiny tensors: more threads only add contention on shared CI cores
    if a.depth_batch is None:
        from annotate.config import read_yaml

        a.depth_batch = 2 if a.smoke else int(read_yaml(Path(__file__).parents[1] / "annotate/configs/cluster.yaml")
                                              ["clip"]["depth"]["batch_size"])
    t_start = time.perf_counter()
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (smoke)",
              "smoke": a.smoke, "torch": torch.__version__, "cuda": torch.version.cuda,
              "paper_samples_per_s_per_gpu": PAPER_SAMPLES_PER_S_PER_GPU, "sections": {}}
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if "depth" in a.sections:
        r = bench_depth(device, a.smoke, a.depth_batch, 2 if a.smoke else 20, 4 if a.smoke else 64)
        result["sections"]["depth"] = {"model": "tiny" if a.smoke else "Depth Anything V2 Metric-Large", **r}
        print(f"depth: {r['model_images_per_s']:.1f} images/s (model, {r['dtype']}, {r['input_hw']}), "
              f"{r['end_to_end_images_per_s']:.1f} images/s end to end")
        gc.collect()
    if {"train", "sample"} & set(a.sections):
        from train.camera import CameraPlugin
        from train.config import CameraConfig

        with tempfile.TemporaryDirectory(prefix="realcam_bench_gpu_") as tmp:
            bb = build_backbone(device, a.smoke, Path(tmp) / "tokenizer")
        bb.requires_grad_(False)
        weight_dtype = None if a.smoke else torch.bfloat16
        if weight_dtype is not None:
            bb.to(dtype=weight_dtype)
            bb.schedule.float()
        plugin = CameraPlugin(bb.unet, CameraConfig(kind="realcam")).to(device)
        frames = 4 if a.smoke else bb.cfg.sampling.frames
        if "train" in a.sections:
            runs = {"preset": bb.cfg.name, "weights_dtype": str(weight_dtype or torch.float32).removeprefix("torch."),
                    "plugin": "realcam"}
            for ckpt in (True, False):
                r = bench_train_step(bb, plugin, device, 2 if a.smoke else a.batch, frames, 1 if a.smoke else 6,
                                     1 if a.smoke else 3, ckpt, weight_dtype)
                runs["checkpointing_on" if ckpt else "checkpointing_off"] = r
                print(f"train step (checkpointing {'on' if ckpt else 'off'}): " + (
                    r["error"] if "error" in r else f"{r['samples_per_s']:.2f} samples/s, peak "
                    f"{r['peak_memory_mb']:.0f} MB"))
            result["sections"]["train_step"] = runs
        if "sample" in a.sections:
            r = bench_sampling(bb, plugin, device, frames, 2 if a.smoke else bb.cfg.sampling.steps)
            result["sections"]["ddim_sampling"] = {"preset": bb.cfg.name, **r}
            print(f"DDIM: {r['seconds_per_video']:.2f} s per video ({r['steps']} steps, CFG)")
    result["total_s"] = time.perf_counter() - t_start
    print(f"wrote {write_json(a.out, result)}")
    return result


def command():
    from annotate.command import Command

    return Command(BenchGpuConfig, lambda cfg, args: main(cfg), "python -m train.bench_gpu",
                   __doc__.split("\n\n")[0], print_result=False)  # main prints its summary and writes the JSON


def cli(argv: list[str] | None = None) -> int:
    return command().main(argv)


if __name__ == "__main__":
    sys.exit(cli())
