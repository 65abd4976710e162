"""Camera plug-ins for the DynamiCrafter backbone: RealCam-I2V / CamI2V, CameraCtrl, MotionCtrl.

``CameraPlugin(kind, unet, cfg)`` builds the trainable modules and attaches one adapter to every temporal
BasicTransformerBlock (``iter_temporal_blocks``; ``init_attn`` is skipped) via ``attn1_adapter``. Adapters are
set with ``object.__setattr__`` so they belong to the plugin only: the UNet's state dict stays the backbone's
and ``plugin.state_dict()`` is exactly the trainable weights. ``plugin.condition(c2w, intrinsics, image_hw)``
returns the ``adapter_cond`` for the UNet call. realcam and cami2v share the architecture (RealCam differs by
its metric-scale data, ``data.scale_source``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["CameraCondition", "CameraPlugin", "CameraControlledUNet", "epipolar_mask", "count_parameters"]

if TYPE_CHECKING:
    from .adapters import CameraCondition
    from .epipolar import epipolar_mask
    from .plugin import CameraControlledUNet, CameraPlugin, count_parameters

_WHERE = {"CameraCondition": "adapters", "epipolar_mask": "epipolar", "CameraPlugin": "plugin",
          "CameraControlledUNet": "plugin", "count_parameters": "plugin"}


def __getattr__(name: str):
    # Lazy: train.camera.modes (read by the config checks and the preflight) must not pull in the backbone,
    # transformers and the UNet (11 s of imports) before the preflight has said what is missing.
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
