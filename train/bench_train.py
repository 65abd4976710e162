"""Trainer benchmark: samples/s and peak memory of real training steps, with and without cached latents.

    python -m train.bench_train --out bench/train.json [--config train/configs/tiny.yaml] [--steps 12] [key=value ...]

Runs the trainer twice in fresh run folders: once encoding every batch with the VAE and CLIP towers, once from
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


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m train.bench_train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench/train.json")
    p.add_argument("--config", default="train/configs/tiny.yaml")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    result = {"config": a.config, "overrides": a.overrides, "device": "cuda" if torch.cuda.is_available() else "cpu",
              "torch": torch.__version__, "paper_samples_per_s_per_gpu": PAPER_SAMPLES_PER_S_PER_GPU}
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
