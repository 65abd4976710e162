"""The one resize-and-crop (annotate/images.py): training and inference give the model the same pixels for the
same frame, and the filter is the antialiased bilinear its docstring says (analytic ramps, PIL as an outside
reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from annotate.images import ImageError, load_image, resize_crop
from annotate.video import read_frames, write_video
from train.config import DataConfig
from train.data import CameraVideoDataset
from train.inference.pipeline import to_tensor
from train.inference.scene import load_image as scene_load_image
from train.inference.scene import resize_crop as scene_resize_crop


def test_training_and_inference_see_identical_pixels(tmp_path):
    rng = np.random.default_rng(0)
    n, hw, out_hw = 12, (90, 160), (32, 48)
    frames = rng.integers(0, 256, (n, *hw, 3), dtype=np.uint8)
    video = tmp_path / "clip.mp4"
    write_video(video, frames)
    clip = {"clip_id": "c", "video_path": str(video), "num_frames": n, "fps": 30.0,
            "intrinsics": np.tile([0.5, 0.9, 0.5, 0.5], (n, 1)), "w2c": np.tile(np.eye(4)[:3], (n, 1, 1)),
            "frame_scale": np.ones(n), "scale": 1.0}
    ds = CameraVideoDataset(DataConfig(height=out_hw[0], width=out_hw[1], frames=4, stride_range=(1, 3)),
                            clips=[clip], seed=0)
    sample = ds[(0, 0)]
    decoded = read_frames(video)
    for j, i in enumerate(sample["frame_indices"].tolist()):
        png = tmp_path / f"frame{i}.png"  # the frame as a user would give it to inference (lossless)
        Image.fromarray(decoded[i]).save(png)
        image, plan = scene_resize_crop(scene_load_image(png), out_hw)
        assert image.shape == (*out_hw, 3) and plan.out_hw == out_hw
        assert torch.equal(to_tensor(image, "cpu")[0], sample["video"][:, j])  # exact: same function, same input


def test_constant_and_ramp_images_resize_to_their_analytic_values():
    const, _ = resize_crop(np.full((70, 150, 3), 173, np.uint8), (32, 32))
    assert const.shape == (32, 32, 3) and np.all(const == 173)
    # a ramp along x, 2.5x downscaled: a normalised symmetric filter keeps a linear function, so each output
    # pixel is the ramp at its centre mapped into the source, (x + left + 0.5) * 2.5 - 0.5 (pixel-index units)
    h, w, slope = 120, 300, 0.8
    ramp = np.repeat(np.round(slope * np.arange(w))[None, :, None], h, 0).repeat(3, 2).astype(np.uint8)
    out, plan = resize_crop(ramp, (48, 48))
    assert plan.resized_hw == (48, 120) and (plan.top, plan.left) == (0, 36)
    x = np.arange(48)
    expect = slope * ((x + plan.left + 0.5) * (w / plan.resized_hw[1]) - 0.5)
    assert np.abs(out[:, :, 0].astype(float) - expect[None]).max() <= 1.0
    assert np.all(out == out[:1])  # constant along y and over the channels
    # the same ramp along y on a portrait image: the crop is vertical now
    out_t, plan_t = resize_crop(np.ascontiguousarray(ramp.transpose(1, 0, 2)), (48, 48))
    assert plan_t.resized_hw == (120, 48) and np.array_equal(out_t, out.transpose(1, 0, 2))


def test_resize_crop_is_antialiased_bilinear_like_pil():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
    out, plan = resize_crop(img, (256, 256))
    (rh, rw), (t, left) = plan.resized_hw, (plan.top, plan.left)
    ref = np.asarray(Image.fromarray(img).resize((rw, rh), Image.Resampling.BILINEAR))[t:t + 256, left:left + 256]
    diff = np.abs(out.astype(int) - ref)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.02  # PIL's triangle filter, rounding apart
    # a checkerboard at the Nyquist rate averages to grey (antialiased); plain bilinear would alias to stripes
    board = ((np.indices((360, 640)).sum(0) % 2) * 255).astype(np.uint8)[..., None].repeat(3, 2)
    grey, _ = resize_crop(board, (128, 128))
    assert np.abs(grey.astype(int) - 128).max() <= 8
    batch, _ = resize_crop(np.stack([img, img[::-1]]), (256, 256))
    assert np.array_equal(batch[0], out) and np.array_equal(batch[1], resize_crop(img[::-1], (256, 256))[0])


def test_bad_inputs_are_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageError, match="broken.png: unreadable image"):
        load_image(bad)
    with pytest.raises(ValueError, match="expected uint8"):
        resize_crop(np.zeros((10, 10, 3), np.float32), (4, 4))


def test_depth_maps_follow_the_image_crop_without_blending():
    from annotate.images import resize_crop_map

    cols = np.tile(np.arange(300, dtype=np.float32), (120, 1))  # each value names its source column
    img = np.zeros((120, 300, 3), np.uint8)
    _, plan = resize_crop(img, (48, 48))
    m = resize_crop_map(cols, plan)
    assert m.shape == (48, 48) and m.dtype == np.float32
    assert set(np.unique(m)) <= set(range(300))  # nearest: only source values, no blend across a depth edge
    centre = (np.arange(48) + plan.left + 0.5) * 2.5  # the output pixel centre in source coordinates
    assert np.all(np.abs(m[0] + 0.5 - centre) <= 0.5 + 1e-6)  # the source pixel that contains it
