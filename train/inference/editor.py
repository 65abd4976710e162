"""Trajectory editor on viser: ``python -m train.inference.editor --image IMG [--depth-file D] [--port 8080]``.

One page from an image to a generated video. The image (or the first frame of an annotated RealEstate10K clip,
``--annotations OUT --clip ID``) and its metric depth (a depth file, the clip's manifest depth, or Depth
Anything V2) give the metric point cloud, shown at full density in metres in the input camera's frame (OpenCV
axes, y down) with the input camera's frustum. Keyframes are camera frustums on transform gizmos; the path
through them is the project's SE(3) interpolation (:func:`train.inference.trajectory.keyframe_trajectory`, the
same the sampler uses), redrawn live. Presets, import/export of RealEstate10K camera files and keyframe JSON,
the splatted preview and the scene-constrained mask (scene.py, shaping.py), and Generate (the sampling pipeline
of ``train.sample``: checkpoint, plug-in, steps, CFG, noise shaping, mode) are in the side panel.

Keyframe 0 is the input camera (identity, fixed). Files are written only into ``--export-dir`` under generated
names, atomically; imports are files already there (chosen from a list) or uploaded contents (saved there
first under a generated name); the browser never names a path. The server binds 127.0.0.1 by default (a
non-loopback ``--host`` needs ``--allow-remote``: there is no authentication); use it from another machine
through an SSH port forward (``ssh -L 8080:127.0.0.1:8080 host``). Requests whose Host or Origin header is
foreign are refused (editor_access.py). :class:`Editor` holds the state and is driven by the GUI callbacks or
directly from Python (the tests).
"""

from __future__ import annotations

import argparse
import itertools
import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from annotate.camera import camera_centres, make_pose, quat_to_rotmat, relative_to, rotmat_to_quat, to_4x4
from annotate.files import atomic_write_bytes, atomic_write_text
from annotate.log import get_logger
from annotate.re10k import format_camera_text

from .model import ModelSource, load_model, load_plugin, model_flags
from .scene import PointCloud, point_cloud, render_preview
from .trajectory import (
    PRESETS,
    Trajectory,
    keyframe_trajectory,
    keyframes_to_arrays,
    preset_trajectory,
    re10k_trajectory,
    read_keyframes_json,
    to_camera_trajectory,
)

log = get_logger("editor")

DEFAULT_EXPORT_DIR = "outputs/editor"
DEFAULT_PORT = 8080
MAX_FRAMES = 256
MAX_UPLOAD = 1 << 20  # bytes: a 256-line camera file is ~40 kB
EDITOR_PRESETS = tuple(p for p in PRESETS if p != "zoom")  # zoom changes intrinsics, which keyframes cannot hold
URL = "realcam://editor"


# ------------------------------------------------------------------------------------------------ scene


@dataclass
class EditorScene:
    """The condition image at the model size, its metric depth and pixel intrinsics, and what they came from."""

    image: np.ndarray  # uint8 [H, W, 3]
    depth: np.ndarray  # float32 [H, W] metres
    intr: np.ndarray  # pixel fx fy cx cy
    source: dict = field(default_factory=dict)  # recorded in settings.json
    clip_c2w: np.ndarray | None = None  # [N, 4, 4] metric cameras of a RealEstate10K clip (relative to frame 0)
    last_image: np.ndarray | None = None  # interpolation mode's last frame
    outlier_removal: bool = True

    @property
    def hw(self) -> tuple[int, int]:
        return self.image.shape[:2]


def open_image(path, hw: tuple[int, int], depth_file=None, depth_model: str | None = None,
               last_image=None) -> EditorScene:
    """An image file resized and centre-cropped to ``hw``, reference intrinsics, depth from a file or the model."""
    from .scene import load_image, read_depth_file, resize_crop, user_intrinsics

    image0 = load_image(path)
    image, plan = resize_crop(image0, hw)
    if depth_file:
        depth = read_depth_file(depth_file, image0.shape[:2], plan, hw)
    else:
        depth = predict_depth(image, depth_model)
    last = resize_crop(load_image(last_image), hw)[0] if last_image else None
    return EditorScene(image, depth, user_intrinsics(plan), {"image": str(path), "depth_file": depth_file,
                                                             "depth_model": None if depth_file else depth_model},
                       last_image=last)


def open_clip(annotations, clip_id: str, hw: tuple[int, int], manifest=None, depth_file=None,
              depth_model: str | None = None) -> EditorScene:
    """The first frame of an annotated clip, its intrinsics and metric cameras (``c2w_metric``); depth from
    ``depth_file``, else the manifest's ``depth_path`` (frame 0), else the depth model. The manifest defaults
    to the one the annotation run recorded (``manifest.json``'s ``input_manifest``)."""
    from annotate.depth import PrecomputedDepth
    from annotate.manifest import read_manifest
    from annotate.output import read_table
    from annotate.video import read_frames

    from .scene import read_depth_file, resize_crop
    from .trajectory import annotated_c2w_metric

    annotations = Path(annotations)
    c2w = annotated_c2w_metric(annotations, clip_id)
    row = [r for r in read_table(annotations, ["clip_id", "intrinsics"]).to_pylist() if r["clip_id"] == clip_id][-1]
    if manifest is None:
        try:
            manifest = json.loads((annotations / "manifest.json").read_text())["input_manifest"]
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{annotations / 'manifest.json'}: no input_manifest ({e}); give --manifest") from None
    manifest = Path(manifest)
    rows = [r for r in read_manifest(manifest)[0] if r.get("clip_id") == clip_id]
    if not rows:
        raise ValueError(f"clip {clip_id!r} is not in the manifest {manifest}")
    clip = rows[0]
    video = manifest.parent / clip["video_path"]
    image0 = read_frames(video, [0])[0]
    image, plan = resize_crop(image0, hw)
    intr = plan.intrinsics(np.asarray(row["intrinsics"][0], np.float64))
    if depth_file:
        depth = read_depth_file(depth_file, image0.shape[:2], plan, hw)
    elif clip.get("depth_path"):
        src = PrecomputedDepth(manifest.parent / clip["depth_path"], len(c2w), unit=clip.get("depth_unit", ""))
        d = np.asarray(src.depth[0], np.float32) * src.factor
        depth = _depth_like_image(d, image0.shape[:2], plan, hw)
    else:
        depth = predict_depth(image, depth_model)
    return EditorScene(image, depth, intr, {"annotations": str(annotations), "clip": clip_id,
                                            "video": str(video), "depth_file": depth_file}, clip_c2w=c2w)


def _depth_like_image(depth: np.ndarray, image_hw0, plan, hw) -> np.ndarray:
    """A depth map of the frame's aspect ratio at any size, resized (nearest) and cropped like the frame."""
    from annotate.camera import ResizeCrop
    from annotate.images import resize_crop_map

    if depth.shape != tuple(image_hw0):  # another size, same aspect ratio: plan its own resize and crop
        plan = ResizeCrop.plan(depth.shape, hw)
    return resize_crop_map(depth, plan)


def predict_depth(image: np.ndarray, model: str | None) -> np.ndarray:
    from annotate.depth import DEFAULT_MODEL, DepthAnythingPredictor, DepthConfig

    return DepthAnythingPredictor(DepthConfig(model=model or DEFAULT_MODEL)).predict(image[None])[0]


# ------------------------------------------------------------------------------------------------ sampling


@dataclass
class GenerateConfig:
    """The model of Generate (train.sample's options of the same names) and the sampling defaults of the GUI."""

    model: ModelSource = field(default_factory=ModelSource)  # the backbone and plug-in (train/inference/model.py)
    prompt: str = ""  # text prompt
    seed: int = 12333  # sampling seed
    steps: int = 25  # DDIM steps
    cfg: float = 7.5  # classifier-free guidance scale
    noise_shaping: bool = False  # scene-constrained noise shaping of the first steps
    shaping_threshold: int = 900  # shape the noise while t >= this
    mode: Literal["plain", "loop", "interp"] = "plain"  # sampling mode (continue needs a previous clip: train.sample)
    fps: float = 8.0  # fps of the written videos

    @property
    def available(self) -> bool:
        return self.model.available


@contextmanager
def unet_progress(model, steps: int, progress):
    """Report ``progress(fraction of DDIM steps reached)`` from a forward hook on the UNet (a public torch API,
    so it does not depend on how the pipeline drives its sampling loop): one step per new timestep."""
    import torch

    if progress is None:
        yield
        return
    seen: set[int] = set()

    def hook(_module, args, _out):
        t = args[1] if len(args) > 1 else None
        if isinstance(t, torch.Tensor) and t.numel():
            seen.add(int(t.reshape(-1)[0]))
            progress(min(1.0, len(seen) / steps))

    handle = model.unet.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


# ------------------------------------------------------------------------------------------------ editor


@dataclass
class Keyframe:
    t: float
    control: object  # viser TransformControlsHandle: its position / wxyz are the keyframe's c2w
    frustum: object

    @property
    def c2w(self) -> np.ndarray:
        return make_pose(quat_to_rotmat(np.asarray(self.control.wxyz, np.float64)),
                         np.asarray(self.control.position, np.float64))


class Editor:
    """Keyframes, settings, exports and generation of one editing session on a running ``viser.ViserServer``.

    Keyframe poses live in their transform gizmos (``Keyframe.control``): a drag in the browser moves them, and so
    does assigning ``control.position`` / ``control.wxyz`` from Python; :meth:`refresh` redraws the path."""

    def __init__(self, server, scene: EditorScene, export_dir=DEFAULT_EXPORT_DIR, frames: int = 16, stride: int = 8,
                 point_size: int = 2, generate: GenerateConfig | None = None, build_gui: bool = True):
        self.server, self.scene = server, scene
        self.export_dir = Path(export_dir)
        self.frames, self.stride, self.point_size = check_frames(frames), int(stride), int(point_size)
        self.loop = self.ease = False
        self.gen = generate or GenerateConfig()
        self._lock = threading.RLock()
        self._generating = threading.Lock()  # one generation at a time (the model is shared)
        self._ids = itertools.count(1)
        self._model = self._plugin = None
        self.keyframes: list[Keyframe] = []
        self.cloud: PointCloud = point_cloud(scene.image, scene.depth, scene.intr,
                                             outlier_removal=scene.outlier_removal)
        d = scene.depth[np.isfinite(scene.depth) & (scene.depth > 0)]
        self.scene_depth = float(np.median(d)) if d.size else 1.0
        self.gizmo = 0.15 * self.scene_depth  # frustum / gizmo size in metres
        self.last_preview: np.ndarray | None = None
        self.last_result = None
        self.gui: dict = {}
        self._draw_scene()
        if build_gui:
            self._build_gui()
        if scene.clip_c2w is not None:
            self.set_clip_keyframes(scene.clip_c2w)
        self.refresh()

    # -------------------------------------------------------------------------------- keyframes
    def keyframe_dicts(self) -> list[dict]:
        """Keyframe 0 (the input camera) and the edited ones, as ``keyframe_trajectory`` takes them."""
        with self._lock:
            return [{"t": 0.0, "c2w": np.eye(4)}] + [{"t": k.t, "c2w": k.c2w} for k in self.keyframes]

    def add_keyframe(self, c2w=None, t: float | None = None, refresh: bool = True) -> int:
        """Append a keyframe (default: the last one moved forward by a fifth of the scene depth) at ``t`` (default
        last t + 1); returns its index (1-based: 0 is the input camera)."""
        with self._lock:
            last = self.keyframe_dicts()[-1]
            if c2w is None:
                c2w = last["c2w"] @ make_pose(np.eye(3), [0.0, 0.0, 0.2 * self.scene_depth])
            c2w = to_4x4(np.asarray(c2w, np.float64))
            if not np.isfinite(c2w).all():
                raise ValueError("keyframe pose has non-finite values")
            t = last["t"] + 1.0 if t is None else float(t)
            if not t > last["t"]:
                raise ValueError(f"keyframe time {t:g} must be after the last one ({last['t']:g})")
            uid = next(self._ids)
            name = f"/keyframes/k{uid}"
            wxyz, pos = rotmat_to_quat(c2w[:3, :3]), c2w[:3, 3]
            control = self.server.scene.add_transform_controls(name, scale=self.gizmo * 1.5, wxyz=wxyz, position=pos,
                                                               depth_test=False)
            frustum = self.server.scene.add_camera_frustum(f"{name}/frustum", fov=self._fov(), aspect=self._aspect(),
                                                           scale=self.gizmo, color=(255, 190, 40))
            control.on_update(lambda _event: self.refresh())
            self.keyframes.append(Keyframe(t, control, frustum))
            if refresh:
                self.refresh()
            return len(self.keyframes)

    def remove_keyframe(self, index: int) -> None:
        with self._lock:
            k = self.keyframes.pop(self._index(index) - 1)
            k.control.remove()  # removes its frustum child too
            self.refresh()

    def move_keyframe(self, index: int, step: int) -> int:
        """Reorder: swap keyframe ``index`` with its neighbour ``step`` (-1 earlier, +1 later); times stay with
        the slots, so the poses trade places on the path. Returns the new index."""
        with self._lock:
            i = self._index(index) - 1
            j = i + int(step)
            if not 0 <= j < len(self.keyframes):
                raise ValueError(f"keyframe {index} cannot move {'earlier' if step < 0 else 'later'}")
            a, b = self.keyframes[i], self.keyframes[j]
            a.t, b.t = b.t, a.t
            self.keyframes[i], self.keyframes[j] = b, a
            self.refresh()
            return j + 1

    def clear_keyframes(self) -> None:
        with self._lock:
            for k in self.keyframes:
                k.control.remove()
            self.keyframes = []
            self.refresh()

    def set_keyframes(self, keyframes: list[dict]) -> None:
        """Replace the keyframes (dicts with ``t`` and ``c2w``/``w2c``/``position`` + ``look_at``, as keyframe JSON
        holds them). The first one becomes keyframe 0, the input camera: the others are re-expressed relative to
        it (the identity for the editor's own files) and their times shifted to start at 0."""
        poses, times = keyframes_to_arrays(keyframes)
        poses, times = relative_to(poses, 0), times - times[0]
        with self._lock:
            self.clear_keyframes()
            for c2w, t in zip(poses[1:], times[1:]):
                self.add_keyframe(c2w, t, refresh=False)
            self.refresh()

    def set_clip_keyframes(self, c2w: np.ndarray, count: int = 5) -> None:
        """Keyframes from a clip's cameras: ``count`` lines evenly over what the sampler would use
        (``(frames - 1) * stride + 1`` lines), timed by line index."""
        span = min(len(c2w), (self.frames - 1) * self.stride + 1)
        idx = np.unique(np.round(np.linspace(0, span - 1, min(count, span))).astype(int))
        self.set_keyframes([{"t": float(i), "c2w": c2w[i]} for i in idx])

    def _index(self, index) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) \
                or not 1 <= index <= len(self.keyframes):
            raise ValueError(f"keyframe index must be in 1..{len(self.keyframes)} (0 is the input camera), "
                             f"got {index!r}")
        return int(index)

    def set_options(self, frames: int | None = None, loop: bool | None = None, ease: bool | None = None) -> None:
        with self._lock:
            if frames is not None:
                self.frames = check_frames(frames)
            if loop is not None:
                self.loop = bool(loop)
            if ease is not None:
                self.ease = bool(ease)
            self.refresh()

    def apply_preset(self, spec: str) -> None:
        """A preset (``orbit:angle=20``) as keyframes: 5 frames of it (linear presets are exact; an orbit's
        chords stay within a few mm of the arc)."""
        traj = preset_trajectory(spec, self.frames, self.scene.intr, scene_depth=self.scene_depth)
        if traj.intrinsics is not None:
            raise ValueError("presets that change the intrinsics (zoom) cannot be keyframes; use train.sample")
        idx = np.unique(np.round(np.linspace(0, self.frames - 1, min(5, self.frames))).astype(int))
        self.set_keyframes([{"t": float(i), "c2w": traj.c2w[i]} for i in idx])

    # -------------------------------------------------------------------------------- path
    def trajectory(self) -> Trajectory:
        with self._lock:
            kfs = self.keyframe_dicts()
            if len(kfs) == 1:
                return Trajectory(np.tile(np.eye(4), (self.frames, 1, 1)))
            return keyframe_trajectory(kfs, self.frames, loop=self.loop, ease=self.ease, relative=False)

    def refresh(self) -> None:
        """Redraw the interpolated path and the keyframe list (after any edit or gizmo drag)."""
        with self._lock:
            try:
                traj = self.trajectory()
            except ValueError as e:  # e.g. coinciding times after an import: say so, keep the old path
                self._status(f"path: {e}")
                return
            c = camera_centres(traj.c2w)
            if len(c) > 1:
                seg = np.stack([c[:-1], c[1:]], axis=1).astype(np.float32)
                self.server.scene.add_line_segments("/path", seg, (230, 40, 200), thickness=0.01 * self.scene_depth)
            wxyz = np.ascontiguousarray(rotmat_to_quat(traj.c2w[:, :3, :3]))
            self.server.scene.add_batched_axes("/path_frames", wxyz, np.ascontiguousarray(c),
                                               axes_length=0.3 * self.gizmo, axes_radius=0.02 * self.gizmo)
            if "keyframes" in self.gui:
                lines = [f"{i}. t={k['t']:g}  ({', '.join(f'{v:+.2f}' for v in k['c2w'][:3, 3])}) m"
                         for i, k in enumerate(self.keyframe_dicts())]
                self.gui["keyframes"].content = "Keyframes (0 = input camera):\n\n" + "  \n".join(lines)
                self.gui["index"].max = max(1, len(self.keyframes))

    # -------------------------------------------------------------------------------- files
    def camera_text(self, traj: Trajectory | None = None) -> str:
        traj = self.trajectory() if traj is None else traj
        return format_camera_text(to_camera_trajectory(traj, self.scene.intr, self.scene.hw, self.stride, url=URL))

    def keyframes_json(self) -> dict:
        return {"keyframes": [{"t": k["t"], "c2w": np.round(k["c2w"], 9).tolist()} for k in self.keyframe_dicts()],
                "loop": self.loop, "ease": self.ease}

    def _new_stem(self, prefix: str, suffixes: tuple[str, ...]) -> str:
        """``prefix_YYYYmmdd-HHMMSS[-n]`` not yet used by any of the suffixes in the export folder."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in itertools.count(1):
            stem = f"{prefix}_{stamp}" + (f"-{n}" if n > 1 else "")
            if not any((self.export_dir / f"{stem}{s}").exists() for s in suffixes):
                return stem
        raise AssertionError

    def export(self) -> Path:
        """Write ``trajectory_<date>-<time>.txt`` (RealEstate10K, metres) and its ``.keyframes.json`` into the
        export folder, atomically (a failure leaves neither); returns the camera file's path."""
        with self._lock:
            text, keys = self.camera_text(), json.dumps(self.keyframes_json(), indent=1) + "\n"
            self.export_dir.mkdir(parents=True, exist_ok=True)
            stem = self._new_stem("trajectory", (".txt", ".keyframes.json"))
            cam, kf = self.export_dir / f"{stem}.txt", self.export_dir / f"{stem}.keyframes.json"
            try:
                atomic_write_text(cam, text)
                atomic_write_text(kf, keys)
            except BaseException:
                cam.unlink(missing_ok=True)
                raise
            self._list_files()
            return cam.resolve()

    def importable(self) -> list[str]:
        """Names of the camera files and keyframe JSON files in the export folder (what Import may open)."""
        if not self.export_dir.is_dir():
            return []
        return sorted(p.name for p in self.export_dir.iterdir()
                      if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in (".txt", ".json"))

    def import_file(self, name: str) -> None:
        """Load keyframes from a file of the export folder, by its name as :meth:`importable` lists it."""
        if name not in self.importable():
            raise ValueError(f"{name!r} is not a camera or keyframe file in {self.export_dir}")
        path = self.export_dir / name
        if path.suffix.lower() == ".json":
            try:
                keyframes, opts = read_keyframes_json(path)
                self.set_keyframes(keyframes)
            except (KeyError, TypeError, ValueError) as e:  # not keyframes: one line that names the file
                raise ValueError(f"{path}: not a keyframe file ({e.__class__.__name__}: {e})") from None
            self.set_options(loop=bool(opts.get("loop", False)), ease=bool(opts.get("ease", False)))
        else:  # a camera file: every line up to the clip length becomes a keyframe (exact round trip)
            n = min(len(path.read_text().splitlines()) - 1, MAX_FRAMES)
            traj = re10k_trajectory(path, max(n, 1), 1, image_hw=self.scene.hw)
            self.loop = self.ease = False
            self.set_keyframes([{"t": float(i), "c2w": c} for i, c in enumerate(traj.c2w)])
            if n >= 2:
                self.set_options(frames=n)
        self._sync_gui()

    def import_upload(self, filename: str, content: bytes) -> Path:
        """An uploaded camera file (.txt) or keyframe file (.json): saved into the export folder under a generated
        name (the browser's file name gives only the type), then imported like a listed file."""
        suffix = Path(filename).suffix.lower()
        if suffix not in (".txt", ".json"):
            raise ValueError(f"upload a RealEstate10K camera file (.txt) or keyframes (.json), not {filename!r}")
        if len(content) > MAX_UPLOAD:
            raise ValueError(f"upload of {len(content)} bytes is over the {MAX_UPLOAD} byte limit")
        self.export_dir.mkdir(parents=True, exist_ok=True)
        path = self.export_dir / (self._new_stem("upload", (suffix,)) + suffix)
        atomic_write_bytes(path, content)
        try:
            self.import_file(path.name)
        except BaseException:  # not importable: keep no copy of it
            path.unlink(missing_ok=True)
            raise
        finally:
            self._list_files()
        return path

    # -------------------------------------------------------------------------------- preview
    def preview(self) -> tuple[np.ndarray, np.ndarray]:
        """The splatted preview along the path (uint8 [F, H, W, 3]) and the mask strip (eroded pixel masks over the
        binarised latent masks, uint8), as the sampler computes them for noise shaping."""
        from .outputs import mask_strip
        from .shaping import shaping_mask

        traj = self.trajectory()
        frames = render_preview(self.cloud, traj.c2w, traj.intrinsics_for(self.scene.intr), self.scene.hw,
                                self.point_size)
        h, w = self.scene.hw
        pm, lm = shaping_mask(frames, (h // 8, w // 8))  # the VAE's 8x downsampling
        self.last_preview = frames
        return frames, mask_strip(pm.numpy(), lm.numpy())

    # -------------------------------------------------------------------------------- generation
    def load_model(self):
        """The backbone and plug-in (train/inference/model.py, as train.sample), loaded on first use and kept."""
        with self._lock:
            if self._model is None:
                if not self.gen.available:
                    raise ValueError("no model: start the editor with --checkpoint (or --tiny)")
                self.export_dir.mkdir(parents=True, exist_ok=True)
                self._model = load_model(self.gen.model, self.export_dir)
                self._plugin = load_plugin(self._model, self.gen.model)
            return self._model, self._plugin

    def generate(self, progress=None) -> dict[str, Path]:
        """Run the sampling pipeline on the edited path and write video.mp4, preview.mp4, mask.png,
        trajectory.txt and settings.json into ``generate_<date>-<time>/`` of the export folder.
        ``progress(fraction)`` is called after each UNet evaluation with the fraction of DDIM steps reached."""
        from .outputs import write_outputs
        from .pipeline import Pipeline, SampleOptions

        t0 = time.time()
        g = self.gen
        if g.mode not in ("plain", "loop", "interp"):
            raise ValueError(f"mode must be plain, loop or interp, got {g.mode!r}")
        if g.mode == "interp" and self.scene.last_image is None:
            raise ValueError("interp mode needs --last-image")
        if g.mode == "loop" and not self.loop:  # the loop mode's clip ends on the image: the path goes out and back
            self.set_options(loop=True)
            self._sync_gui()
        model, plugin = self.load_model()
        traj = self.trajectory()  # exactly the path on screen
        opts = SampleOptions(prompt=g.prompt, seed=int(g.seed), steps=int(g.steps), cfg_scale=float(g.cfg),
                             frame_stride=self.stride, noise_shaping=bool(g.noise_shaping),
                             shaping_threshold=int(g.shaping_threshold), point_size=self.point_size,
                             outlier_removal=self.scene.outlier_removal, mode=g.mode)
        with self._generating, unet_progress(model, opts.steps, progress):
            result = Pipeline(model, plugin).generate(self.scene.image, self.scene.intr, traj, opts,
                                                      depth=self.scene.depth, last_image=self.scene.last_image)
        settings = {
            "options": opts.to_dict(),
            "inputs": dict(self.scene.source, keyframes=self.keyframes_json(), frame_stride=self.stride,
                           trajectory_units="metres"),
            "model": {"checkpoint": g.model.checkpoint, "tiny": g.model.tiny, "config": model.cfg.name,
                      "plugin": g.model.plugin,
                      "plugin_kind": getattr(plugin, "kind", None), "device": str(model.device),
                      "dtype": str(model.dtype).replace("torch.", "")},
            "image": {"size_hw": list(self.scene.hw), "intrinsics_px": self.scene.intr.tolist()},
            "depth": {"scene_depth_m": self.scene_depth, "points": result.cloud_size},
            "frames": self.frames, "fps": g.fps, "seconds": round(time.time() - t0, 2),
            "command": "python -m train.inference.editor (Generate)",
        }
        self.export_dir.mkdir(parents=True, exist_ok=True)
        out = self.export_dir / self._new_stem("generate", ("",))
        paths = write_outputs(out, result, self.scene.intr, self.scene.hw, settings, stride=self.stride, fps=g.fps)
        self.last_result = result
        self._list_files()
        return paths

    # -------------------------------------------------------------------------------- viser scene and GUI
    def _fov(self) -> float:
        return float(2 * np.arctan2(self.scene.hw[0] / 2, self.scene.intr[1]))

    def _aspect(self) -> float:
        return self.scene.hw[1] / self.scene.hw[0]

    def _draw_scene(self) -> None:
        sc = self.server.scene
        sc.set_up_direction("-y")  # the input camera's frame: y down
        far = float(np.percentile(self.cloud.xyz[:, 2], 90)) if len(self.cloud) else self.scene_depth
        px = far / float(self.scene.intr[0])  # one pixel's footprint on the far part of the scene: no gaps
        self.cloud_handle = sc.add_point_cloud("/cloud", self.cloud.xyz.astype(np.float32), self.cloud.rgb,
                                               point_size=1.5 * px, point_shading="flat")
        self.input_frustum = sc.add_camera_frustum("/input", fov=self._fov(), aspect=self._aspect(), scale=self.gizmo,
                              color=(255, 255, 255), image=self.scene.image)
        if self.scene.clip_c2w is not None and len(self.scene.clip_c2w) > 1:
            c = camera_centres(self.scene.clip_c2w)
            sc.add_line_segments("/clip_path", np.stack([c[:-1], c[1:]], 1).astype(np.float32), (120, 120, 120),
                                 thickness=0.005 * self.scene_depth)
        d = self.scene_depth
        cam = self.server.initial_camera  # behind and above the input camera, looking into the scene
        cam.position, cam.look_at, cam.up = (0.0, -0.4 * d, -0.8 * d), (0.0, 0.0, 0.8 * d), (0.0, -1.0, 0.0)

    def _status(self, text: str) -> None:
        if "status" in self.gui:
            self.gui["status"].content = text
        log.info("%s", text)

    def _guarded(self, what: str, fn):
        """A GUI callback: run ``fn``, report a refusal or failure in the status line instead of a traceback."""
        def run(event):
            try:
                msg = fn(event)
                self._status(msg or f"{what}: done")
            except (ValueError, OSError, RuntimeError) as e:  # refusals and unreadable files: say why
                self._status(f"{what} failed: {e}")
            except Exception as e:  # a bug: keep the page alive, log the traceback
                log.exception("%s failed", what)
                self._status(f"{what} failed: {e.__class__.__name__}: {e}")
        return run

    def _list_files(self) -> None:
        if "files" in self.gui:
            names = self.importable() or ["(none)"]
            self.gui["files"].options = names

    def _sync_gui(self) -> None:
        if "frames" in self.gui:
            self.gui["frames"].value = self.frames
            self.gui["loop"].value, self.gui["ease"].value = self.loop, self.ease

    def _build_gui(self) -> None:
        gui, g = self.server.gui, self.gui
        gui.set_panel_label("RealCam trajectory editor")
        g["status"] = gui.add_markdown(f"{len(self.cloud)} points, median depth {self.scene_depth:.2f} m")
        with gui.add_folder("Keyframes"):
            g["keyframes"] = gui.add_markdown("")
            g["index"] = gui.add_number("Keyframe", 1, min=1, max=1, step=1)
            add = g["add"] = gui.add_button("Add after last")
            here = g["add_here"] = gui.add_button("Add at my view")
            earlier, later = g["earlier"], g["later"] = gui.add_button("Move earlier"), gui.add_button("Move later")
            delete, goto = g["delete"], g["goto"] = gui.add_button("Delete"), gui.add_button("Go to")
            g["frames"] = gui.add_number("Frames", self.frames, min=2, max=MAX_FRAMES, step=1)
            g["loop"], g["ease"] = gui.add_checkbox("Loop (out and back)", False), gui.add_checkbox("Ease", False)
        add.on_click(self._guarded("add", lambda e: f"keyframe {self.add_keyframe()} added"))

        def at_view(e):
            if e.client is None:
                raise ValueError("no client camera")
            cam = e.client.camera
            return f"keyframe {self.add_keyframe(make_pose(quat_to_rotmat(cam.wxyz), cam.position))} added"

        here.on_click(self._guarded("add", at_view))
        earlier.on_click(self._guarded("move", lambda e: self._select(self.move_keyframe(int(g["index"].value), -1))))
        later.on_click(self._guarded("move", lambda e: self._select(self.move_keyframe(int(g["index"].value), 1))))
        delete.on_click(self._guarded("delete", lambda e: self.remove_keyframe(int(g["index"].value))))

        def go(e):
            k = self.keyframes[self._index(int(g["index"].value)) - 1]
            if e.client is not None:
                e.client.camera.wxyz, e.client.camera.position = k.control.wxyz, k.control.position

        goto.on_click(self._guarded("go to", go))
        g["frames"].on_update(self._guarded("frames", lambda e: self.set_options(frames=int(g["frames"].value))))
        g["loop"].on_update(self._guarded("loop", lambda e: self.set_options(loop=g["loop"].value)))
        g["ease"].on_update(self._guarded("ease", lambda e: self.set_options(ease=g["ease"].value)))

        with gui.add_folder("Presets"):
            g["preset"] = gui.add_dropdown("Preset", EDITOR_PRESETS, initial_value="orbit")
            g["preset_args"] = gui.add_text("Parameters", "angle=20")
            apply = g["apply_preset"] = gui.add_button("Apply preset")
        apply.on_click(self._guarded("preset", lambda e: self.apply_preset(
            f"{g['preset'].value}:{g['preset_args'].value}" if g["preset_args"].value.strip() else g["preset"].value)))

        with gui.add_folder("Files"):
            gui.add_markdown(f"Export folder: `{self.export_dir.resolve()}`")
            export = g["export"] = gui.add_button("Export camera file + keyframes")
            g["files"] = gui.add_dropdown("File", self.importable() or ["(none)"])
            refresh = g["refresh"] = gui.add_button("Refresh list")
            load = g["import"] = gui.add_button("Import selected")
            upload = g["upload"] = gui.add_upload_button("Upload .txt / .json",
                                                         mime_type=".txt,.json,text/plain,application/json")
        export.on_click(self._guarded("export", lambda e: f"wrote {self.export()}"))
        refresh.on_click(self._guarded("refresh", lambda e: self._list_files()))
        load.on_click(self._guarded("import", lambda e: self.import_file(g["files"].value)))
        upload.on_upload(self._guarded("upload", lambda e: "imported "
                                       + self.import_upload(upload.value.name, upload.value.content).name))

        with gui.add_folder("Preview"):
            render = g["render"] = gui.add_button("Render preview and mask")
            g["preview"] = gui.add_image(np.zeros((8, 8, 3), np.uint8), label="preview (every frame)")
            g["mask"] = gui.add_image(np.zeros((8, 8, 3), np.uint8), label="mask: pixels / latent")

        def show_preview(e):
            frames, strip = self.preview()
            g["preview"].image = _strip(frames)
            g["mask"].image = np.repeat(strip[..., None], 3, axis=-1)
            return f"preview of {len(frames)} frames"

        render.on_click(self._guarded("preview", show_preview))

        with gui.add_folder("Generate"):
            gen = self.gen
            g["prompt"] = gui.add_text("Prompt", gen.prompt)
            g["steps"] = gui.add_number("Steps", gen.steps, min=1, max=1000, step=1)
            g["cfg"] = gui.add_number("CFG", gen.cfg, min=0.0, max=50.0, step=0.5)
            g["seed"] = gui.add_number("Seed", gen.seed, min=0, max=2**31 - 1, step=1)
            g["shaping"] = gui.add_checkbox("Noise shaping", gen.noise_shaping)
            g["mode"] = gui.add_dropdown("Mode", ("plain", "loop", "interp"), initial_value=gen.mode)
            button = g["generate"] = gui.add_button("Generate", disabled=not gen.available)
            g["progress"] = gui.add_progress_bar(0.0, visible=False)
            g["video"] = gui.add_image(np.zeros((8, 8, 3), np.uint8), label="generated (every frame)")

        def run(e):
            gen.prompt, gen.steps, gen.cfg = g["prompt"].value, int(g["steps"].value), float(g["cfg"].value)
            gen.seed, gen.noise_shaping, gen.mode = int(g["seed"].value), bool(g["shaping"].value), g["mode"].value
            button.disabled, g["progress"].visible, g["progress"].value = True, True, 0.0
            self._status("generating (the model loads on the first run)")
            try:
                paths = self.generate(progress=lambda f: setattr(g["progress"], "value", 100.0 * f))
            finally:
                button.disabled = False
            g["video"].image = _strip(self.last_result.video)
            return f"wrote {paths['video']}"

        button.on_click(self._guarded("generate", run))

    def _select(self, index: int) -> None:
        self.gui["index"].value = index


def _strip(frames: np.ndarray, max_frames: int = 8) -> np.ndarray:
    """Up to ``max_frames`` frames (evenly chosen) side by side."""
    idx = np.unique(np.round(np.linspace(0, len(frames) - 1, min(max_frames, len(frames)))).astype(int))
    return np.concatenate(list(frames[idx]), axis=1)


def check_frames(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 2 <= n <= MAX_FRAMES:
        raise ValueError(f"frames must be an integer in 2..{MAX_FRAMES}, got {n!r}")
    return int(n)


# ------------------------------------------------------------------------------------------------ CLI


@dataclass
class EditorConfig:
    """The editor's command line: the scene, the server, and Generate's model and sampling (``generate.*``)."""

    image: str | None = None  # condition image (or --annotations OUT --clip ID)
    annotations: str | None = None  # annotation folder: open a clip's first frame and metric cameras
    clip: str | None = None  # clip id in --annotations
    manifest: str | None = None  # the clips' manifest (null: the one the annotation run recorded)
    depth_file: str | None = None  # .npy / .npz ('depth') metric depth at the image or model size
    depth_model: str | None = None  # Depth Anything V2 metric hub id or folder (null: annotate's)
    last_image: str | None = None  # interp mode: the last frame's image
    height: int = 256  # video height
    width: int = 256  # video width
    frames: int = 16  # frames of the path (and of a generated video)
    frame_stride: int = 8  # video frames between generated frames (camera-file timestamps, the fs embedding)
    export_dir: str = DEFAULT_EXPORT_DIR  # the only folder the editor writes into or imports from
    # address or name to listen on; a non-loopback one needs --allow-remote; prefer an SSH forward:
    # ssh -L 8080:127.0.0.1:8080 host
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT  # port (viser takes the next free one if busy)
    allow_remote: bool = False  # allow a non-loopback --host: anyone who reaches it can edit, export and generate
    generate: GenerateConfig = field(default_factory=GenerateConfig)


FLAGS = {**{"--" + k.replace("_", "-"): k for k in ("image", "annotations", "clip", "manifest", "depth_file",
                                                     "depth_model", "last_image", "height", "width", "frames",
                                                     "frame_stride", "export_dir")},
         **model_flags("generate.model."),
         **{"--" + k.replace("_", "-"): "generate." + k
            for k in ("prompt", "steps", "cfg", "seed", "noise_shaping", "mode")},
         "--host": "host", "--port": "port", "--allow-remote": "allow_remote"}  # train.sample's names


def start(cfg: EditorConfig) -> Editor:
    """Open the scene, start the guarded viser server and the editor on it (raises ValueError/OSError)."""
    import viser

    from .editor_access import AllowedHosts, guard_server, is_loopback, resolve_host

    ip = resolve_host(cfg.host, cfg.allow_remote)  # before the (slow) depth prediction
    if not is_loopback(ip):
        log.warning("listening on %s (%s), reachable from other machines: anyone who reaches it can edit, write "
                    "into %s and run the model (there is no authentication)", cfg.host, ip, cfg.export_dir)
    hw = (cfg.height, cfg.width)
    if cfg.annotations or cfg.clip:
        if not (cfg.annotations and cfg.clip) or cfg.image:
            raise ValueError("give --annotations OUT --clip ID together, or --image")
        scene = open_clip(cfg.annotations, cfg.clip, hw, cfg.manifest, cfg.depth_file, cfg.depth_model)
    elif cfg.image:
        scene = open_image(cfg.image, hw, cfg.depth_file, cfg.depth_model, cfg.last_image)
    else:
        raise ValueError("give --image IMG, or --annotations OUT --clip ID")
    server = viser.ViserServer(host=ip, port=cfg.port, verbose=False)
    try:
        guard_server(server, AllowedHosts(cfg.host, ip))
        return Editor(server, scene, cfg.export_dir, cfg.frames, cfg.frame_stride, generate=cfg.generate)
    except BaseException:
        server.stop()
        raise


def url_of(server) -> str:
    host = server.get_host()
    return f"http://{f'[{host}]' if ':' in host else host}:{server.get_port()}/"


def serve(editor: Editor, started=None) -> None:
    """Serve until Ctrl-C (or until ``started(editor)``, given the running editor, returns: the tests' way to
    stop it), then stop the server."""
    print(f"trajectory editor on {url_of(editor.server)}  (exports to {editor.export_dir.resolve()}; Ctrl-C to "
          "stop; from another machine: ssh -L 8080:127.0.0.1:8080 this-host)", flush=True)
    try:
        if started is not None:
            started(editor)
        else:
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        editor.server.stop()


def main(cfg: EditorConfig, started=None) -> None:
    """Open the scene and serve it (:func:`start` raises ValueError/OSError for an unusable scene or host)."""
    serve(start(cfg), started)


def command(started=None):
    """The command line; ``started``: see :func:`serve`."""
    import logging
    import sys

    from annotate.command import Command

    from ..command_line import preset_reader

    def run(cfg: EditorConfig, args: argparse.Namespace) -> int:
        try:
            editor = start(cfg)
        except (ValueError, OSError) as e:
            print(f"editor: {e}", file=sys.stderr)
            return 2
        serve(editor, started)
        return 0

    return Command(EditorConfig, run, "python -m train.inference.editor", __doc__.split("\n\n")[0],
                   flags=FLAGS, log_level=logging.INFO,  # the server's address and progress at info, as always
                   load_preset=preset_reader("python -m train.inference.editor"))


def cli(argv: list[str] | None = None, started=None) -> int:
    return command(started).main(argv)


if __name__ == "__main__":
    raise SystemExit(cli())
