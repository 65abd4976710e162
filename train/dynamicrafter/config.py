"""Typed configs for the DynamiCrafter backbone, loaded from the YAML presets in `configs/`.

Presets: `tiny` (tests), `256`, `512`, `1024` (the official inference yamls; 512_interp uses `512`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

# One typed-config mechanism for the project: unknown keys are errors that name the key.
from annotate.config import from_dict, to_dict  # noqa: F401  (from_dict is part of this module's API)

PRESET_DIR = Path(__file__).parent / "configs"


@dataclass
class UNetConfig:
    in_channels: int = 8
    out_channels: int = 4
    model_channels: int = 320
    attention_resolutions: tuple[int, ...] = (4, 2, 1)
    num_res_blocks: int = 2
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    dropout: float = 0.1
    num_head_channels: int = 64
    transformer_depth: int = 1
    context_dim: int = 1024
    use_linear: bool = True
    use_checkpoint: bool = True  # gradient checkpointing of transformer blocks while training
    temporal_conv: bool = True
    temporal_attention: bool = True
    temporal_selfatt_only: bool = True
    use_relative_position: bool = False
    use_causal_attention: bool = False
    temporal_length: int = 16
    addition_attention: bool = True  # the extra `init_attn` temporal transformer
    image_cross_attention: bool = True
    image_cross_attention_scale_learnable: bool = False  # True only in the 256 model (scalar `alpha`)
    default_fs: int = 3
    fs_condition: bool = True

    def __post_init__(self) -> None:
        # Options of the original code that no DynamiCrafter checkpoint uses are not implemented.
        if self.use_relative_position or self.use_causal_attention or not self.temporal_selfatt_only:
            raise NotImplementedError("relative position / causal / cross temporal attention are not supported")


@dataclass
class ResamplerConfig:
    dim: int = 1024
    depth: int = 4
    dim_head: int = 64
    heads: int = 12
    num_queries: int = 16
    embedding_dim: int = 1280
    output_dim: int = 1024
    ff_mult: int = 4
    video_length: int | None = 16


@dataclass
class VAEConfig:
    """LDM `ddconfig` of the first stage (AutoencoderKL, double_z, no attention outside the mid blocks)."""

    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    norm_num_groups: int = 32
    scale_factor: float = 0.18215


@dataclass
class TextEncoderConfig:
    """open_clip text tower (ViT-H-14: width 1024, 24 layers, 16 heads)."""

    vocab_size: int = 49408
    width: int = 1024
    layers: int = 24
    heads: int = 16
    mlp_ratio: float = 4.0
    context_length: int = 77
    projection_dim: int = 1024
    tokenizer_path: str | None = None  # local folder for transformers.CLIPTokenizer (vocab.json, merges.txt)


@dataclass
class ImageEncoderConfig:
    """open_clip vision tower (ViT-H-14: width 1280, 32 layers, 16 heads, patch 14 at 224).

    The `text_*` fields size the unused text-side tensors the checkpoint keeps under `embedder.model.*`.
    """

    width: int = 1280
    layers: int = 32
    heads: int = 16
    mlp_ratio: float = 4.0
    patch_size: int = 14
    image_size: int = 224
    projection_dim: int = 1024
    text_vocab_size: int = 49408
    text_width: int = 1024
    text_context_length: int = 77
    antialias: bool = True


@dataclass
class DiffusionConfig:
    timesteps: int = 1000
    linear_start: float = 0.00085
    linear_end: float = 0.012
    parameterization: str = "eps"  # "eps" | "v"
    rescale_zero_snr: bool = False
    use_dynamic_rescale: bool = False
    base_scale: float = 0.7
    turning_step: int = 400

    def __post_init__(self) -> None:
        if self.parameterization not in ("eps", "v"):
            raise ValueError(f"parameterization must be 'eps' or 'v', got {self.parameterization!r}")


@dataclass
class SamplingConfig:
    """Defaults of the official inference scripts."""

    steps: int = 50
    spacing: str = "uniform"  # "uniform" | "uniform_trailing"
    eta: float = 1.0
    cfg_scale: float = 7.5
    guidance_rescale: float = 0.0
    fs: int = 3
    frames: int = 16
    height: int = 256
    width: int = 256


@dataclass
class ModelConfig:
    name: str = "dynamicrafter_256"
    unet: UNetConfig = field(default_factory=UNetConfig)
    resampler: ResamplerConfig = field(default_factory=ResamplerConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    image_encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def to_dict(self) -> dict:
        return to_dict(self)


def load_config(name_or_path: str | Path) -> ModelConfig:
    """Load a preset by name ("tiny", "256", "512", "1024") or a YAML file path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
    with open(path) as f:
        data = yaml.safe_load(f)
    return from_dict(ModelConfig, data)


def save_config(cfg: ModelConfig, path: str | Path) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
