"""I3D networks for FVD.

``InceptionI3d`` is Inception-v1 I3D (Carreira & Zisserman 2017) written for this project. Its
parameter and buffer names follow the pytorch-i3d layout that VideoGPT's ``i3d_pretrained_400.pt``
(the weights the authors' VideoGPT-style FVD, ``evaluation/fvd_test.py``, loads) uses, so that file loads
strictly: ``Conv3d_1a_7x7.conv3d.weight``, ``Conv3d_1a_7x7.bn.{weight,bias,running_mean,running_var}``,
``Mixed_3b.b0.conv3d.weight``, ``Mixed_3b.b1a...``, ``Mixed_3b.b1b...``, ``b2a``, ``b2b``, ``b3b``
(``b3a`` is the parameter-free max pool), ... ``Mixed_5c...``, ``logits.conv3d.{weight,bias}``.
The names, channel widths, kernel sizes and strides were checked against the public pytorch-i3d /
VideoGPT / fvdcal sources; their code was not copied. Behavioural facts kept from them:

- every convolution and max pool pads "same" the TensorFlow way, computed from the input size
  (``max(k - s, 0)`` if the size divides by the stride, else ``max(k - size % s, 0)``, the smaller half
  in front); max pools pad with zeros;
- batch norm with ``eps = 1e-5`` (the VideoGPT/fvdcal copy; piergiaj's original uses 1e-3);
- head: average pool ``[2, 7, 7]`` with stride 1, dropout, 1x1x1 ``logits`` convolution with bias,
  spatial squeeze, mean over the remaining time steps -> ``[B, num_classes]`` logits. These logits are
  the VideoGPT-style FVD features. The pool kernel is clipped to the input's size, which only matters for
  inputs smaller than the 224x224x16 the weights were trained for (the tests' tiny inputs).

Checkpoints written by older PyTorch versions lack ``num_batches_tracked``; ``BatchNorm3d`` fills it in
on load, so strict loading still works. ``load_i3d`` also accepts ``{"state_dict": ...}`` wrappers and
a ``module.`` prefix.

``load_styleganv_i3d`` loads the StyleGAN-V TorchScript detector (``i3d_torchscript.pt``) and calls
it as ``model(x, rescale=False, resize=True, return_features=True)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# (name, output channels of b0, b1a, b1b, b2a, b2b, b3b)
_MIXED: tuple[tuple[str, tuple[int, int, int, int, int, int]], ...] = (
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
)


def _same_pad(size: Sequence[int], kernel: Sequence[int], stride: Sequence[int]) -> list[int]:
    """F.pad argument (last dim first) for TensorFlow 'SAME' padding of a [.., T, H, W] input."""
    pads: list[int] = []
    for s, k, st in zip(reversed(list(size)), reversed(list(kernel)), reversed(list(stride))):
        total = max(k - st, 0) if s % st == 0 else max(k - s % st, 0)
        pads += [total // 2, total - total // 2]
    return pads


def _triple(v: int | Sequence[int]) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else (int(v[0]), int(v[1]), int(v[2]))


class SamePadMaxPool3d(nn.Module):
    def __init__(self, kernel: int | Sequence[int], stride: int | Sequence[int]):
        super().__init__()
        self.kernel, self.stride = _triple(kernel), _triple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, _same_pad(x.shape[-3:], self.kernel, self.stride))
        return F.max_pool3d(x, self.kernel, self.stride)


class Unit3D(nn.Module):
    """Conv3d (same padding) + optional batch norm + optional ReLU; attributes ``conv3d`` and ``bn``."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int | Sequence[int] = 1, stride: int | Sequence[int] = 1,
                 batch_norm: bool = True, bias: bool = False, relu: bool = True):
        super().__init__()
        self.kernel, self.stride, self.relu = _triple(kernel), _triple(stride), relu
        self.conv3d = nn.Conv3d(in_ch, out_ch, self.kernel, self.stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(out_ch, eps=1e-5, momentum=0.001) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(F.pad(x, _same_pad(x.shape[-3:], self.kernel, self.stride)))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class InceptionBlock(nn.Module):
    def __init__(self, in_ch: int, ch: Sequence[int]):
        super().__init__()
        self.b0 = Unit3D(in_ch, ch[0])
        self.b1a = Unit3D(in_ch, ch[1])
        self.b1b = Unit3D(ch[1], ch[2], 3)
        self.b2a = Unit3D(in_ch, ch[3])
        self.b2b = Unit3D(ch[3], ch[4], 3)
        self.b3a = SamePadMaxPool3d(3, 1)
        self.b3b = Unit3D(in_ch, ch[5])
        self.out_channels = ch[0] + ch[2] + ch[4] + ch[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class InceptionI3d(nn.Module):
    """Inception-v1 I3D; input ``[B, 3, T, H, W]`` in [-1, 1]; output the time-averaged logits ``[B, C]``."""

    def __init__(self, num_classes: int = 400, in_channels: int = 3, dropout: float = 0.5):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, 7, 2)
        self.MaxPool3d_2a_3x3 = SamePadMaxPool3d((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, 3)
        self.MaxPool3d_3a_3x3 = SamePadMaxPool3d((1, 3, 3), (1, 2, 2))
        ch = 192
        for name, widths in _MIXED:
            if name == "Mixed_4b":
                self.MaxPool3d_4a_3x3 = SamePadMaxPool3d(3, 2)
            if name == "Mixed_5b":
                self.MaxPool3d_5a_2x2 = SamePadMaxPool3d(2, 2)
            block = InceptionBlock(ch, widths)
            setattr(self, name, block)
            ch = block.out_channels
        self.feature_channels = ch  # 1024
        self.dropout = nn.Dropout(dropout)
        self.logits = Unit3D(ch, num_classes, batch_norm=False, bias=True, relu=False)
        self._order = ["Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
                       "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
                       "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c"]

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Output of Mixed_5c, ``[B, 1024, T', H', W']``."""
        for name in self._order:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"I3D expects [B, C, T, H, W], got shape {tuple(x.shape)}")
        x = self.trunk(x)
        kernel = (min(2, x.shape[2]), min(7, x.shape[3]), min(7, x.shape[4]))
        x = F.avg_pool3d(x, kernel, stride=1)
        x = self.logits(self.dropout(x))  # [B, C, T'', 1, 1] for 224x224 inputs
        return x.mean(dim=(2, 3, 4))


class I3DWeightsError(RuntimeError):
    pass


def _unwrap_state_dict(obj: object, path: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise I3DWeightsError(f"{path}: expected a state dict, found {type(obj).__name__}")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def load_i3d(path: str | os.PathLike, device: str | torch.device = "cpu", num_classes: int = 400) -> InceptionI3d:
    """Build :class:`InceptionI3d` and load ``i3d_pretrained_400.pt`` strictly (clear errors)."""
    path = Path(path)
    if not path.is_file():
        raise I3DWeightsError(f"I3D weights not found at {path} (VideoGPT-style FVD needs i3d_pretrained_400.pt; "
                              "no weights can be downloaded here, pass a local path)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise I3DWeightsError(f"{path}: cannot read as a torch checkpoint ({e.__class__.__name__}: {e})") from None
    state = _unwrap_state_dict(obj, str(path))
    model = InceptionI3d(num_classes)
    missing, unexpected = [], []
    own = model.state_dict()
    for k, v in own.items():
        if k not in state and not k.endswith("num_batches_tracked"):
            missing.append(k)
        elif k in state and tuple(state[k].shape) != tuple(v.shape):
            unexpected.append(f"{k}: shape {tuple(state[k].shape)} != expected {tuple(v.shape)}")
    unexpected += [k for k in state if k not in own]
    if missing or unexpected:
        raise I3DWeightsError(f"{path}: not an InceptionI3d-{num_classes} state dict: {len(missing)} missing "
                              f"(e.g. {missing[:3]}), {len(unexpected)} unexpected/mismatched (e.g. {unexpected[:3]})")
    model.load_state_dict(state, strict=True)
    return model.eval().to(device)


def load_styleganv_i3d(path: str | os.PathLike,
                       device: str | torch.device = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
    """The StyleGAN-V TorchScript I3D, returned as ``f(x) = model(x, rescale=False, resize=True,
    return_features=True)`` for ``x`` ``[B, 3, T, H, W]`` in [-1, 1]."""
    path = Path(path)
    if not path.is_file():
        raise I3DWeightsError(f"TorchScript I3D not found at {path} (StyleGAN-V-style FVD needs "
                              "i3d_torchscript.pt; pass a local path)")
    try:
        detector = torch.jit.load(str(path), map_location=device).eval()
    except Exception as e:  # noqa: BLE001
        raise I3DWeightsError(f"{path}: cannot load as TorchScript ({e.__class__.__name__}: {e})") from None

    def features(x: torch.Tensor) -> torch.Tensor:
        return detector(x, rescale=False, resize=True, return_features=True)

    return features
