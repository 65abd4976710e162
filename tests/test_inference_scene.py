"""Point-cloud previews and the noise-shaping mask on a synthetic room with exact depth, and the DDIM hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from annotate.synth import Room, render
from train.dynamicrafter.config import load_config
from train.dynamicrafter.diffusion import DDIMSampler, DiffusionSchedule
from train.inference.scene import (
    PointCloud,
    backproject,
    point_cloud,
    render_preview,
    resize_crop,
    splat,
    user_intrinsics,
)
from train.inference.shaping import NoiseShaper, OverlapPaster, chain, erode, shaping_mask, visibility
from train.inference.trajectory import make_pose, rot_y

H, W = 96, 128
INTR = np.array([64.0, 64.0, 64.0, 48.0])


@pytest.fixture(scope="module")
def room_scene():
    room = Room.random(np.random.default_rng(5))
    c2w0 = make_pose(np.eye(3), [0.0, 0.0, room.lo[2] + 1.5])
    img, depth = render(room, c2w0, INTR, W, H)
    cloud = point_cloud(img, depth, INTR, outlier_removal=False)
    return room, c2w0, img, depth, cloud


def _gt(room, c2w0, rel):
    return render(room, c2w0 @ rel, INTR, W, H)


def test_image_crop_and_intrinsics_rule():
    img = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    out, plan = resize_crop(img, (256, 256))
    assert out.shape == (256, 256, 3)
    assert plan.resized_hw == (256, 341)
    np.testing.assert_allclose(user_intrinsics(plan), [170.5, 170.5, 128, 128])
    sq, plan = resize_crop(img[:300, :300], (256, 256))
    np.testing.assert_allclose(user_intrinsics(plan), [128, 128, 128, 128])  # reference: f = 128 at 256x256


def test_backprojection_and_identity_splat_reproduce_the_image(room_scene):
    room, c2w0, img, depth, cloud = room_scene
    pts = backproject(depth, INTR)
    # pixel centre (u + 0.5, v + 0.5) of an exact render: the point is on the ray and at the right depth
    np.testing.assert_allclose(pts[10, 20], [(20.5 - 64) / 64 * depth[10, 20], (10.5 - 48) / 64 * depth[10, 20],
                                             depth[10, 20]], rtol=1e-6)
    for size in (1, 2):
        out, z = splat(cloud, np.eye(4), INTR, (H, W), point_size=size)
        if size == 1:
            np.testing.assert_array_equal(out, img)
            np.testing.assert_allclose(z, depth, rtol=1e-6)
        else:
            assert np.isfinite(z).all()


def test_splatted_preview_matches_ground_truth_render(room_scene):
    room, c2w0, img, depth, cloud = room_scene
    rel = make_pose(rot_y(np.radians(3.0)), [0.15, -0.05, 0.2])
    gt_img, gt_depth = _gt(room, c2w0, rel)
    out, z = splat(cloud, rel, INTR, (H, W), point_size=2)
    covered = np.isfinite(z)
    frac = covered.mean()
    err = np.abs(out.astype(int) - gt_img.astype(int)).max(axis=-1)[covered]
    depth_err = np.abs(z[covered] - gt_depth[covered]) / gt_depth[covered]
    print(f"coverage {frac:.3f}, median colour error {np.median(err):.1f}, p90 {np.percentile(err, 90):.1f}, "
          f"median rel depth error {np.median(depth_err):.4f}")
    assert frac > 0.9
    assert np.median(err) <= 12
    assert np.median(depth_err) < 0.03


def test_nearest_depth_wins():
    # two points on the same ray: the near one is drawn whatever the order
    cloud = PointCloud(np.array([[0.0, 0.0, 5.0], [0.0, 0.0, 2.0], [0.0, 0.0, 9.0]]),
                       np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8))
    out, z = splat(cloud, np.eye(4), np.array([10.0, 10.0, 4.0, 4.0]), (8, 8), point_size=1)
    np.testing.assert_array_equal(out[4, 4], [0, 255, 0])
    assert z[4, 4] == 2.0
    assert (out.reshape(-1, 3).any(axis=1)).sum() == 1  # black elsewhere


def test_mask_erosion_rule_and_depth_edges(room_scene):
    room, c2w0, img, depth, cloud = room_scene
    rel = make_pose(np.eye(3), [0.5, 0.0, 0.0])  # sideways: disocclusions next to the boxes' edges
    frames = render_preview(cloud, np.stack([np.eye(4), rel]), INTR, (H, W), point_size=1)
    vis = visibility(frames)
    holes = 1 - vis[1]
    assert holes.sum() > 30  # there are disoccluded pixels
    eroded, lat = shaping_mask(frames, (H // 8, W // 8))
    # the rule: kept iff all 5x5 neighbours visible, reflect padding (brute force)
    padded = np.pad(vis[1].numpy(), 2, mode="reflect")
    brute = np.ones((H, W))
    for dy in range(5):
        for dx in range(5):
            brute *= padded[dy:dy + H, dx:dx + W]
    np.testing.assert_array_equal(eroded[1].numpy(), brute)
    near_hole = F.max_pool2d(holes[None, None], 5, 1, 2)[0, 0].bool()
    assert eroded[1][near_hole].sum() == 0
    # every latent cell kept samples (align_corners) a pixel with no hole within 2 px
    ys = np.round(np.arange(H // 8) * (H - 1) / (H // 8 - 1)).astype(int)
    xs = np.round(np.arange(W // 8) * (W - 1) / (W // 8 - 1)).astype(int)
    kept = lat[1].numpy() > 0
    assert not near_hole.numpy()[np.ix_(ys, xs)][kept].any()
    assert kept.mean() > 0.5 and lat[0].mean() == 1.0  # most of the view is shaped; frame 0 fully
    # large depth edges in the source depth lie next to holes in the moved view: moving 0.5 m to the right shifts
    # a point at depth z by 64 * 0.5 / z px to the left, so a near -> far edge (left to right) opens a gap between
    # where its near and far neighbours land; wherever that gap is >= 2 px the moved view has a hole in it
    edge = np.abs(np.diff(depth, axis=1)) > 0.5
    assert edge.any()
    gaps = 0
    for r, c in zip(*np.nonzero(np.diff(depth, axis=1) > 0.5)):
        lo, hi = c + 0.5 - 32 / depth[r, c], c + 1.5 - 32 / depth[r, c + 1]
        if hi - lo >= 2:
            gaps += 1
            assert holes[r, int(np.floor(lo)):int(np.ceil(hi)) + 1].sum() > 0, (r, c, lo, hi)
    assert gaps >= 10
    print(f"holes {int(holes.sum())} px, pixel mask kept {eroded[1].mean():.3f}, latent kept {kept.mean():.3f}")


def test_mask_empty_when_looking_away(room_scene):
    room, c2w0, img, depth, cloud = room_scene
    away = make_pose(rot_y(np.pi), [0.0, 0.0, 0.0])
    frames = render_preview(cloud, np.stack([np.eye(4), away]), INTR, (H, W))
    assert frames[1].max() == 0
    eroded, lat = shaping_mask(frames, (H // 8, W // 8))
    assert eroded[1].sum() == 0 and lat[1].sum() == 0


def test_visibility_of_float_previews_matches_uint8():
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    frames[0, 2:5, 3:6, 1] = 1  # barely not black
    x = torch.from_numpy(frames).float().permute(0, 3, 1, 2) / 127.5 - 1
    torch.testing.assert_close(visibility(x), visibility(frames))
    assert visibility(frames)[0].sum() == 9
    assert erode(visibility(frames), 3)[0].sum() == 1


def _schedule():
    return DiffusionSchedule(load_config("tiny").diffusion)


def test_noise_shaping_steps_and_paste_values():
    sched = _schedule()
    sampler = DDIMSampler(sched, 25, "uniform_trailing", eta=1.0)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, 3, 4, 4, generator=g)
    mask = (torch.rand(3, 4, 4, generator=g) > 0.5).float()
    shaper = NoiseShaper(sched, z, mask, threshold=900, generator=torch.Generator().manual_seed(1))
    noise_gen = torch.Generator().manual_seed(1)  # the shaper's noise: successive draws of its generator
    noises = [torch.randn(z.shape, generator=noise_gen) for _ in range(3)]
    log = []

    def hook(index, t, x):
        y = shaper(index, t, x)
        log.append((int(t[0]), x.clone(), y.clone()))
        return y

    seen = []

    def model_fn(x, t, cond):
        seen.append(x.clone())
        return torch.zeros_like(x)

    sampler.sample(model_fn, (1, 4, 3, 4, 4), None, generator=torch.Generator().manual_seed(2), x_t_hook=hook)
    assert shaper.shaped_timesteps == [999, 959, 919]
    assert [t for t, _, _ in log] == list(sampler.timesteps.flip(0).tolist())
    m = mask[None, None]
    for k, (t, before, after) in enumerate(log):
        torch.testing.assert_close(seen[k], after)  # the UNet sees the shaped x_t
        if k < 3:
            expect = sched.q_sample(z, torch.tensor([t]), noises[k]) * m + (1 - m) * before
            torch.testing.assert_close(after, expect)
            torch.testing.assert_close(after * (1 - m), before * (1 - m))
        else:
            assert torch.equal(after, before)


def test_noise_shaping_threshold_variants():
    sched = _schedule()
    z = torch.zeros(1, 4, 2, 2, 2)
    for spacing, threshold, expect in [("uniform_trailing", 999, [999]), ("uniform_trailing", 1000, []),
                                       ("uniform", 900, [961, 921]), ("uniform_trailing", 0, None)]:
        sampler = DDIMSampler(sched, 25, spacing)
        shaper = NoiseShaper(sched, z, torch.ones(2, 2, 2), threshold)
        sampler.sample(lambda x, t, c: torch.zeros_like(x), z.shape, None, generator=torch.Generator().manual_seed(0),
                       x_t_hook=shaper)
        assert shaper.shaped_timesteps == (expect if expect is not None else sampler.timesteps.flip(0).tolist())


def test_overlap_paster_every_step_and_clean_at_end():
    sched = _schedule()
    z0 = torch.randn(1, 4, 2, 2, 2, generator=torch.Generator().manual_seed(3))
    paster = OverlapPaster(sched, z0, torch.Generator().manual_seed(4))
    sampler = DDIMSampler(sched, 5, "uniform_trailing")
    seen = []

    def model_fn(x, t, c):
        seen.append((int(t[0]), x.clone()))
        return torch.zeros_like(x)

    x = sampler.sample(model_fn, (1, 4, 5, 2, 2), None, generator=torch.Generator().manual_seed(0),
                       x_t_hook=chain(None, paster))
    assert paster.pasted_timesteps == [999, 799, 599, 399, 199]
    # at t=999 the overlap frames are almost pure noise, but at t=199 they are close to the clean latents
    t_last, x_last = seen[-1]
    a = float(sched.alphas_cumprod[t_last])
    assert (x_last[:, :, :2] / a**0.5 - z0).abs().mean() < (x_last[:, :, 2:] / a**0.5).abs().mean()
    out = paster.finalize(x)
    assert torch.equal(out[:, :, :2], z0) and torch.equal(out[:, :, 2:], x[:, :, 2:])
