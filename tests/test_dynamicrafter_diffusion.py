"""Noise schedule, training target, DDIM spacing/steps, CFG with guidance rescale, dynamic rescale."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from train.dynamicrafter.config import DiffusionConfig, load_config
from train.dynamicrafter.diffusion import (
    DDIMSampler,
    DiffusionSchedule,
    ddim_timesteps,
    guided_output,
    rescale_noise_cfg,
)


def test_linear_schedule_eps_256():
    s = DiffusionSchedule(load_config("256").diffusion)
    assert s.parameterization == "eps"
    assert torch.isclose(s.betas[0], torch.tensor(0.00085)) and torch.isclose(s.betas[-1], torch.tensor(0.012))
    # betas are linear in sqrt space
    expected = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    torch.testing.assert_close(s.betas, expected.float(), rtol=1e-6, atol=0)
    assert torch.all(s.alphas_cumprod.diff() < 0) and s.alphas_cumprod[-1] > 0
    assert torch.allclose(s.sqrt_recip_alphas_cumprod, 1 / s.alphas_cumprod.sqrt())
    assert "scale_arr" not in s.state_dict()
    assert len(s.state_dict()) == 12 and all(
        v.shape == (1000,) and v.dtype == torch.float32 for v in s.state_dict().values()
    )


def test_zero_terminal_snr_v_512():
    cfg = load_config("512").diffusion
    s = DiffusionSchedule(cfg)
    plain = DiffusionSchedule(DiffusionConfig(parameterization="v"))
    assert s.parameterization == "v"
    assert s.alphas_cumprod[-1] == 0
    assert torch.isclose(s.alphas_cumprod[0], plain.alphas_cumprod[0])  # first step untouched
    assert torch.all(s.sqrt_recip_alphas_cumprod == 0) and torch.all(s.sqrt_recipm1_alphas_cumprod == 0)
    assert torch.isfinite(s.posterior_variance).all()
    assert s.scale_arr.shape == (1400,)
    assert (
        s.scale_arr[0] == 1
        and torch.isclose(s.scale_arr[399], torch.tensor(0.7))
        and torch.all(s.scale_arr[400:] == s.scale_arr[-1])
    )
    assert torch.isclose(DiffusionSchedule(load_config("1024").diffusion).scale_arr[-1], torch.tensor(0.3))


def test_ddim_timesteps_50():
    assert ddim_timesteps(50, "uniform").tolist() == list(range(1, 1000, 20))
    assert ddim_timesteps(50, "uniform_trailing").tolist() == list(range(19, 1000, 20))
    assert ddim_timesteps(25, "uniform_trailing").tolist() == list(range(39, 1000, 40))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 200))
def test_trailing_spacing_properties(steps):
    ts = ddim_timesteps(steps, "uniform_trailing")
    assert len(ts) == steps and ts[-1] == 999 and ts[0] >= 0 and torch.all(ts.diff() > 0)


def test_q_sample_and_v_target():
    s = DiffusionSchedule(DiffusionConfig(parameterization="v"))
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 2, 5, 5, generator=g), torch.randn(3, 4, 2, 5, 5, generator=g)
    t = torch.tensor([0, 500, 999])
    x_t = s.q_sample(x0, t, noise)
    a = s.alphas_cumprod[t].view(-1, 1, 1, 1, 1)
    assert torch.allclose(x_t, a.sqrt() * x0 + (1 - a).sqrt() * noise, atol=1e-5)
    v = s.get_v(x0, noise, t)
    assert torch.allclose(s.x0_from_v(x_t, t, v), x0, atol=1e-5)
    assert torch.allclose(s.eps_from_v(x_t, t, v), noise, atol=1e-5)


def test_training_loss_targets_and_dynamic_rescale():
    g = torch.Generator().manual_seed(1)
    x0, noise, t = (
        torch.randn(2, 4, 3, 4, 4, generator=g),
        torch.randn(2, 4, 3, 4, 4, generator=g),
        torch.tensor([10, 700]),
    )
    eps = DiffusionSchedule(DiffusionConfig())
    loss, aux = eps.training_loss(lambda x, tt: torch.zeros_like(x), x0, t, noise)
    assert torch.equal(aux["target"], noise) and torch.isclose(loss, (noise**2).mean())
    v = DiffusionSchedule(load_config("512").diffusion)
    loss, aux = v.training_loss(
        lambda x, tt: v.get_v(x0 * v.scale_arr[tt].view(-1, 1, 1, 1, 1), noise, tt), x0, t, noise
    )
    assert loss < 1e-10  # target is v of the rescaled x0
    assert torch.allclose(aux["x_t"], v.q_sample(x0 * v.scale_arr[t].view(-1, 1, 1, 1, 1), t, noise))
    loss, aux = eps.training_loss(lambda x, tt: x, x0, generator=torch.Generator().manual_seed(3))
    assert aux["t"].shape == (2,) and 0 <= aux["t"].min() and aux["t"].max() < 1000


def _oracle(s: DiffusionSchedule, x0: torch.Tensor):
    """A perfect model for a single known x0: returns the exact eps or v of x_t."""

    def fn(x, t, cond):
        a = s.alphas_cumprod[t].view(-1, 1, 1, 1, 1)
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        return eps if s.parameterization == "eps" else a.sqrt() * eps - (1 - a).sqrt() * x0

    return fn


def test_ddim_recovers_x0_with_perfect_model():
    x0 = torch.randn(1, 4, 2, 3, 3, generator=torch.Generator().manual_seed(2))
    for preset, spacing in (("256", "uniform"), ("512", "uniform_trailing")):
        s = DiffusionSchedule(load_config(preset).diffusion)
        s.cfg.use_dynamic_rescale = False  # exact recovery only holds without the x0 rescale
        sampler = DDIMSampler(s, 10, spacing, eta=0.0)
        preds = []
        out = sampler.sample(_oracle(s, x0), x0.shape, None, callback=lambda i, x, p, preds=preds: preds.append(p))
        assert torch.isfinite(out).all()
        assert torch.allclose(preds[-1], x0, atol=1e-4), preset
        assert torch.allclose(out, x0, atol=0.15)  # last step still adds sqrt(1 - acp[0]) * eps


def test_ddim_eta_noise_and_dynamic_rescale_step():
    s = DiffusionSchedule(load_config("512").diffusion)
    sampler = DDIMSampler(s, 50, "uniform_trailing", eta=1.0)
    assert torch.all(sampler.sigmas[1:] > 0)
    x, out, noise = torch.randn(1, 4, 2, 2, 2), torch.randn(1, 4, 2, 2, 2), torch.randn(1, 4, 2, 2, 2)
    i = 30
    t = torch.tensor([int(sampler.timesteps[i])])
    x_prev, pred_x0 = sampler.step(x, out, i, noise)
    ratio = s.scale_arr[sampler.timesteps[i - 1]] / s.scale_arr[sampler.timesteps[i]]
    assert torch.allclose(pred_x0, s.x0_from_v(x, t, out) * ratio, atol=1e-6)
    a_prev, sigma = sampler.alphas_prev[i].item(), sampler.sigmas[i].item()
    expected = a_prev**0.5 * pred_x0 + (1 - a_prev - sigma**2) ** 0.5 * s.eps_from_v(x, t, out) + sigma * noise
    assert torch.allclose(x_prev, expected, atol=1e-5)


def test_cfg_and_guidance_rescale():
    c, u = torch.randn(2, 4, 3, 5, 5), torch.randn(2, 4, 3, 5, 5)
    fn = lambda x, t, cond: c if cond == "c" else u  # noqa: E731
    x, t = torch.zeros(2), torch.zeros(2, dtype=torch.long)
    assert torch.equal(guided_output(fn, x, t, "c", "u", 1.0), c)
    plain = guided_output(fn, x, t, "c", "u", 7.5)
    assert torch.allclose(plain, u + 7.5 * (c - u))
    full = rescale_noise_cfg(plain, c, 1.0)
    assert torch.allclose(full.std(dim=(1, 2, 3, 4)), c.std(dim=(1, 2, 3, 4)), rtol=1e-4)
    assert torch.allclose(guided_output(fn, x, t, "c", "u", 7.5, 0.7), 0.7 * full + 0.3 * plain, atol=1e-6)
