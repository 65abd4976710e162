"""Backbone benchmark: forward and backward of the full-size DynamiCrafter UNet with random weights.

    python -m train.bench_backbone --out bench/backbone.json [--preset 256] [--device cpu|cuda] [--dtypes fp32]

Batch 1, 16 frames at the preset's latent size, the full 77 + 256-token context. The backward pass is the
one camera-plug-in training runs: the backbone is frozen, gradients flow to the UNet's input (and so to any
adapter) but not to its 1.4 B weights; gradient checkpointing as in the presets. On CUDA it measures fp16 and
bf16 autocast with PyTorch SDPA attention. Reports seconds, peak memory and the tokens/s (latent tokens:
frames x h x w per sample) implied for training.
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from annotate.files import write_json
from train.build import dropout_off
from train.dynamicrafter.config import load_config
from train.dynamicrafter.unet import UNetModel

LATENT_HW = {"256": (32, 32), "512": (40, 64), "1024": (72, 128), "tiny": (8, 8)}


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux VmHWM), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    try:  # writing 5 to clear_refs resets VmHWM (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def bench(unet: UNetModel, device: torch.device, dtype: torch.dtype | None, frames: int, hw: tuple[int, int],
          context_dim: int, repeats: int) -> dict:
    h, w = hw
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 8, frames, h, w, generator=gen).to(device)
    ctx = torch.randn(1, 77 + 16 * frames, context_dim, generator=gen).to(device)
    t = torch.tensor([500], device=device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak_rss()
    fwd, bwd = [], []
    for i in range(repeats + 1):  # the first round warms up (allocator, kernels)
        xi = x.clone().requires_grad_(True)
        sync()
        t0 = time.perf_counter()
        with autocast:
            y = unet(xi, t, ctx)
        sync()
        t1 = time.perf_counter()
        y.float().pow(2).mean().backward()
        sync()
        t2 = time.perf_counter()
        if i:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
        del y, xi
    f, b = min(fwd), min(bwd)
    tokens = frames * h * w
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mb()
    return {"forward_s": f, "backward_s": b, "step_s": f + b, "peak_memory_mb": peak,
            "peak_memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "process peak RSS",
            "tokens_per_sample": tokens, "train_tokens_per_s": tokens / (f + b), "train_samples_per_s": 1 / (f + b)}


@dataclass
class BenchBackboneConfig:
    out: str = "bench/backbone.json"  # the result JSON
    preset: Literal["1024", "256", "512", "tiny"] = "256"  # backbone preset
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")  # torch device
    dtypes: list[Literal["fp32", "fp16", "bf16"]] | None = None  # autocast (null: fp32 on CPU, fp16 bf16 on CUDA)
    frames: int = 16  # frames per sample
    repeats: int = 1  # timed rounds after the warm-up (the fastest counts)
    checkpointing: bool = True  # gradient checkpointing (as the preset says; --no-checkpointing: off)


def main(a: BenchBackboneConfig) -> dict:
    """Build the UNet, time forward and backward per dtype, write ``out``; the result."""
    device = torch.device(a.device)
    cfg = load_config(a.preset)
    if not a.checkpointing:
        cfg.unet.use_checkpoint = False
    torch.manual_seed(0)
    t0 = time.perf_counter()
    unet = UNetModel(cfg.unet).to(device)
    build_s = time.perf_counter() - t0
    unet.requires_grad_(False)  # frozen backbone, as in camera plug-in training
    unet.train()  # gradient checkpointing is active in training mode
    dropout_off(unet)
    dtypes = a.dtypes or (["fp16", "bf16"] if device.type == "cuda" else ["fp32"])
    result = {"preset": a.preset, "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "cpu_threads": torch.get_num_threads(), "params": sum(p.numel() for p in unet.parameters()),
              "frames": a.frames, "latent_hw": LATENT_HW[a.preset], "gradient_checkpointing": cfg.unet.use_checkpoint,
              "attention": "torch.nn.functional.scaled_dot_product_attention", "build_s": build_s,
              "torch": torch.__version__, "runs": {}}
    for name in dtypes:
        dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[name]
        r = bench(unet, device, dtype, a.frames, LATENT_HW[a.preset], cfg.unet.context_dim, a.repeats)
        result["runs"][name] = r
        print(f"{a.preset} UNet on {device} {name}: forward {r['forward_s']:.2f} s, backward {r['backward_s']:.2f} s, "
              f"peak {r['peak_memory_mb']:.0f} MB, {r['train_tokens_per_s']:.0f} tokens/s")
    print(f"wrote {write_json(a.out, result)}")
    return result


def command():
    from annotate.command import Command

    return Command(BenchBackboneConfig, lambda cfg, args: main(cfg), "python -m train.bench_backbone",
                   __doc__.split("\n\n")[0], print_result=False)  # main prints its summary and writes the JSON


def cli(argv: list[str] | None = None) -> int:
    return command().main(argv)


if __name__ == "__main__":
    sys.exit(cli())
