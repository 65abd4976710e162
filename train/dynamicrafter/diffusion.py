"""Noise schedule, training target/loss and the DDIM sampler with classifier-free guidance.

Schedule: LDM "linear" betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2, optionally rescaled to zero
terminal SNR (512/1024). Buffers carry the checkpoint's names. `scale_arr` (dynamic rescale, 512/1024) is
cat(linspace(1, base, turning_step), full(T, base)): training scales x0 by scale_arr[t] before noising, DDIM
multiplies pred_x0 by scale_arr[t_prev] / scale_arr[t].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .config import DiffusionConfig

ModelFn = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]


def linear_betas(cfg: DiffusionConfig) -> torch.Tensor:
    return torch.linspace(cfg.linear_start**0.5, cfg.linear_end**0.5, cfg.timesteps, dtype=torch.float64) ** 2


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift/scale sqrt(alpha_bar) so the last step has alpha_bar == 0 while the first is unchanged."""
    ab_sqrt = torch.cumprod(1 - betas, 0).sqrt()
    a0, a_t = ab_sqrt[0].clone(), ab_sqrt[-1].clone()
    ab_sqrt = (ab_sqrt - a_t) * a0 / (a0 - a_t)
    ab = ab_sqrt**2
    alphas = torch.cat([ab[:1], ab[1:] / ab[:-1]])
    return 1 - alphas


def _extract(a: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return a.to(x.device)[t.to(a.device).long()].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))


class DiffusionSchedule(nn.Module):
    def __init__(self, cfg: DiffusionConfig):
        super().__init__()
        self.cfg = cfg
        self.parameterization = cfg.parameterization
        self.num_timesteps = cfg.timesteps
        betas = linear_betas(cfg)
        if cfg.rescale_zero_snr:
            betas = rescale_zero_terminal_snr(betas)
        alphas = 1 - betas
        acp = torch.cumprod(alphas, 0)
        acp_prev = torch.cat([torch.ones(1, dtype=acp.dtype), acp[:-1]])
        posterior_variance = betas * (1 - acp_prev) / (1 - acp)
        buffers = {
            "betas": betas,
            "alphas_cumprod": acp,
            "alphas_cumprod_prev": acp_prev,
            "sqrt_alphas_cumprod": acp.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1 - acp).sqrt(),
            "log_one_minus_alphas_cumprod": (1 - acp).log(),
            # the original stores zeros for these two in v mode (never used there)
            "sqrt_recip_alphas_cumprod": (1 / acp).sqrt() if cfg.parameterization == "eps" else torch.zeros_like(acp),
            "sqrt_recipm1_alphas_cumprod": (1 / acp - 1).sqrt()
            if cfg.parameterization == "eps"
            else torch.zeros_like(acp),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
            "posterior_mean_coef1": betas * acp_prev.sqrt() / (1 - acp),
            "posterior_mean_coef2": (1 - acp_prev) * alphas.sqrt() / (1 - acp),
        }
        if cfg.use_dynamic_rescale:
            buffers["scale_arr"] = torch.cat(
                [
                    torch.linspace(1.0, cfg.base_scale, cfg.turning_step, dtype=torch.float64),
                    torch.full((cfg.timesteps,), cfg.base_scale, dtype=torch.float64),
                ]
            )
        for name, value in buffers.items():
            self.register_buffer(name, value.float())

    # ---- forward process and targets
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return (
            _extract(self.sqrt_alphas_cumprod, t, x0) * x0 + _extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    def get_v(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (
            _extract(self.sqrt_alphas_cumprod, t, x0) * noise - _extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * x0
        )

    def eps_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (
            _extract(self.sqrt_alphas_cumprod, t, x_t) * v + _extract(self.sqrt_one_minus_alphas_cumprod, t, x_t) * x_t
        )

    def x0_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return (
            _extract(self.sqrt_alphas_cumprod, t, x_t) * x_t - _extract(self.sqrt_one_minus_alphas_cumprod, t, x_t) * v
        )

    def rescale_x0(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Dynamic rescale of the training input (512/1024): x0 * scale_arr[t]; identity otherwise."""
        if not self.cfg.use_dynamic_rescale:
            return x0
        return x0 * _extract(self.scale_arr, t, x0)

    def training_loss(
        self,
        model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        x0: torch.Tensor,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Plain MSE to eps or v, averaged over everything (all frames incl. the condition frame; logvar 0).

        `model_fn(x_t, t)` returns the UNet output; t ~ U{0..T-1} per sample when not given.
        """
        b = x0.shape[0]
        if t is None:
            t = torch.randint(0, self.num_timesteps, (b,), generator=generator, device="cpu").to(x0.device)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device="cpu", dtype=x0.dtype).to(x0.device)
        x0 = self.rescale_x0(x0, t)
        x_t = self.q_sample(x0, t, noise)
        target = noise if self.parameterization == "eps" else self.get_v(x0, noise, t)
        pred = model_fn(x_t, t)
        loss = torch.mean((pred.float() - target.float()) ** 2)
        return loss, {"t": t, "x_t": x_t, "target": target, "pred": pred}


# ------------------------------------------------------------------------------------------------------- DDIM


def ddim_timesteps(steps: int, spacing: str = "uniform", num_train: int = 1000) -> torch.Tensor:
    """Ascending DDIM timesteps. uniform: 1, 1+c, ... (c = T // steps); uniform_trailing: ..., T-1."""
    if spacing == "uniform":
        c = num_train // steps
        return torch.arange(0, num_train, c, dtype=torch.long) + 1  # as the original: may exceed `steps`
    if spacing == "uniform_trailing":
        c = num_train / steps
        ts = torch.arange(num_train, 0, -c, dtype=torch.float64).round().long().flip(0) - 1
        # float arange can overshoot by one element (-> timestep -1) for some step counts: drop it
        return ts[ts >= 0]
    raise ValueError(f"unknown timestep spacing {spacing!r}")


def rescale_noise_cfg(cfg_out: torch.Tensor, cond_out: torch.Tensor, guidance_rescale: float) -> torch.Tensor:
    """Match the std of the guided prediction to the conditional one (Lin et al. 2023), blended by the factor."""
    dims = list(range(1, cond_out.dim()))
    rescaled = cfg_out * (cond_out.std(dim=dims, keepdim=True) / cfg_out.std(dim=dims, keepdim=True))
    return guidance_rescale * rescaled + (1 - guidance_rescale) * cfg_out


def guided_output(
    model_fn: ModelFn,
    x: torch.Tensor,
    t: torch.Tensor,
    cond: Any,
    uncond: Any = None,
    scale: float = 1.0,
    guidance_rescale: float = 0.0,
) -> torch.Tensor:
    """Classifier-free guidance on the raw model output (eps or v), with optional guidance rescale."""
    out = model_fn(x, t, cond)
    if uncond is None or scale == 1.0:
        return out
    out_u = model_fn(x, t, uncond)
    guided = out_u + scale * (out - out_u)
    if guidance_rescale > 0:
        guided = rescale_noise_cfg(guided, out, guidance_rescale)
    return guided


def _randn(shape, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32).to(like.device, like.dtype)


class DDIMSampler:
    def __init__(self, schedule: DiffusionSchedule, steps: int = 50, spacing: str = "uniform", eta: float = 1.0):
        self.schedule = schedule
        self.timesteps = ddim_timesteps(steps, spacing, schedule.num_timesteps)
        acp = schedule.alphas_cumprod.detach().cpu().double()
        self.alphas = acp[self.timesteps]
        self.alphas_prev = torch.cat([acp[:1], acp[self.timesteps[:-1]]])
        self.sigmas = eta * ((1 - self.alphas_prev) / (1 - self.alphas) * (1 - self.alphas / self.alphas_prev)).sqrt()
        self.scales = self.scales_prev = None
        if schedule.cfg.use_dynamic_rescale:
            self.scales = schedule.scale_arr.detach().cpu().double()[self.timesteps]
            self.scales_prev = torch.cat([self.scales[:1], self.scales[:-1]])

    def step(
        self, x: torch.Tensor, model_out: torch.Tensor, index: int, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One DDIM update from ddim index `index` (timestep self.timesteps[index]) -> (x_prev, pred_x0)."""
        s = self.schedule
        t = torch.full((x.shape[0],), int(self.timesteps[index]), device=x.device, dtype=torch.long)
        a_t, a_prev, sigma = (float(v[index]) for v in (self.alphas, self.alphas_prev, self.sigmas))
        if s.parameterization == "v":
            eps = s.eps_from_v(x, t, model_out)
            pred_x0 = s.x0_from_v(x, t, model_out)
        else:
            eps = model_out
            pred_x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        if self.scales is not None:
            pred_x0 = pred_x0 * float(self.scales_prev[index] / self.scales[index])
        dir_xt = max(1 - a_prev - sigma**2, 0.0) ** 0.5 * eps
        x_prev = a_prev**0.5 * pred_x0 + dir_xt + sigma * noise
        return x_prev, pred_x0

    @torch.no_grad()
    def sample(
        self,
        model_fn: ModelFn,
        shape: tuple[int, ...],
        cond: Any,
        uncond: Any = None,
        guidance_scale: float = 1.0,
        guidance_rescale: float = 0.0,
        generator: torch.Generator | None = None,
        x_T: torch.Tensor | None = None,
        device: torch.device | str = "cpu",
        callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
        x_t_hook: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Run DDIM from pure noise (or x_T); `model_fn(x, t, cond)` gives the raw UNet output.

        `x_t_hook(index, t, x_t) -> x_t`, if given, runs at every step *before* the UNet call (ddim `index`
        counts down from len(timesteps)-1; `t` is the [b] DDPM timestep tensor) and may return a modified
        x_t, e.g. RealCam-I2V noise shaping (x_t <- q_sample(z_preview, t) * M + (1 - M) * x_t) or pasting
        the overlap frames of a continuation (train/inference/shaping.py). None: unchanged behaviour.
        """
        ref = torch.empty((), device=device)
        x = x_T if x_T is not None else _randn(shape, generator, ref)
        for i, index in enumerate(reversed(range(len(self.timesteps)))):
            t = torch.full((shape[0],), int(self.timesteps[index]), device=x.device, dtype=torch.long)
            if x_t_hook is not None:
                x = x_t_hook(index, t, x)
            out = guided_output(model_fn, x, t, cond, uncond, guidance_scale, guidance_rescale)
            noise = _randn(x.shape, generator, x) if float(self.sigmas[index]) > 0 else torch.zeros_like(x)
            x, pred_x0 = self.step(x, out, index, noise)
            if callback is not None:
                callback(i, x, pred_x0)
        return x
