"""Camera-trajectory metrics as the RealCam-I2V / CamI2V evaluation computes them (``metric()``
in the authors' ``evaluation/glomap_evaluation.py``).

All inputs are camera-to-world poses ``[N, 3, 4]`` or ``[N, 4, 4]`` in the project's conventions
(:mod:`annotate.camera`). Every metric first makes each trajectory relative to its frame 0
(``inv(c2w[0]) @ c2w[i]``), then sums a per-frame error over all N frames (frame 0 included, where it
is 0 for the rotation part by construction):

- ``RotErr``: sum of the geodesic angle of ``R1^T R2`` in radians (the authors'
  ``acos(clamp((tr(R1^T R2) - 1) / 2))``, computed stably: see Numerics);
- ``TransErr``: sum of ``||t2 - t1||_2``;
- ``CamMC``: sum of the Frobenius norm of the ``[R|t]`` (3x4) difference.

Translation normalisation (``normalize_translation``) divides every translation by the largest
camera-translation norm of a reference trajectory plus ``1e-9``:

- *relative* metrics (``RotErr``, ``TransErr_rel``, ``CamMC_rel``): each trajectory is divided by its
  own largest norm, so they do not depend on either trajectory's scale;
- *absolute* metrics (``TransErr_abs``, ``CamMC_abs``): both trajectories, already in metres (their
  translations multiplied by their metric scales), are divided by the ground truth's largest norm, so a
  wrong metric scale of the prediction shows up as an error.

Numerics: ``acos`` near 1 amplifies rounding (RealEstate10K rotations, orthonormal only to ~1e-8,
gave ~1.5e-4 rad per frame for two *identical* trajectories with the authors'
``acos((tr - 1) / 2)``). ``RotErr`` therefore takes the same geodesic angle
(:func:`annotate.camera.rotation_angle`) as
``atan2(|vee(M - M^T)| / 2, (tr M - 1) / 2)`` of ``M = R_gt^T R_pred``: equal to the acos formula for
rotations (to ~1e-8 / theta for the files' non-orthonormality), well conditioned at 0 and pi, and
exactly 0 for identical rotations (``M`` is then exactly symmetric). :func:`eval.trajectory.load_camera`
also projects every rotation onto the nearest orthonormal one when it reads a camera file.

The argument order follows the authors' ``metric(c2w_gt, c2w_pred)`` only in name: every metric
here is symmetric except the absolute ones, which normalise by the ground truth.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from annotate.camera import camera_centres, relative_to, rotation_angle, scale_translation, to_4x4

NORM_EPS = 1e-9
METRIC_NAMES = ("RotErr", "TransErr_rel", "CamMC_rel", "TransErr_abs", "CamMC_abs")


@dataclass(frozen=True)
class CameraMetrics:
    RotErr: float
    TransErr_rel: float
    CamMC_rel: float
    TransErr_abs: float
    CamMC_abs: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = to_4x4(pred), to_4x4(gt)
    if pred.ndim != 3 or gt.ndim != 3:
        raise ValueError(f"expected trajectories [N,4,4] or [N,3,4], got {pred.shape} and {gt.shape}")
    if len(pred) != len(gt):
        raise ValueError(f"trajectories differ in length: prediction has {len(pred)} frames, "
                         f"ground truth {len(gt)}")
    if len(gt) == 0:
        raise ValueError("empty trajectories")
    return pred, gt


def max_translation_norm(c2w: np.ndarray) -> float:
    """Largest camera-translation norm over the frames (of an already relative trajectory)."""
    return float(np.linalg.norm(camera_centres(c2w), axis=-1).max())


def normalize_translation(c2w: np.ndarray, ref: np.ndarray | None = None, eps: float = NORM_EPS) -> np.ndarray:
    """Divide the translations of ``c2w`` by ``max_i ||t_ref,i|| + eps`` (``ref`` defaults to ``c2w``)."""
    ref = c2w if ref is None else ref
    return scale_translation(c2w, 1.0 / (max_translation_norm(ref) + eps))


def check_scale(name: str, value: float) -> float:
    """A metric scale (metres per unit) must be a finite positive number; raises ValueError naming it."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0 (metres per unit), got {value!r}")
    return v


def rot_err(pred_c2w: np.ndarray, gt_c2w: np.ndarray) -> float:
    """Sum over frames of the geodesic rotation angle (radians); poses are used as given."""
    pred, gt = _check_pair(pred_c2w, gt_c2w)
    return float(rotation_angle(gt[:, :3, :3], pred[:, :3, :3]).sum())


def trans_err(pred_c2w: np.ndarray, gt_c2w: np.ndarray) -> float:
    """Sum over frames of the L2 distance of the translations; poses are used as given."""
    pred, gt = _check_pair(pred_c2w, gt_c2w)
    return float(np.linalg.norm(pred[:, :3, 3] - gt[:, :3, 3], axis=-1).sum())


def cam_mc(pred_c2w: np.ndarray, gt_c2w: np.ndarray) -> float:
    """Sum over frames of the Frobenius norm of the 3x4 ``[R|t]`` difference; poses used as given."""
    pred, gt = _check_pair(pred_c2w, gt_c2w)
    diff = (pred[:, :3, :4] - gt[:, :3, :4]).reshape(len(pred), 12)
    return float(np.linalg.norm(diff, axis=-1).sum())


def relative_metrics(pred_c2w: np.ndarray, gt_c2w: np.ndarray) -> dict[str, float]:
    """``RotErr``, ``TransErr_rel``, ``CamMC_rel``: both made relative to frame 0, each normalised by
    its own largest translation norm (scale-free)."""
    pred, gt = _check_pair(pred_c2w, gt_c2w)
    pred, gt = relative_to(pred, 0), relative_to(gt, 0)
    pred_n, gt_n = normalize_translation(pred), normalize_translation(gt)
    return {
        "RotErr": rot_err(pred, gt),
        "TransErr_rel": trans_err(pred_n, gt_n),
        "CamMC_rel": cam_mc(pred_n, gt_n),
    }


def absolute_metrics(pred_c2w: np.ndarray, gt_c2w: np.ndarray, pred_scale: float = 1.0,
                     gt_scale: float = 1.0) -> dict[str, float]:
    """``TransErr_abs``, ``CamMC_abs``: both made relative to frame 0, translations multiplied by their
    metric scales, then both divided by the ground truth's largest (metric) translation norm."""
    pred, gt = _check_pair(pred_c2w, gt_c2w)
    pred = scale_translation(relative_to(pred, 0), pred_scale)
    gt = scale_translation(relative_to(gt, 0), gt_scale)
    pred_n, gt_n = normalize_translation(pred, gt), normalize_translation(gt, gt)
    return {"TransErr_abs": trans_err(pred_n, gt_n), "CamMC_abs": cam_mc(pred_n, gt_n)}


def camera_metrics(pred_c2w: np.ndarray, gt_c2w: np.ndarray, pred_scale: float = 1.0, gt_scale: float = 1.0,
                   pred_abs_c2w: np.ndarray | None = None, gt_abs_c2w: np.ndarray | None = None) -> CameraMetrics:
    """All five metrics.

    The relative metrics compare ``pred_c2w`` with ``gt_c2w``. The absolute ones compare
    ``pred_abs_c2w`` (default ``pred_c2w``) times ``pred_scale`` with ``gt_abs_c2w`` (default
    ``gt_c2w``) times ``gt_scale``. The evaluation pipeline passes the RealEstate10K trajectory as
    ``gt_c2w`` and the pose estimate of the ground-truth video as ``gt_abs_c2w`` (as the authors' ``metric()``).
    """
    rel = relative_metrics(pred_c2w, gt_c2w)
    ab = absolute_metrics(pred_c2w if pred_abs_c2w is None else pred_abs_c2w,
                          gt_c2w if gt_abs_c2w is None else gt_abs_c2w, pred_scale, gt_scale)
    return CameraMetrics(**rel, **ab)
