"""FVD (eval.fvd) and the I3D networks (eval.i3d), CPU, random weights, tiny inputs."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from annotate.video import write_video
from eval.cli import main
from eval.fvd import (
    FVDConfig,
    compute_fvd,
    extract_features,
    feature_statistics,
    frechet_distance,
    fvd_from_features,
    fvd_from_paths,
    preprocess_styleganv,
    preprocess_videogpt,
)
from eval.i3d import I3DWeightsError, InceptionI3d, load_i3d, load_styleganv_i3d


def independent_fd(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def smooth_videos(n: int, t: int = 8, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """Moving blurred blobs: videos with structure, uint8 [n, t, h, w, 3]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((n, t, h, w, 3))
    for i in range(n):
        for _ in range(4):
            cy, cx, vy, vx = rng.uniform(0, h), rng.uniform(0, w), rng.normal(0, 2), rng.normal(0, 2)
            col, r = rng.uniform(0, 255, 3), rng.uniform(5, 15)
            for k in range(t):
                g = np.exp(-((yy - cy - vy * k) ** 2 + (xx - cx - vx * k) ** 2) / (2 * r * r))
                out[i, k] += g[..., None] * col
    return np.clip(out, 0, 255).astype(np.uint8)


class TinyDetector(nn.Module):
    """Stand-in with the StyleGAN-V TorchScript detector's call signature."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 16, 3, stride=2)
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if rescale:
            x = x / 127.5 - 1.0
        if resize:
            x = F.interpolate(x, size=(8, 32, 32), mode="trilinear", align_corners=False)
        f = torch.relu(self.conv(x)).mean(dim=(2, 3, 4))
        return f if return_features else self.head(f)


@pytest.fixture(scope="module")
def i3d_random():
    torch.manual_seed(0)
    return InceptionI3d().eval()


@pytest.fixture(scope="module")
def detector_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("stylegan") / "i3d_torchscript.pt"
    torch.jit.script(TinyDetector().eval()).save(str(path))
    return path


# ----------------------------------------------------------------------------------------- Fréchet distance


@pytest.mark.parametrize("method", ["svd", "sqrtm"])
def test_frechet_distance_matches_independent_scipy(method):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 12))
    b = rng.normal(size=(150, 12)) @ rng.normal(scale=0.5, size=(12, 12)) + 0.3
    ours = fvd_from_features(a, b, method=method)
    assert ours == pytest.approx(independent_fd(a, b), rel=1e-8)
    mu1, s1 = feature_statistics(a)
    mu2, s2 = feature_statistics(b)
    assert frechet_distance(mu1, s1, mu2, s2, method) == pytest.approx(ours, rel=1e-12)
    # Symmetric, and the two square-root methods agree.
    assert fvd_from_features(b, a, method=method) == pytest.approx(ours, rel=1e-8)


def test_frechet_distance_of_gaussians_closed_form():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])) == \
        pytest.approx(4.0 + 1.0)


def test_fvd_set_against_itself_is_zero_and_grows_with_noise(detector_path):
    model = load_styleganv_i3d(detector_path)
    real = smooth_videos(24)
    rng = np.random.default_rng(1)
    cfg = FVDConfig(variants=("styleganv",), batch_size=8)
    same = compute_fvd(list(real), list(real), cfg, models={"styleganv": model})["FVD_styleganv"]
    feats = extract_features(list(real), model, "styleganv")
    trace = float(np.trace(np.cov(feats, rowvar=False)))
    # TF-GAN's SVD square root leaves eigenvalues < 1e-10 of the product un-rooted: with these tiny
    # random features (trace ~0.15) that leaves ~1e-4 of the trace; scipy's sqrtm gives ~1e-13.
    assert 0 <= same < 1e-3 * trace
    assert abs(fvd_from_features(feats, feats, method="sqrtm")) < 1e-9 * trace
    values = []
    for sigma in (8, 32, 96):
        noisy = np.clip(real + rng.normal(scale=sigma, size=real.shape), 0, 255).astype(np.uint8)
        values.append(compute_fvd(list(real), list(noisy), cfg, models={"styleganv": model})["FVD_styleganv"])
    assert 0 < values[0] < values[1] < values[2], values


# ----------------------------------------------------------------------------------------- preprocessing


def test_preprocess_videogpt_and_styleganv():
    vid = np.zeros((2, 3, 96, 160, 3), np.uint8)
    vid[..., :80, :] = 255  # left half white
    x = preprocess_videogpt(vid)
    assert x.shape == (2, 3, 3, 224, 224) and x.dtype == torch.float32
    assert abs(float(x.min()) + 1) < 1e-6 and abs(float(x.max()) - 1) < 1e-6  # bilinear weights sum to 1 +- ulp
    # Aspect not kept: the white half stays the left half of 224 columns.
    assert torch.allclose(x[..., :100], torch.ones(())) and torch.allclose(x[..., 124:], -torch.ones(()))
    y = preprocess_styleganv(vid)
    # 96x160 -> 128 x ceil(213.33) = 214, centre crop columns 43..170 of the resized frame.
    assert y.shape == (2, 3, 3, 128, 128)
    boundary = 107 - 43  # white/black edge at column 107 of the 214-wide frame
    assert torch.allclose(y[..., : boundary - 2], torch.ones(()))
    assert torch.allclose(y[..., boundary + 2:], -torch.ones(()))
    tall = preprocess_styleganv(np.zeros((1, 2, 200, 100, 3), np.uint8))
    assert tall.shape == (1, 3, 2, 128, 128)


# ----------------------------------------------------------------------------------------- I3D networks


def test_inception_i3d_names_shapes_and_tiny_forward(i3d_random):
    model = i3d_random
    sd = model.state_dict()
    # Spot checks against the pytorch-i3d / VideoGPT i3d_pretrained_400.pt layout.
    expected = {
        "Conv3d_1a_7x7.conv3d.weight": (64, 3, 7, 7, 7),
        "Conv3d_1a_7x7.bn.running_var": (64,),
        "Conv3d_2b_1x1.conv3d.weight": (64, 64, 1, 1, 1),
        "Conv3d_2c_3x3.conv3d.weight": (192, 64, 3, 3, 3),
        "Mixed_3b.b1b.conv3d.weight": (128, 96, 3, 3, 3),
        "Mixed_4b.b0.conv3d.weight": (192, 480, 1, 1, 1),
        "Mixed_5c.b3b.conv3d.weight": (128, 832, 1, 1, 1),
        "Mixed_5c.b2b.bn.weight": (128,),
        "logits.conv3d.weight": (400, 1024, 1, 1, 1),
        "logits.conv3d.bias": (400,),
    }
    for k, shape in expected.items():
        assert tuple(sd[k].shape) == shape, k
    assert not any("b3a" in k for k in sd)  # the max-pool branch has no parameters
    assert not any(k.startswith("logits.bn") for k in sd)
    assert {k.split(".")[0] for k in sd} == {"Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "logits",
                                              *[f"Mixed_{m}" for m in ("3b", "3c", "4b", "4c", "4d", "4e", "4f",
                                                                       "5b", "5c")]}
    with torch.no_grad():
        out = model(torch.rand(2, 3, 8, 32, 32) * 2 - 1)
    assert out.shape == (2, 400) and torch.isfinite(out).all()


def test_load_i3d_strict_and_clear_errors(tmp_path, i3d_random):
    ref = i3d_random
    path = tmp_path / "i3d_pretrained_400.pt"
    # Like old checkpoints: no num_batches_tracked buffers.
    torch.save({k: v for k, v in ref.state_dict().items() if "num_batches_tracked" not in k}, path)
    model = load_i3d(path)
    x = torch.rand(1, 3, 4, 32, 32) * 2 - 1
    with torch.no_grad():  # a separately loaded model: equal up to float rounding (kernels may differ by CPU)
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)
    bad = dict(ref.state_dict())
    bad["Mixed_4c.b1b.conv.weight"] = bad.pop("Mixed_4c.b1b.conv3d.weight")
    torch.save(bad, tmp_path / "renamed.pt")
    with pytest.raises(I3DWeightsError, match="1 missing.*Mixed_4c.b1b.conv3d.weight"):
        load_i3d(tmp_path / "renamed.pt")
    with pytest.raises(I3DWeightsError, match="not found"):
        load_i3d(tmp_path / "nope.pt")
    small = InceptionI3d(num_classes=10).state_dict()
    torch.save(small, tmp_path / "ten.pt")
    with pytest.raises(I3DWeightsError, match="logits.conv3d.weight: shape"):
        load_i3d(tmp_path / "ten.pt")


def test_videogpt_variant_end_to_end_with_random_weights(tmp_path, i3d_random):
    torch.save(i3d_random.state_dict(), tmp_path / "i3d.pt")
    vids = smooth_videos(2, t=2, h=24, w=32)
    cfg = FVDConfig(variants=("videogpt",), videogpt_weights=str(tmp_path / "i3d.pt"), batch_size=2)
    res = compute_fvd(list(vids), list(vids), cfg)
    assert set(res) == {"FVD_videogpt"} and abs(res["FVD_videogpt"]) < 1e-6


def test_styleganv_torchscript_called_with_reference_kwargs(detector_path):
    f = load_styleganv_i3d(detector_path)
    x = torch.rand(2, 3, 4, 40, 40) * 2 - 1
    raw = torch.jit.load(str(detector_path))
    out = f(x)
    assert out.shape == (2, 16)  # features, not the 5-way head
    assert torch.allclose(out, raw(x, rescale=False, resize=True, return_features=True))
    assert not torch.allclose(out, raw(x, rescale=True, resize=True, return_features=True))
    with pytest.raises(I3DWeightsError, match="not found"):
        load_styleganv_i3d(detector_path.parent / "missing.pt")


def test_fvd_from_paths_and_cli(tmp_path, detector_path, capsys):
    vids = smooth_videos(4, t=6, h=32, w=48, seed=3)
    for sub in ("real", "fake"):
        (tmp_path / sub).mkdir()
    for i, v in enumerate(vids):
        write_video(tmp_path / "real" / f"c{i}.mp4", v)
        write_video(tmp_path / "fake" / f"c{i}.mp4", v[:, :, ::-1].copy())
    cfg = FVDConfig(variants=("styleganv",), styleganv_torchscript=str(detector_path), batch_size=3)
    res = fvd_from_paths(sorted((tmp_path / "real").glob("*.mp4")), sorted((tmp_path / "fake").glob("*.mp4")), cfg)
    assert res["FVD_styleganv"] > 0
    assert main(["fvd", str(tmp_path / "real"), str(tmp_path / "fake"), "--styleganv-i3d", str(detector_path),
                 "--fvd-batch", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["FVD_styleganv"] == pytest.approx(res["FVD_styleganv"]) and out["num_real"] == 4
    assert main(["fvd", str(tmp_path / "real"), str(tmp_path / "fake")]) == 2  # no network given
    # from Python, as the command: the variants of the given weights, device auto
    from eval.cli import FVDCommandConfig, fvd_main
    from eval.fvd import from_weights

    py = fvd_main(FVDCommandConfig(str(tmp_path / "real"), str(tmp_path / "fake"),
                                   replace(from_weights(), styleganv_torchscript=str(detector_path), batch_size=3)))
    assert py["FVD_styleganv"] == pytest.approx(res["FVD_styleganv"]) and "FVD_videogpt" not in py
