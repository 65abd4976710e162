"""Inference for camera-controlled image-to-video (``python -m train.sample``; editor: ``python -m
train.inference.editor``).

    scene.py       image crop + intrinsics rule, metric point cloud, z-buffered point splatting (previews)
    trajectory.py  presets, JSON keyframes, RealEstate10K files, SE(3) interpolation, loops, continuations
    shaping.py     noise-shaping mask + DDIM x_t hooks (noise shaping, continuation pasting)
    model.py       ModelSource (checkpoint, backbone preset, tokenizer, plug-in, device, dtype) and its loaders
    plugin.py      loading the trainer's plugin.safetensors onto a backbone
    pipeline.py    `Pipeline.generate` in every mode (plain, noise-shaped, loop, interp, continue)
    outputs.py     video.mp4, preview.mp4, mask.png, trajectory.txt, settings.json
    editor.py      trajectory editor on viser, from image to generated video (editor_access.py: Host/Origin guard)
"""

from .pipeline import MODES, Pipeline, SampleOptions, SampleResult
from .scene import PointCloud, point_cloud, render_preview, resize_crop, splat, user_intrinsics
from .shaping import NoiseShaper, OverlapPaster, shaping_mask
from .trajectory import Trajectory, keyframe_trajectory, load_trajectory, preset_trajectory

__all__ = ["MODES", "Pipeline", "SampleOptions", "SampleResult", "PointCloud", "point_cloud", "render_preview",
           "resize_crop", "splat", "user_intrinsics", "NoiseShaper", "OverlapPaster", "shaping_mask",
           "Trajectory", "keyframe_trajectory", "load_trajectory", "preset_trajectory"]
