"""Trainer benchmark: samples/s and peak memory of real training steps, with and without cached latents.

    python -m train.bench_train --out bench/train.json [--config train/configs/tiny.yaml] [--steps 12] [key=value ...]

First the data loader alone (``loader_bench``): samples/s on one core from 200-frame 640x360 clips at
256x256, decoding every frame (before issue 15) and reading only the wanted ones (the dataset's reader), per
wall-clock second and per CPU-second of the process (the fair figure on a shared machine). The clips are
encoded like RealEstate10K's YouTube sources: libx264 preset medium (B-frames, b-pyramid), CRF 23
(~950 kb/s at 640x360), a keyframe every ``--loader-gop`` frames (60 = 2 s at 30 fps, the long end of
YouTube's 1-2 s; 0 = x264's default of 250, i.e. one keyframe per 200-frame clip, as ``annotate extract``
writes its clips today). Then the trainer twice in fresh
run folders: once encoding every batch with the VAE and CLIP towers, once from
the encoder cache (``run.cache_dir``, precomputed before the timed steps). Validation and intermediate
checkpoints are off; the first ``--warmup`` steps are not timed. Anchor for GPU runs of the 256 preset: the
paper's 25 h for 50k steps at batch 64 on 8xH100 is ~4.4 samples/s per GPU (goal: 2x that).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from pathlib import Path

import torch

from annotate.files import write_json
from train.bench_backbone import peak_rss_mb, reset_peak_rss
from train.config import load_train_config
from train.trainer import Trainer

PAPER_SAMPLES_PER_S_PER_GPU = 50_000 * 64 / (25 * 3600) / 8


def run_once(config: str, overrides: list[str], steps: int, warmup: int, cached: bool, folder: Path) -> dict:
    cfg = load_train_config(config, [*overrides, f"run.output_dir={folder / 'run'}", f"run.max_steps={steps}",
                                     "validation.every=0", "run.checkpoint_every=0", "run.log_every=1",
                                     "run.progress=false", "resume=none"])
    if cached:
        cfg.run.cache_dir = str(folder / "cache")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak_rss()
    tr = Trainer(cfg)
    if cached:  # enough epochs for every timed step to hit the cache
        per_epoch = max(1, len(tr.train_set) // (cfg.run.batch_size * cfg.optim.gradient_accumulation_steps))
        tr.cfg.run.cache_epochs = math.ceil(steps / per_epoch) + 1
    tr.train()
    rows = [json.loads(line) for line in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
    sps = [r["samples_per_s"] for r in rows if "samples_per_s" in r and r["step"] > warmup]
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else peak_rss_mb()
    out = {"samples_per_s_median": statistics.median(sps), "samples_per_s": sps, "steps_timed": len(sps),
           "peak_memory_mb": peak, "peak_memory_kind": "cuda max_memory_allocated" if torch.cuda.is_available()
           else "process peak RSS (includes the data pipeline)", "final_loss": rows[-1].get("loss")}
    if cached:
        out["cache_hits"], out["cache_misses"] = tr.cache.hits, tr.cache.misses
    return out


def _full_decode(path, indices: list[int]):
    """The loader before issue 15: every frame of the video decoded, the wanted ones converted to RGB."""
    import av
    import numpy as np

    want, got = set(indices), {}
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for i, f in enumerate(c.decode(s)):
            if i in want:
                got[i] = f.to_ndarray(format="rgb24")
    return np.stack([got[i] for i in indices])


def _clip_video(path: Path, n: int, hw: tuple[int, int], gop: int, seed: int, crf: int = 23) -> None:
    """A textured scene panning and zooming (so x264 codes real motion), uint8 [n, H, W, 3] at 30 fps."""
    import numpy as np

    from annotate.video import write_video

    rng = np.random.default_rng(seed)
    h, w = hw
    tex = rng.integers(0, 256, (h // 8 + 64, w // 8 + 64, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        z = 1.0 - 0.002 * t
        frames[t] = tex[(yy * z + t).astype(int) % tex.shape[0], (xx * z + 2 * t).astype(int) % tex.shape[1]]
    write_video(path, frames, fps=30.0, crf=crf, gop=gop)


def loader_bench(samples: int = 48, clips: int = 2, frames: int = 200, hw: tuple[int, int] = (360, 640),
                 gop: int = 60, seed: int = 0, crf: int = 23) -> dict:
    """The data loader alone (decode + resize/crop to 256x256, 16 frames, training strides 1-10) on one CPU
    core: samples/s before (full decode of each video) and after (only the wanted frames), per wall second and
    per CPU-second; ``gop`` 0 = x264's default keyframe interval."""
    import os
    import time

    import numpy as np

    from train.config import DataConfig
    from train.data import CameraVideoDataset

    with tempfile.TemporaryDirectory(prefix="realcam_bench_loader_") as tmp:
        rows = []
        for k in range(clips):
            path = Path(tmp) / f"clip{k}.mp4"
            _clip_video(path, frames, hw, gop or None, seed + k, crf)
            rows.append({"clip_id": f"clip{k}", "video_path": str(path), "num_frames": frames, "fps": 30.0,
                         "intrinsics": np.tile([0.5, 0.9, 0.5, 0.5], (frames, 1)),
                         "w2c": np.tile(np.eye(4)[:3], (frames, 1, 1)), "frame_scale": np.ones(frames),
                         "scale": 1.0})
        ds = CameraVideoDataset(DataConfig(height=256, width=256, frames=16), clips=rows, seed=seed)
        cores = os.sched_getaffinity(0)
        threads = torch.get_num_threads()
        os.sched_setaffinity(0, {min(cores)})  # one worker core: decoder threads and torch share it
        torch.set_num_threads(1)
        kbps = sum(Path(r["video_path"]).stat().st_size for r in rows) * 8 / 1000 / (clips * frames / 30.0)
        out = {"clips": clips, "frames_per_clip": frames, "source_hw": list(hw), "gop": gop or "x264 default (250)",
               "gop_seconds": (gop or 250) / 30.0, "crf": crf, "encoding": "libx264 preset medium, 30 fps",
               "video_kbps": round(kbps), "out_hw": [256, 256],
               "frames_per_sample": 16, "stride_range": list(ds.cfg.stride_range), "samples": samples}
        try:
            for name, reader in (("full_decode", _full_decode), ("seek", ds.read)):
                ds.read = reader
                ds[(0, 0)]  # warm-up
                t0, c0 = time.perf_counter(), time.process_time()
                for i in range(samples):
                    assert ds[(1, i)]["video"].shape == (3, 16, 256, 256)
                out[f"{name}_samples_per_s_per_core"] = samples / (time.perf_counter() - t0)
                out[f"{name}_samples_per_cpu_s"] = samples / (time.process_time() - c0)
        finally:
            os.sched_setaffinity(0, cores)
            torch.set_num_threads(threads)
    out["speedup"] = out["seek_samples_per_cpu_s"] / out["full_decode_samples_per_cpu_s"]
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m train.bench_train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench/train.json")
    p.add_argument("--config", default="train/configs/tiny.yaml")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--loader-samples", type=int, default=48, help="samples per loader measure (0 = skip it)")
    p.add_argument("--loader-gop", type=int, default=60,
                   help="keyframe interval of the loader's test clips (60 = 2 s at 30 fps; 0 = x264's default 250)")
    p.add_argument("--loader-crf", type=int, default=23, help="x264 CRF of the loader's test clips (23: ~YouTube 360p)")
    p.add_argument("--loader-only", action="store_true", help="only the loader measure, no training steps")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    result = {"config": a.config, "overrides": a.overrides, "device": "cuda" if torch.cuda.is_available() else "cpu",
              "torch": torch.__version__, "paper_samples_per_s_per_gpu": PAPER_SAMPLES_PER_S_PER_GPU}
    if a.loader_samples:
        r = result["loader"] = loader_bench(a.loader_samples, gop=a.loader_gop, crf=a.loader_crf)
        print(f"loader (200-frame 640x360 clips -> 16x256x256, one core): "
              f"{r['full_decode_samples_per_s_per_core']:.2f} samples/s full decode, "
              f"{r['seek_samples_per_s_per_core']:.2f} samples/s wanted frames only; per CPU-second "
              f"{r['full_decode_samples_per_cpu_s']:.2f} and {r['seek_samples_per_cpu_s']:.2f} "
              f"({r['speedup']:.1f}x; GOP {r['gop']}, CRF {r['crf']}, {r['video_kbps']} kb/s)")
    if a.loader_only:
        print(f"wrote {write_json(a.out, result)}")
        return result
    for cached in (False, True):
        with tempfile.TemporaryDirectory(prefix="realcam_bench_train_") as tmp:
            r = run_once(a.config, a.overrides, a.steps, a.warmup, cached, Path(tmp))
        name = "cached_latents" if cached else "no_cache"
        result[name] = r
        print(f"{name}: {r['samples_per_s_median']:.2f} samples/s (median of {r['steps_timed']} steps), "
              f"peak {r['peak_memory_mb']:.0f} MB")
    print(f"wrote {write_json(a.out, result)}")
    return result


if __name__ == "__main__":
    main()
