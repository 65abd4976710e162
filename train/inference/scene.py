"""The 3D scene of one image: model-size crop, intrinsics, metric point cloud, z-buffered point splatting.

Conventions are :mod:`annotate.camera`'s (OpenCV axes, pixel centres at +0.5). The world is the condition
camera's frame (its c2w is the identity), in metres. The authors' preview (``construct_3D_scene``,
``demo/preview.py``) renders with Open3D inside a virtual display; here every point is splatted as a
``point_size`` x ``point_size`` pixel square around its projection and the nearest depth wins per pixel
(numpy, no display). Pixels where nothing lands stay black, which is
what the noise-shaping mask keys on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from annotate.camera import ResizeCrop, backproject, invert_rigid, project, to_4x4  # backproject: also public here
from annotate.images import load_image, resize_crop, resize_crop_map  # noqa: F401  (public here: sample, editor)

# ------------------------------------------------------------------------------------------------ image

# load_image and resize_crop are annotate/images.py's (bilinear, antialiased resize + centre crop): the function the
# training loader uses too, so the model sees the pixels it was trained on


def read_depth_file(path, image_hw0: tuple[int, int], plan: ResizeCrop, model_hw: tuple[int, int]) -> np.ndarray:
    """A metric depth map for an image (``.npy``, or ``.npz`` with a ``depth`` member; never unpickled), given at
    the image's own size (then resized and cropped with the image's ``plan``, nearest) or at the model size."""
    from pathlib import Path

    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                depth = z["depth"]
        else:
            depth = np.load(path, allow_pickle=False)
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: not a readable depth map ({e})") from None
    depth = np.asarray(depth, np.float32)
    if depth.ndim == 3:
        depth = depth[0]
    if depth.shape == tuple(model_hw):
        return depth
    if depth.shape != tuple(image_hw0):
        raise ValueError(f"{path}: depth is {depth.shape}, expected the image size {tuple(image_hw0)} or "
                         f"{tuple(model_hw)}")
    return resize_crop_map(depth, plan)


def user_intrinsics(plan: ResizeCrop) -> np.ndarray:
    """The authors' rule for user images (``single_image_for_inference.py``): fx = fy = 0.5 * max(resized H, W),
    principal point at the centre of the crop. At 256x256 from a square image: f = 128, cx = cy = 128."""
    (rh, rw), (h, w) = plan.resized_hw, plan.out_hw
    f = 0.5 * max(rh, rw)
    return np.array([f, f, w / 2.0, h / 2.0], np.float64)


# ------------------------------------------------------------------------------------------------ point cloud


@dataclass
class PointCloud:
    xyz: np.ndarray  # float64 [N, 3], metres, condition-camera frame
    rgb: np.ndarray  # uint8 [N, 3]

    def __len__(self) -> int:
        return len(self.xyz)

    def subsample(self, max_points: int, seed: int = 0) -> PointCloud:
        if len(self) <= max_points:
            return self
        idx = np.sort(np.random.default_rng(seed).choice(len(self), max_points, replace=False))
        return PointCloud(self.xyz[idx], self.rgb[idx])


def statistical_outliers(xyz: np.ndarray, nb_neighbors: int = 16, std_ratio: float = 3.0) -> np.ndarray:
    """Open3D-style statistical outlier removal (as the authors' preview: 16 neighbours, 3 std): keep-mask of points
    whose mean distance to their nb_neighbors nearest points is <= mean + std_ratio * std over the cloud."""
    from scipy.spatial import cKDTree

    if len(xyz) <= nb_neighbors:
        return np.ones(len(xyz), bool)
    dist, _ = cKDTree(xyz).query(xyz, k=nb_neighbors + 1, workers=1)
    mean = dist[:, 1:].mean(axis=1)
    return mean <= mean.mean() + std_ratio * mean.std()


def point_cloud(image: np.ndarray, depth: np.ndarray, intr_px: np.ndarray, outlier_removal: bool = True,
                max_depth: float | None = None) -> PointCloud:
    """Every pixel with a finite positive depth (<= max_depth if given) becomes a coloured point."""
    if image.shape[:2] != depth.shape:
        raise ValueError(f"image {image.shape[:2]} and depth {depth.shape} differ in size")
    xyz = backproject(depth, intr_px).reshape(-1, 3)
    rgb = np.asarray(image, np.uint8).reshape(-1, 3)
    d = depth.reshape(-1)
    keep = np.isfinite(d) & (d > 0)
    if max_depth is not None:
        keep &= d <= max_depth
    xyz, rgb = xyz[keep], rgb[keep]
    if outlier_removal:
        ok = statistical_outliers(xyz)
        xyz, rgb = xyz[ok], rgb[ok]
    return PointCloud(xyz, rgb)


# ------------------------------------------------------------------------------------------------ splatting


def splat(cloud: PointCloud, c2w: np.ndarray, intr_px: np.ndarray, hw: tuple[int, int], point_size: int = 2,
          near: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Render one view: uint8 RGB [H, W, 3] (black where nothing lands) and z-depth [H, W] (inf there).

    Each point covers the ``point_size`` x ``point_size`` pixels whose centres are nearest its projection
    (size 1: the pixel containing it); per pixel the smallest camera z wins. Points with z <= near are dropped.
    """
    h, w = hw
    img = np.zeros((h, w, 3), np.uint8)
    zbuf = np.full((h, w), np.inf, np.float32)
    if len(cloud) == 0:
        return img, zbuf
    w2c = invert_rigid(to_4x4(c2w))
    p = cloud.xyz @ w2c[:3, :3].T + w2c[:3, 3]
    front = p[:, 2] > near
    p, rgb = p[front], cloud.rgb[front]
    if len(p) == 0:
        return img, zbuf
    uv, z = project(p, intr_px)
    u, v = uv[:, 0], uv[:, 1]
    s = max(int(point_size), 1)
    off = (s - 1) / 2.0
    # Drop points whose footprint is entirely off-screen before expanding (also keeps the casts finite).
    on = (u > -s) & (u < w + s) & (v > -s) & (v < h + s)
    u, v, z, rgb = u[on], v[on], z[on], rgb[on]
    x0 = np.floor(u - off).astype(np.int64)
    y0 = np.floor(v - off).astype(np.int64)
    dx, dy = np.meshgrid(np.arange(s), np.arange(s), indexing="xy")
    xs = (x0[:, None] + dx.reshape(1, -1)).reshape(-1)
    ys = (y0[:, None] + dy.reshape(1, -1)).reshape(-1)
    src = np.repeat(np.arange(len(z)), s * s)
    ok = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    pix, src = ys[ok] * w + xs[ok], src[ok]
    if len(pix) == 0:
        return img, zbuf
    order = np.lexsort((z[src], pix))  # by pixel, then nearest first
    pix, src = pix[order], src[order]
    first = np.ones(len(pix), bool)
    first[1:] = pix[1:] != pix[:-1]
    pix, src = pix[first], src[first]
    img.reshape(-1, 3)[pix] = rgb[src]
    zbuf.reshape(-1)[pix] = z[src]
    return img, zbuf


def render_preview(cloud: PointCloud, c2w: np.ndarray, intr_px: np.ndarray, hw: tuple[int, int],
                   point_size: int = 2) -> np.ndarray:
    """Preview video uint8 [F, H, W, 3] along c2w [F, 4, 4]; intrinsics [4] or per frame [F, 4]."""
    c2w = to_4x4(c2w)
    intr = np.broadcast_to(np.asarray(intr_px, np.float64), (len(c2w), 4))
    return np.stack([splat(cloud, c, k, hw, point_size)[0] for c, k in zip(c2w, intr)])
