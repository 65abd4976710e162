"""Input concatenation modes (the RealCam-I2V paper, §3.4 and Fig. 6): which clean latent frames the UNet gets
as conditions.

DynamiCrafter's hybrid conditioning channel-concatenates a 4-channel "condition video" to the noisy latents.
The mode decides what that condition video holds:

- ``basic``: the condition frame's latent repeated over every frame (DynamiCrafter's i2v; the only mode the
  trainer used before modes existed, so a plug-in without recorded modes counts as basic-only);
- ``interpolation``: frame 0's latent at position 0, the last frame's latent at position F-1, zeros between
  (DynamiCrafter's interpolation layout; loop = interpolation whose end frame is the start image);
- ``continuation``: the clean latents of the first ``i`` frames at positions 0..i-1, zeros after them.

In interpolation and continuation the condition frame (CLIP image, cameras relative to it) is frame 0.
Training (train/data.py draws the mode per sample, train/trainer.py builds the condition) and inference
(train/inference/pipeline.py) use :func:`concat_condition`, so a checkpoint sees at sampling time exactly the
layout it was trained on. A plug-in records its modes in its ``plugin.safetensors`` metadata; sampling in a
mode it was not trained for is refused (:func:`check_mode`) unless explicitly allowed.
"""

from __future__ import annotations

import json

import torch

MODE_NAMES = ("basic", "interpolation", "continuation")
BASIC, INTERPOLATION, CONTINUATION = range(3)
# inference mode (train/inference/pipeline.py MODES) -> the training mode it needs
INFERENCE_TO_TRAINING = {"plain": "basic", "loop": "interpolation", "interp": "interpolation",
                         "continue": "continuation"}


class UntrainedModeError(ValueError):
    """Sampling in a concatenation mode the plug-in was not trained with."""


def parse_modes(spec: str | dict) -> dict[str, float]:
    """``"basic=0.7,interpolation=0.15,continuation=0.15"`` (or a dict, or bare names = equal weights) ->
    normalised probabilities of the modes with a positive weight, in MODE_NAMES order."""
    if isinstance(spec, dict):
        raw = {str(k): float(v) for k, v in spec.items()}
    else:
        raw = {}
        for part in str(spec).replace(" ", "").split(","):
            if not part:
                continue
            name, _, weight = part.partition("=")
            try:
                raw[name] = float(weight) if weight else 1.0
            except ValueError:
                raise ValueError(f"modes: {part!r} is not name=probability") from None
    unknown = sorted(set(raw) - set(MODE_NAMES))
    if unknown:
        raise ValueError(f"modes: unknown mode(s) {unknown}; valid: {', '.join(MODE_NAMES)}")
    if any(v < 0 for v in raw.values()):
        raise ValueError(f"modes: negative probability in {spec!r}")
    total = sum(raw.values())
    if total <= 0:
        raise ValueError(f"modes: no mode with a positive probability in {spec!r}")
    return {m: raw[m] / total for m in MODE_NAMES if raw.get(m, 0) > 0}


def modes_metadata(modes: dict[str, float]) -> str:
    return json.dumps({m: round(p, 6) for m, p in modes.items()})


def plugin_metadata(cfg) -> dict[str, str]:
    """plugin.safetensors metadata of a TrainConfig: the plug-in kind, its trained modes, its camera units."""
    return {"kind": cfg.camera.kind, "modes": modes_metadata(parse_modes(cfg.modes)),
            "scale_source": cfg.data.scale_source}


def modes_from_metadata(meta: dict[str, str]) -> tuple[str, ...]:
    """Trained modes recorded in plugin.safetensors metadata; none recorded = basic only (older plug-ins)."""
    raw = meta.get("modes")
    if not raw:
        return ("basic",)
    return tuple(parse_modes(json.loads(raw)))


def check_mode(inference_mode: str, trained: tuple[str, ...], source: str = "the plug-in",
               allow: bool = False) -> None:
    need = INFERENCE_TO_TRAINING[inference_mode]
    if need in trained or allow:
        return
    raise UntrainedModeError(
        f"{source} was trained with modes {', '.join(trained)} only; mode {inference_mode!r} needs the "
        f"{need!r} concatenation mode, which it never saw in training (train with e.g. "
        f"modes=basic=0.7,interpolation=0.15,continuation=0.15, or pass --allow-untrained-mode to sample anyway)")


def concat_condition(z: torch.Tensor, cond_index: torch.Tensor, mode: torch.Tensor,
                     num_given: torch.Tensor) -> torch.Tensor:
    """Condition video [b, c, F, h, w] from clean latents z [b, c, F, h, w].

    Per sample: ``mode`` index into MODE_NAMES, ``cond_index`` the condition frame (basic), ``num_given`` the
    number of leading frames given in continuation (ignored otherwise)."""
    b, _, f = z.shape[:3]
    dev = z.device
    ar = torch.arange(b, device=dev)
    basic = z[ar, :, cond_index.to(dev)][:, :, None].expand(-1, -1, f, -1, -1)
    pos = torch.arange(f, device=dev)[None]  # [1, F]
    interp = (pos == 0) | (pos == f - 1)
    cont = pos < num_given.to(dev)[:, None]
    mode = mode.to(dev)[:, None]
    keep = torch.where(mode == INTERPOLATION, interp, cont)  # [b, F], for the non-basic modes
    given = z * keep[:, None, :, None, None].to(z.dtype)
    is_basic = (mode == BASIC)[:, :, None, None, None]  # [b, 1, 1, 1, 1]
    return torch.where(is_basic, basic, given)
