"""Trainer benchmark: samples/s and peak memory of real training steps, with and without cached latents.

    python -m train.bench_train --out bench/train.json [--config train/configs/tiny.yaml] [--steps 12] [key=value ...]

``--config`` is the training preset of the timed steps (or this command's own ``--print-config`` output); words
``key=value`` are training overrides unless the key is one of this command's (``--help`` lists them).

First the data loader alone (``loader_bench``): samples/s on one core from 200-frame 640x360 clips at
256x256, per wall-clock second and per CPU-second of the process (the fair figure on a shared machine), for
three loaders measured in interleaved rounds (medians; the host's load average beside them): every frame
decoded (before issue 15), the dataset's reader with float samples (the worker scales to [-1, 1]), and the
dataset as the trainer uses it (uint8 samples, scaled on the trainer's device). The clips are encoded like
RealEstate10K's YouTube sources: libx264 preset medium (B-frames, b-pyramid), CRF 23 (~950 kb/s at 640x360), a
keyframe every ``--loader-gop`` frames (60 = 2 s at 30 fps, the long end of YouTube's 1-2 s; 0 = x264's default
of 250, i.e. one keyframe per 200-frame clip, as ``annotate extract`` writes its clips today);
``--loader-x264-params`` adds libx264 settings (e.g. ``b-pyramid=none:bframes=7``). Then the trainer twice in
fresh run folders: once encoding every batch with the VAE and CLIP towers, once from the encoder cache
(``run.cache_dir``, precomputed before the timed steps). Validation and intermediate checkpoints are off; the
first ``--warmup`` steps are not timed. Anchor for GPU runs of the 256 preset: the paper's 25 h for 50k steps at
batch 64 on 8xH100 is ~4.4 samples/s per GPU (goal: 2x that).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from annotate.command import Command
from annotate.config import ConfigError, read_yaml
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


def _clip_video(path: Path, n: int, hw: tuple[int, int], gop: int, seed: int, crf: int = 23,
                x264_params: str = "") -> None:
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
    write_video(path, frames, fps=30.0, crf=crf, gop=gop, x264_params=x264_params)


def loader_bench(samples: int = 48, clips: int = 2, frames: int = 200, hw: tuple[int, int] = (360, 640),
                 gop: int = 60, seed: int = 0, crf: int = 23, x264_params: str = "", rounds: int = 3) -> dict:
    """The data loader alone (decode + resize/crop to 256x256, 16 frames, training strides 1-10) on one CPU
    core: samples/s of every frame decoded (``full_decode``, before issue 15), of the dataset's reader with float
    samples (``seek_float``) and with uint8 samples as the trainer reads them (``seek``), per wall second and per
    CPU-second: medians of ``rounds`` interleaved rounds of ``samples / rounds`` samples each (a shared host's
    load shifts between rounds, not between loaders); ``gop`` 0 = x264's default keyframe interval."""
    import os
    import time

    import numpy as np

    from train.config import DataConfig
    from train.data import CameraVideoDataset

    per = max(1, samples // rounds)
    with tempfile.TemporaryDirectory(prefix="realcam_bench_loader_") as tmp:
        rows = []
        for k in range(clips):
            path = Path(tmp) / f"clip{k}.mp4"
            _clip_video(path, frames, hw, gop or None, seed + k, crf, x264_params)
            rows.append({"clip_id": f"clip{k}", "video_path": str(path), "num_frames": frames, "fps": 30.0,
                         "intrinsics": np.tile([0.5, 0.9, 0.5, 0.5], (frames, 1)),
                         "w2c": np.tile(np.eye(4)[:3], (frames, 1, 1)), "frame_scale": np.ones(frames),
                         "scale": 1.0})
        cfg = DataConfig(height=256, width=256, frames=16)
        loaders = {"full_decode": CameraVideoDataset(cfg, clips=rows, seed=seed),
                   "seek_float": CameraVideoDataset(cfg, clips=rows, seed=seed),
                   "seek": CameraVideoDataset(cfg, clips=rows, seed=seed, uint8=True)}
        loaders["full_decode"].read = _full_decode
        cores = os.sched_getaffinity(0)
        threads = torch.get_num_threads()
        os.sched_setaffinity(0, {min(cores)})  # one worker core: decoder threads and torch share it
        torch.set_num_threads(1)
        kbps = sum(Path(r["video_path"]).stat().st_size for r in rows) * 8 / 1000 / (clips * frames / 30.0)
        out = {"clips": clips, "frames_per_clip": frames, "source_hw": list(hw), "gop": gop or "x264 default (250)",
               "gop_seconds": (gop or 250) / 30.0, "crf": crf, "x264_params": x264_params,
               "encoding": "libx264 preset medium, 30 fps", "video_kbps": round(kbps), "out_hw": [256, 256],
               "frames_per_sample": 16, "stride_range": list(cfg.stride_range), "samples": per * rounds,
               "rounds": rounds, "load_average_before": list(os.getloadavg())}
        wall: dict[str, list[float]] = {k: [] for k in loaders}
        cpu: dict[str, list[float]] = {k: [] for k in loaders}
        try:
            for ds in loaders.values():
                ds[(0, 0)]  # warm-up
            for r in range(rounds):
                for name in (list(loaders) if r % 2 == 0 else list(loaders)[::-1]):
                    ds = loaders[name]
                    t0, c0 = time.perf_counter(), time.process_time()
                    for i in range(per):
                        assert ds[(1 + r, i)]["video"].shape == (3, 16, 256, 256)
                    wall[name].append(per / (time.perf_counter() - t0))
                    cpu[name].append(per / (time.process_time() - c0))
        finally:
            os.sched_setaffinity(0, cores)
            torch.set_num_threads(threads)
        for name in loaders:
            out[f"{name}_samples_per_s_per_core"] = statistics.median(wall[name])
            out[f"{name}_samples_per_cpu_s"] = statistics.median(cpu[name])
            out[f"{name}_samples_per_cpu_s_rounds"] = [round(x, 3) for x in cpu[name]]
        out["load_average_after"] = list(os.getloadavg())
    out["speedup"] = out["seek_samples_per_cpu_s"] / out["full_decode_samples_per_cpu_s"]
    out["uint8_gain"] = out["seek_samples_per_cpu_s"] / out["seek_float_samples_per_cpu_s"]
    return out


@dataclass
class BenchTrainConfig:
    out: str = "bench/train.json"  # the JSON written
    train_config: str = "train/configs/tiny.yaml"  # training preset of the timed steps (--config sets it)
    overrides: list[str] = field(default_factory=list)  # training key=value overrides of the timed steps (words)
    steps: int = 12  # training steps per run
    warmup: int = 2  # first steps not timed
    loader_samples: int = 48  # samples per loader measure (0 = skip it)
    loader_rounds: int = 3  # interleaved rounds of the loader measure (medians over them)
    loader_gop: int = 60  # keyframe interval of the loader's test clips (60 = 2 s at 30 fps; 0 = x264's default 250)
    loader_crf: int = 23  # x264 CRF of the loader's test clips (23: ~YouTube 360p)
    loader_x264_params: str = ""  # more libx264 settings of the loader's clips, e.g. b-pyramid=none:bframes=7
    loader_only: bool = False  # only the loader measure, no training steps


def main(cfg: BenchTrainConfig) -> dict:
    """The loader measure, then (unless ``loader_only``) the trainer without and with the encoder cache; the
    result, also written to ``cfg.out``."""
    result = {"config": cfg.train_config, "overrides": list(cfg.overrides),
              "device": "cuda" if torch.cuda.is_available() else "cpu",
              "torch": torch.__version__, "paper_samples_per_s_per_gpu": PAPER_SAMPLES_PER_S_PER_GPU}
    if cfg.loader_samples:
        r = result["loader"] = loader_bench(cfg.loader_samples, gop=cfg.loader_gop, crf=cfg.loader_crf,
                                            x264_params=cfg.loader_x264_params, rounds=cfg.loader_rounds)
        print(f"loader (200-frame 640x360 clips -> 16x256x256, one core; medians of {r['rounds']} rounds): "
              f"{r['full_decode_samples_per_s_per_core']:.2f} samples/s full decode, "
              f"{r['seek_float_samples_per_s_per_core']:.2f} wanted frames only (float), "
              f"{r['seek_samples_per_s_per_core']:.2f} (uint8); per CPU-second "
              f"{r['full_decode_samples_per_cpu_s']:.2f}, {r['seek_float_samples_per_cpu_s']:.2f} and "
              f"{r['seek_samples_per_cpu_s']:.2f} ({r['speedup']:.1f}x; GOP {r['gop']}, CRF {r['crf']}"
              f"{', ' + r['x264_params'] if r['x264_params'] else ''}, {r['video_kbps']} kb/s; "
              f"load {r['load_average_before'][0]:.1f})")
    if cfg.loader_only:
        print(f"wrote {write_json(cfg.out, result)}")
        return result
    for cached in (False, True):
        with tempfile.TemporaryDirectory(prefix="realcam_bench_train_") as tmp:
            r = run_once(cfg.train_config, list(cfg.overrides), cfg.steps, cfg.warmup, cached, Path(tmp))
        name = "cached_latents" if cached else "no_cache"
        result[name] = r
        print(f"{name}: {r['samples_per_s_median']:.2f} samples/s (median of {r['steps_timed']} steps), "
              f"peak {r['peak_memory_mb']:.0f} MB")
    print(f"wrote {write_json(cfg.out, result)}")
    return result


_OWN = {f.name for f in dataclasses.fields(BenchTrainConfig)}


def _preset(path: str) -> dict:
    """``--config``: a training preset (the historical meaning: the timed steps run it) or this command's own
    ``--print-config`` output (every top-level key one of :class:`BenchTrainConfig`'s)."""
    data = read_yaml(path)
    return data if set(data) <= _OWN else {"train_config": path}


def _check(cfg: BenchTrainConfig) -> BenchTrainConfig:
    """The training preset and overrides load (a mistyped key fails here, not after the loader measure)."""
    try:
        load_train_config(cfg.train_config, list(cfg.overrides))
    except ConfigError as e:
        raise ConfigError(f"{e} (in the training config {cfg.train_config} and its overrides; this command's own "
                          f"keys: {', '.join(sorted(_OWN))})") from None
    return cfg


def command() -> Command:
    flags = {"--out": "out", "--steps": "steps", "--warmup": "warmup", "--loader-samples": "loader_samples",
             "--loader-rounds": "loader_rounds", "--loader-gop": "loader_gop", "--loader-crf": "loader_crf",
             "--loader-x264-params": "loader_x264_params", "--loader-only": "loader_only"}
    return Command(BenchTrainConfig, lambda cfg, args: main(cfg), "python -m train.bench_train", __doc__,
                   flags=flags, print_result=False, load_preset=_preset, check=_check, passthrough="overrides",
                   presets="training preset of the timed steps (train/configs/*.yaml; sets train_config), "
                           "or this command's --print-config output")


def cli(argv: list[str] | None = None) -> int:
    return command().main(argv)


if __name__ == "__main__":
    sys.exit(cli())
