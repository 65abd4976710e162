"""Typed trainer config (``python -m train --config train/configs/X.yaml key=value ...``).

Loaded with :mod:`annotate.config` (YAML preset, then dotted overrides; an unknown key is an error naming it).
The backbone's own config lives in ``train/dynamicrafter/config.py``; ``model.preset`` selects it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from annotate.config import ConfigError, apply_overrides, from_dict, read_yaml

ScaleSource = Literal["auto", "condition_frame", "clip", "relative"]
CameraKind = Literal["realcam", "cami2v", "cameractrl", "motionctrl"]
SCALE_SOURCES = get_args(ScaleSource)[1:]
CAMERA_KINDS = get_args(CameraKind)
# The paper's setting per plug-in (Tables 1 and 3): the baselines train on relative RealEstate10K cameras,
# RealCam-I2V on metric ones (scale of the condition frame). data.scale_source=auto picks it.
DEFAULT_SCALE_SOURCE = {"realcam": "condition_frame", "cami2v": "relative", "cameractrl": "relative",
                        "motionctrl": "relative"}


@dataclass
class DataConfig:
    annotation_dir: str = "outputs/sample_annotation"  # annotation job output (clips/*.parquet)
    manifest: str = "data/sample/manifest.csv"  # the job's input manifest: clip_id -> video_path
    split: str = "train"  # manifest split the training clips come from
    val_split: str = "test"  # split of the validation clips
    captions: str = ""  # CSV (clip_id,caption) or JSON {clip_id or clip_id.mp4: caption | [caption]}; "" = empty
    frames: int = 16  # frames per training sample
    height: int = 256  # sample size in pixels (multiple of 8)
    width: int = 256  # sample size in pixels (multiple of 8)
    stride_range: tuple[int, int] = (1, 10)  # training stride, uniform int; reduced for short clips
    val_stride: int = 8  # validation frame stride
    rand_cond_frame: bool = True  # training only; validation always uses frame 0
    scale_source: ScaleSource = "auto"  # auto: the paper's per camera.kind (realcam: condition_frame, others: relative)
    num_workers: int = 2  # DataLoader worker processes per training process
    max_skips: int = 16  # unreadable videos tried in a row before a sample raises
    val_max_clips: int = 256  # validation clips at most (0 = all)


@dataclass
class ModelConfig:
    preset: str = "256"  # train/dynamicrafter preset name or yaml path
    checkpoint: str = ""  # official model.ckpt (or converted folder); "" = random weights (tests / tiny)
    tokenizer: str = ""  # CLIP tokenizer folder (vocab.json, merges.txt); "" with tiny = byte-level tiny one
    gradient_checkpointing: bool = True  # recompute UNet activations in the backward pass (less memory)
    fs_type: Literal["fs", "fps"] = "fs"  # fs: frame stride as the fs embedding (256); fps: fps_ori // stride (512)


@dataclass
class CameraConfig:
    kind: CameraKind = "realcam"  # camera plug-in (RealCam-I2V, CamI2V, CameraCtrl, MotionCtrl)
    num_register_tokens: int = 4  # register tokens of the camera encoder
    encoder_heads: int = 8  # attention heads of the camera encoder
    encoder_res_blocks: int = 2  # residual blocks per level of the camera encoder
    encoder_max_len: int = 16  # sinusoidal temporal position encoding length
    epipolar_levels: list[int] | None = None  # feature levels with an epipolar mask (None = all); others: full
    # full: a frame attends to itself fully; perturbed: the reference's 1e-6 noise
    epipolar_self: Literal["full", "perturbed"] = "full"
    motionctrl_hidden: int = 0  # MotionCtrl MLP width (0 = block width)


@dataclass
class OptimConfig:
    lr: float = 1e-4  # AdamW learning rate
    weight_decay: float = 1e-2  # AdamW weight decay
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    eps: float = 1e-8  # AdamW epsilon
    max_grad_norm: float = 0.5  # gradient clipping norm
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step
    uncond_prob: float = 0.05  # CFG dropout unit (text-only, both, image-only: 5% each)
    max_nonfinite_steps: int = 10  # optimizer steps in a row with non-finite loss/gradients (skipped) that stop a run


@dataclass
class ValidationConfig:
    every: int = 2000  # optimizer steps; 0 = never
    num_samples: int = 4  # validation videos sampled each time
    steps: int = 25  # DDIM steps of the validation videos
    spacing: Literal["uniform", "uniform_trailing"] = "uniform_trailing"  # DDIM timestep spacing
    eta: float = 1.0  # DDIM eta
    cfg_scale: float = 7.5  # classifier-free guidance scale
    guidance_rescale: float = 0.7  # CFG rescale (0 = off)
    loss_batches: int = 2  # fixed-seed validation loss on this many batches (0 = off)


@dataclass
class RunConfig:
    output_dir: str = "runs/realcam"  # run folder (train/training-contract.md); reused to resume
    max_steps: int = 50000  # optimizer steps
    batch_size: int = 1  # per process
    seed: int = 20230211  # seed of data order, noise and dropout
    mixed_precision: Literal["no", "fp16", "bf16"] = "fp16"  # autocast dtype
    deepspeed: str = ""  # DeepSpeed json (ZeRO-1), multi-GPU under accelerate launch; "" = plain DDP / one process
    checkpoint_every: int = 2000  # optimizer steps between checkpoints
    checkpoints_total_limit: int = 0  # 0 = keep all
    log_every: int = 1  # optimizer steps between metrics lines
    tensorboard: bool = True  # TensorBoard logs in the run folder
    wandb: bool = False  # Weights & Biases logging
    progress: bool = True  # progress bar on the main process
    cache_dir: str = ""  # VAE/CLIP cache folder ("" = off), see train/cache.py
    cache_epochs: int = 0  # precompute the cache for this many epochs before training
    log_clip_ids: bool = False  # metrics: clip ids per rank (tests of data sharding)
    allow_tf32: bool = True  # TF32 matmuls on Ampere+ GPUs
    cpu_threads: int = 0  # torch threads per process on the CPU (0 = torch default; 1 avoids oversubscription)


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    run: RunConfig = field(default_factory=RunConfig)
    # input concatenation modes with their probabilities (train/camera/modes.py), e.g.
    # "basic=0.7,interpolation=0.15,continuation=0.15"; recorded in plugin.safetensors
    modes: str = "basic=1.0"
    resume: str = "auto"  # auto: newest complete checkpoint in output_dir; none: start afresh; or a folder
    overwrite: bool = False  # with resume=none: allow a non-empty output_dir (its contents are removed)


def check(cfg: TrainConfig) -> TrainConfig:
    if cfg.camera.kind not in CAMERA_KINDS:
        raise ConfigError(f"camera.kind must be one of {CAMERA_KINDS}, got {cfg.camera.kind!r}")
    if cfg.data.scale_source == "auto":
        cfg.data.scale_source = DEFAULT_SCALE_SOURCE[cfg.camera.kind]
    if cfg.data.scale_source not in SCALE_SOURCES:
        raise ConfigError(f"data.scale_source must be auto or one of {SCALE_SOURCES}, "
                          f"got {cfg.data.scale_source!r}")
    from .camera.modes import parse_modes

    try:
        parse_modes(cfg.modes)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.run.max_steps < 0:
        raise ConfigError(f"run.max_steps must be >= 0, got {cfg.run.max_steps}")
    if cfg.optim.max_nonfinite_steps < 1:
        raise ConfigError(f"optim.max_nonfinite_steps must be >= 1, got {cfg.optim.max_nonfinite_steps}")
    if cfg.run.mixed_precision not in ("no", "fp16", "bf16"):
        raise ConfigError(f"run.mixed_precision must be no, fp16 or bf16, got {cfg.run.mixed_precision!r}")
    if cfg.data.height % 8 or cfg.data.width % 8:
        raise ConfigError("data.height and data.width must be multiples of 8")
    lo, hi = cfg.data.stride_range
    if not 1 <= lo <= hi:
        raise ConfigError(f"data.stride_range must satisfy 1 <= lo <= hi, got {cfg.data.stride_range}")
    if cfg.camera.epipolar_self not in ("full", "perturbed"):
        raise ConfigError("camera.epipolar_self must be full or perturbed")
    return cfg


def read_preset(path: str) -> dict:
    """A preset or a run's config.yaml, whose informational ``meta`` block is ignored."""
    data = read_yaml(path)
    data.pop("meta", None)
    return data


def load_train_config(path: str | None, overrides: list[str] | None = None) -> TrainConfig:
    """Preset (or a run's config.yaml), then overrides."""
    return check(apply_overrides(from_dict(TrainConfig, read_preset(path) if path else {}), list(overrides or [])))
