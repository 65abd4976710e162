"""The full DynamiCrafter model (LatentVisualDiffusion-like): VAE, CLIP towers, Resampler, UNet, schedule.

Native component names and the checkpoint prefixes they map to:

    unet              model.diffusion_model.*   (identical names)
    image_proj_model  image_proj_model.*        (identical names)
    vae               first_stage_model.*       (diffusers AutoencoderKL <-> LDM names, vae.py)
    text_encoder      cond_stage_model.model.*  (transformers CLIP text <-> open_clip names, conditioning.py)
    image_encoder     embedder.model.*          (transformers CLIP vision <-> open_clip names, conditioning.py)
    schedule          bare buffers (betas, alphas_cumprod, ..., scale_arr)

`load_dynamicrafter` reads the official `model.ckpt` (or a safetensors file with the same names, or a folder
written by `python -m train.convert`) into a model built on the meta device, strictly.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import (
    COMPONENTS,
    PREFIXES,
    add_prefix,
    check_keys,
    load_strict,
    read_state_dict,
    rename_legacy_keys,
    strip_prefix,
)
from .conditioning import (
    ImageEncoder,
    TextEncoder,
    Tokenizer,
    image_ckpt_to_native,
    image_native_to_ckpt,
    text_ckpt_to_native,
    text_native_to_ckpt,
)
from .config import ModelConfig, load_config, save_config
from .diffusion import DDIMSampler, DiffusionSchedule
from .resampler import Resampler
from .unet import UNetModel
from .vae import build_vae, decode_video, encode_video, vae_ckpt_to_native, vae_native_to_ckpt


class DynamiCrafter(nn.Module):
    def __init__(self, cfg: ModelConfig, meta: bool = False, tokenizer: Any = None):
        super().__init__()
        self.cfg = cfg
        self.schedule = DiffusionSchedule(cfg.diffusion)  # always real: tiny, and not in converted folders
        with torch.device("meta") if meta else nullcontext():
            self.unet = UNetModel(cfg.unet)
            self.vae = build_vae(cfg.vae)
            self.text_encoder = TextEncoder(cfg.text_encoder)
            self.image_encoder = ImageEncoder(cfg.image_encoder)
            self.image_proj_model = Resampler(cfg.resampler)
        if tokenizer is None and cfg.text_encoder.tokenizer_path:
            tokenizer = Tokenizer(cfg.text_encoder.tokenizer_path, cfg.text_encoder.context_length)
        self.tokenizer = tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    # ------------------------------------------------------------------------------------- state-dict naming
    def component_state_dicts(self) -> dict[str, dict[str, torch.Tensor]]:
        out = {name: getattr(self, name).state_dict() for name in COMPONENTS}
        out["schedule"] = self.schedule.state_dict()
        return out

    def checkpoint_state_dict(self) -> dict[str, torch.Tensor]:
        """This model's tensors under the official checkpoint names (works on meta too)."""
        return native_to_checkpoint(self.component_state_dicts(), self.cfg)

    # ---------------------------------------------------------------------------------------------- stages
    def encode_first_stage(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Pixels in [-1, 1], [b, 3, t, H, W] or [b, 3, H, W] -> posterior sample * scale_factor."""
        return encode_video(self.vae, x, generator)

    def decode_first_stage(self, z: torch.Tensor) -> torch.Tensor:
        return decode_video(self.vae, z)

    def get_learned_conditioning(self, prompts: list[str]) -> torch.Tensor:
        if self.tokenizer is None:
            raise RuntimeError("no tokenizer: set text_encoder.tokenizer_path or pass tokenizer=")
        ids = self.tokenizer(prompts).to(self.device)
        return self.text_encoder(ids)

    def get_image_embeds(self, image: torch.Tensor) -> torch.Tensor:
        """Condition image [b, 3, H, W] in [-1, 1] -> Resampler tokens [b, 16 * T, context_dim]."""
        tokens = self.image_encoder(image.to(self.device))
        return self.image_proj_model(tokens.to(self.dtype))

    def get_conditioning(
        self,
        image: torch.Tensor,
        prompts: list[str],
        frames: int,
        generator: torch.Generator | None = None,
        last_image: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(cond, uncond) for i2v. context = cat(text 77, image tokens); concat = first-frame latent repeated over
        time, or (interp/loop, `last_image` given) zeros except frames 0 and T-1. uncond: empty prompt + the
        image tokens of an all-zero image, same concat latent."""
        image = image.to(self.device)
        b = image.shape[0]
        z = self.encode_first_stage(image, generator)
        if last_image is None:
            concat = z[:, :, None].expand(-1, -1, frames, -1, -1)
        else:
            concat = torch.zeros(*z.shape[:2], frames, *z.shape[2:], device=z.device, dtype=z.dtype)
            concat[:, :, 0] = z
            concat[:, :, -1] = self.encode_first_stage(last_image.to(self.device), generator)
        text = self.get_learned_conditioning(prompts).to(self.dtype)
        text_u = self.get_learned_conditioning([""] * b).to(self.dtype)
        cond = {"context": torch.cat([text, self.get_image_embeds(image)], dim=1), "concat": concat}
        uncond = {
            "context": torch.cat([text_u, self.get_image_embeds(torch.zeros_like(image))], dim=1),
            "concat": concat,
        }
        return cond, uncond

    def apply_model(
        self, x_t: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor], fs: Any = None, **unet_kwargs
    ) -> torch.Tensor:
        """Hybrid conditioning: channel-concat of the condition latent, cross-attention on the context."""
        x = torch.cat([x_t, cond["concat"].to(x_t.dtype)], dim=1)
        return self.unet(x, t, cond["context"], fs=fs, **unet_kwargs)

    # ----------------------------------------------------------------------------------------------- sample
    @torch.no_grad()
    def sample(
        self,
        image: torch.Tensor,
        prompts: str | list[str],
        *,
        frames: int | None = None,
        steps: int | None = None,
        spacing: str | None = None,
        eta: float | None = None,
        cfg_scale: float | None = None,
        guidance_rescale: float | None = None,
        fs: int | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        last_image: torch.Tensor | None = None,
        return_latents: bool = False,
        **unet_kwargs,
    ) -> torch.Tensor:
        """Image [b, 3, H, W] in [-1, 1] + prompt(s) -> video [b, 3, T, H, W] in ~[-1, 1] (DDIM + CFG).

        Unset options take the preset's `sampling` defaults. Deterministic for a given `seed`/`generator`.
        `unet_kwargs` (e.g. `adapter_cond`) go to every UNet call, conditional and unconditional.
        """
        frames = frames or self.cfg.sampling.frames
        prompts = [prompts] * image.shape[0] if isinstance(prompts, str) else list(prompts)
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else seed)
        cond, uncond = self.get_conditioning(image, prompts, frames, generator, last_image)
        latents = self.denoise(cond, uncond, steps=steps, spacing=spacing, eta=eta, cfg_scale=cfg_scale,
                               guidance_rescale=guidance_rescale, fs=fs, generator=generator, **unet_kwargs)
        if return_latents:
            return latents
        return self.decode_first_stage(latents)

    @torch.no_grad()
    def denoise(
        self,
        cond: dict,
        uncond: dict | None,
        *,
        steps: int | None = None,
        spacing: str | None = None,
        eta: float | None = None,
        cfg_scale: float | None = None,
        guidance_rescale: float | None = None,
        fs: int | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        x_t_hook=None,
        progress: bool = False,
        **unet_kwargs,
    ) -> torch.Tensor:
        """The one DDIM + CFG loop (validation samples and train/inference): conditioning of
        :meth:`get_conditioning` -> latents [b, 4, T, h, w] (float32). The frame count and latent size come
        from ``cond["concat"]``; unset options take the preset's `sampling` defaults.

        ``x_t_hook(index, t, x_t) -> x_t`` runs before every UNet call (noise shaping, continuation pasting:
        train/inference/shaping.py); ``progress`` shows a bar over the steps on stderr."""
        from annotate.log import progress_bar

        s = self.cfg.sampling
        b, _, frames, h, w = cond["concat"].shape
        if torch.is_tensor(fs):  # one value per sample (eval generate batches clips of different strides)
            fs_t = fs.to(self.device, torch.long)
        else:
            fs_t = torch.full((b,), s.fs if fs is None else fs, dtype=torch.long, device=self.device)
        sampler = DDIMSampler(self.schedule, steps or s.steps, spacing or s.spacing, s.eta if eta is None else eta)

        def model_fn(x, t, c_):
            return self.apply_model(x.to(self.dtype), t, c_, fs=fs_t, **unet_kwargs).float()

        with progress_bar("DDIM", len(sampler.timesteps), enabled=progress) as bar:
            return sampler.sample(
                model_fn,
                (b, self.cfg.unet.out_channels, frames, h, w),
                cond,
                uncond,
                guidance_scale=s.cfg_scale if cfg_scale is None else cfg_scale,
                guidance_rescale=s.guidance_rescale if guidance_rescale is None else guidance_rescale,
                generator=generator,
                device=self.device,
                callback=(lambda i, x, x0: bar.advance()) if progress else None,
                x_t_hook=x_t_hook,
            )


# ------------------------------------------------------------------------------------------ key conversion


def checkpoint_to_native(state_dict: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, dict[str, torch.Tensor]]:
    """Official flat checkpoint -> {component: native state dict} (+ "schedule"; unknown keys go to "_rest")."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    claimed: set[str] = set()
    for name, prefix in PREFIXES.items():
        part = strip_prefix(state_dict, prefix)
        claimed.update(prefix + k for k in part)
        out[name] = part
    out["vae"] = vae_ckpt_to_native(out["vae"], cfg.vae)
    out["text_encoder"] = text_ckpt_to_native(out["text_encoder"])
    out["image_encoder"] = image_ckpt_to_native(out["image_encoder"])
    rest = {k: v for k, v in state_dict.items() if k not in claimed}
    out["schedule"] = {k: v for k, v in rest.items() if "." not in k}
    out["_rest"] = {k: v for k, v in rest.items() if "." in k}
    return out


def native_to_checkpoint(components: dict[str, dict[str, torch.Tensor]], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = dict(components.get("schedule", {}))
    converters = {"vae": lambda sd: vae_native_to_ckpt(sd, cfg.vae), "text_encoder": text_native_to_ckpt,
                  "image_encoder": image_native_to_ckpt}  # fmt: skip
    for name, prefix in PREFIXES.items():
        sd = components[name]
        out.update(add_prefix(converters.get(name, dict)(sd), prefix))
    return out


def detect_preset(state_dict: dict[str, torch.Tensor]) -> str:
    """256 has the learnable `alpha`; 512 and 1024 differ by their dynamic-rescale base (scale_arr[-1])."""
    if any(k.endswith("attn2.alpha") for k in state_dict):
        return "256"
    if "scale_arr" in state_dict:
        base = float(state_dict["scale_arr"][-1])
        if math.isclose(base, 0.7, abs_tol=1e-4):
            return "512"
        if math.isclose(base, 0.3, abs_tol=1e-4):
            return "1024"
    raise ValueError("cannot tell the model variant from the checkpoint; pass a config/preset explicitly")


def load_dynamicrafter(
    path: str | Path,
    config: ModelConfig | str | Path | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    unsafe_pickle: bool = False,
    tokenizer: Any = None,
) -> DynamiCrafter:
    """Strictly load an official checkpoint file (.ckpt / .safetensors, checkpoint names) or a `train.convert`
    folder into a meta-built model. Raises StateDictMismatchError with a key report on any mismatch."""
    path = Path(path)
    if isinstance(config, str | Path):
        config = load_config(config)
    if path.is_dir():
        from safetensors.torch import load_file

        cfg = config or load_config(path / "config.yaml")
        model = DynamiCrafter(cfg, meta=True, tokenizer=tokenizer)
        for name in COMPONENTS:
            load_strict(getattr(model, name), load_file(str(path / f"{name}.safetensors")), name, dtype)
    else:
        sd = rename_legacy_keys(read_state_dict(path, unsafe_pickle))
        cfg = config or load_config(detect_preset(sd))
        model = DynamiCrafter(cfg, meta=True, tokenizer=tokenizer)
        # Check in checkpoint names first so the report speaks the file's language.
        check_keys(model.checkpoint_state_dict(), sd, f"checkpoint {path.name} vs preset {cfg.name}")
        parts = checkpoint_to_native(sd, cfg)
        del sd
        for name in COMPONENTS:
            load_strict(getattr(model, name), parts[name], name, dtype)
        load_strict(model.schedule, parts["schedule"], "schedule")
    model.eval()
    if device is not None:
        model.to(device)
    return model


def save_components(model: DynamiCrafter, out_dir: str | Path) -> list[Path]:
    """Write one safetensors file per component (native names) plus config.yaml."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in COMPONENTS:
        sd = {k: _own_storage(v) for k, v in getattr(model, name).state_dict().items()}
        save_file(sd, str(out_dir / f"{name}.safetensors"), metadata={"component": name, "model": model.cfg.name})
        written.append(out_dir / f"{name}.safetensors")
    save_config(model.cfg, out_dir / "config.yaml")
    written.append(out_dir / "config.yaml")
    return written


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    """safetensors refuses views that share storage (e.g. q/k/v split from open_clip's in_proj)."""
    t = t.detach().contiguous()
    if t.untyped_storage().nbytes() != t.numel() * t.element_size():
        t = t.clone()
    return t
