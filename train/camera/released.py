"""Convert the authors' released RealCam-I2V / CamI2V (DynamiCrafter 256) camera weights into our plug-in, strictly.

    python -m train.camera.released RELEASED.ckpt|.pt|.safetensors OUT [--kind realcam|cami2v] [--backbone 256]

Their code (ZGCTroy/CamI2V, ``CameraControl/CamI2V``) adds the camera modules to the LightningModule, so their
names are (C = the block width; L = a temporal block, e.g. ``input_blocks.1.2.transformer_blocks.0``, the same
DynamiCrafter names our UNet keeps):

    pose_encoder.encoder_conv_in.{weight,bias}                                   -> pose_encoder.conv_in
    pose_encoder.encoder_down_conv_blocks.I.J.{in_conv,block1,block2}.*          -> pose_encoder.res.I.J.*
    pose_encoder.encoder_down_attention_blocks.I.J.norms.0.*                     -> pose_encoder.attn.I.J.norm1
      ... .attention_blocks.0.{to_q,to_k,to_v}.weight / .to_out.0.*              -> ....to_q/to_k/to_v/to_out
      ... .attention_blocks.0.pos_encoder.pe  [1, 16, C]  (sinusoids: checked equal to ours, then dropped)
      ... .ff_norm.* / .ff.net.0.proj.* / .ff.net.2.*                            -> ....norm2 / ff_in / ff_out
    model.diffusion_model.L.pluker_projection.{weight,bias}                      -> adapters.L'.proj
    model.diffusion_model.L.epipolar.epipolar_attn.{to_q,to_k,to_v}.weight       -> adapters.L'.epipolar.*
      ... .epipolar_attn.to_out.0.{weight,bias}                                  -> adapters.L'.epipolar.to_out
      ... .epipolar_attn.register_tokens [1, R, C]                 -> adapters.L'.epipolar.register_tokens [R, C]

(L' = L with dots as ``__``). A checkpoint may hold the whole model (DeepSpeed ``module`` or Lightning
``state_dict``, optional ``_forward_module.``/``module.`` prefixes): every other ``model.diffusion_model.*``,
VAE and CLIP key is the frozen backbone and is ignored (counted in the report). The conversion is strict: a
camera key of theirs we do not know, one of ours they do not provide, or a shape that differs is an error that
lists them. Pickled files are read with ``torch.load(weights_only=True)``. The output is a ``plugin.safetensors``
with our metadata (kind; modes basic: the released code trains basic i2v only; scale_source per kind) and
``conversion.json`` (the key report).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from ..dynamicrafter.checkpoint import StateDictMismatchError, compare_keys
from .pose_encoder import sinusoidal_table

PE_SUFFIX = ".attention_blocks.0.pos_encoder.pe"
UNET_PREFIX = "model.diffusion_model."
CAMERA_MARKERS = (".pluker_projection.", ".epipolar.")
_POSE = [  # (our pattern, their pattern) under pose_encoder.
    (r"conv_in\.(weight|bias)", r"encoder_conv_in.\1"),
    (r"res\.(\d+)\.(\d+)\.(in_conv|block1|block2)\.(weight|bias)", r"encoder_down_conv_blocks.\1.\2.\3.\4"),
    (r"attn\.(\d+)\.(\d+)\.norm1\.(weight|bias)", r"encoder_down_attention_blocks.\1.\2.norms.0.\3"),
    (r"attn\.(\d+)\.(\d+)\.(to_q|to_k|to_v)\.weight",
     r"encoder_down_attention_blocks.\1.\2.attention_blocks.0.\3.weight"),
    (r"attn\.(\d+)\.(\d+)\.to_out\.(weight|bias)",
     r"encoder_down_attention_blocks.\1.\2.attention_blocks.0.to_out.0.\3"),
    (r"attn\.(\d+)\.(\d+)\.norm2\.(weight|bias)", r"encoder_down_attention_blocks.\1.\2.ff_norm.\3"),
    (r"attn\.(\d+)\.(\d+)\.ff_in\.(weight|bias)", r"encoder_down_attention_blocks.\1.\2.ff.net.0.proj.\3"),
    (r"attn\.(\d+)\.(\d+)\.ff_out\.(weight|bias)", r"encoder_down_attention_blocks.\1.\2.ff.net.2.\3"),
]
_ADAPTER = [  # (our pattern after adapters.L'., their pattern after model.diffusion_model.L.)
    (r"proj\.(weight|bias)", r"pluker_projection.\1"),
    (r"epipolar\.(to_q|to_k|to_v)\.weight", r"epipolar.epipolar_attn.\1.weight"),
    (r"epipolar\.to_out\.(weight|bias)", r"epipolar.epipolar_attn.to_out.0.\1"),
    (r"epipolar\.register_tokens", r"epipolar.epipolar_attn.register_tokens"),
]


class ReleasedConversionError(StateDictMismatchError):
    """The released checkpoint does not match our plug-in (key report in the message)."""


def their_key(ours: str) -> str:
    """The authors' name of one of our plug-in keys."""
    if ours.startswith("pose_encoder."):
        rest = ours[len("pose_encoder."):]
        for pat, rep in _POSE:
            if re.fullmatch(pat, rest):
                return "pose_encoder." + re.sub(pat, rep, rest)
    m = re.fullmatch(r"adapters\.([^.]+)\.(.+)", ours)
    if m:
        block = m[1].replace("__", ".")
        for pat, rep in _ADAPTER:
            if re.fullmatch(pat, m[2]):
                return UNET_PREFIX + block + "." + re.sub(pat, rep, m[2])
    raise KeyError(f"no released-checkpoint name for our key {ours!r}")


def _is_camera_key(k: str) -> bool:
    return k.startswith("pose_encoder.") or (k.startswith(UNET_PREFIX) and any(m in k for m in CAMERA_MARKERS))


def _strip_wrappers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in ("_forward_module.", "module."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def convert_released(released: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """(our state dict, report) from the released tensors, given our plug-in's state dict (shapes; may be meta)."""
    released = _strip_wrappers(dict(released))
    camera = {k: v for k, v in released.items() if _is_camera_key(k)}
    pes = {k: v for k, v in camera.items() if k.endswith(PE_SUFFIX)}
    for k in pes:
        camera.pop(k)
    names = {ours: their_key(ours) for ours in own}
    expected = {names[k]: (tuple(v.shape) if not k.endswith("register_tokens") else (1, *v.shape))
                for k, v in own.items()}
    report = compare_keys(expected, {k: tuple(v.shape) for k, v in camera.items()})
    if not report.ok:
        raise ReleasedConversionError(report.format("released camera weights -> our plug-in"))
    # the fixed sinusoidal encodings of their pose encoder: one per attention block, equal to the ones we compute
    pe_expected = {k.replace(".norms.0.weight", PE_SUFFIX) for k in names.values() if k.endswith(".norms.0.weight")}
    if set(pes) != pe_expected:
        raise ReleasedConversionError(f"positional encodings: missing {sorted(pe_expected - set(pes))[:5]}, "
                                      f"unexpected {sorted(set(pes) - pe_expected)[:5]}")
    bad_pe = []
    for k, v in pes.items():
        _, length, dim = v.shape
        if not torch.allclose(v[0].float(), sinusoidal_table(length, dim), atol=1e-5):
            bad_pe.append(k)
    if bad_pe:
        raise ReleasedConversionError(f"positional encodings differ from the sinusoid table: {bad_pe[:5]}")
    out = {}
    for ours, theirs in names.items():
        v = camera[theirs]
        out[ours] = (v[0] if ours.endswith("register_tokens") else v).detach().float().contiguous()
    rep = {"converted": len(out), "positional_encodings_checked": len(pes),
           "ignored_backbone_keys": len(released) - len(camera) - len(pes), "missing": [], "unexpected": [],
           "mismatched": []}
    return out, rep


def _plugin_shapes(kind: str, config: str) -> dict[str, torch.Tensor]:
    from ..config import CameraConfig
    from ..dynamicrafter.config import load_config
    from ..dynamicrafter.unet import UNetModel
    from . import CameraPlugin

    with torch.device("meta"):
        unet = UNetModel(load_config(config).unet)
        return CameraPlugin(unet, CameraConfig(kind=kind)).state_dict()


def convert_file(path: str | Path, out_dir: str | Path, kind: str = "realcam", config: str = "256") -> Path:
    from safetensors.torch import save_file

    from annotate.files import write_json

    from ..config import DEFAULT_SCALE_SOURCE
    from ..dynamicrafter.checkpoint import read_state_dict
    from .modes import modes_metadata

    if kind not in ("realcam", "cami2v"):
        raise ValueError(f"--kind must be realcam or cami2v (the released CamI2V-architecture plug-ins), got {kind!r}")
    sd, report = convert_released(read_state_dict(path), _plugin_shapes(kind, config))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "plugin.safetensors"
    tmp = out / ".plugin.safetensors.tmp"
    save_file(sd, str(tmp), metadata={"kind": kind, "modes": modes_metadata({"basic": 1.0}),
                                      "scale_source": DEFAULT_SCALE_SOURCE[kind], "converted_from": str(path)})
    tmp.replace(target)
    write_json(out / "conversion.json", {"source": str(path), "kind": kind, "config": config, **report})
    return target


@dataclass
class ReleasedConfig:
    checkpoint: str  # the released weights (.ckpt/.pt/.pth or .safetensors)
    out: str  # output folder: plugin.safetensors + conversion.json
    kind: Literal["realcam", "cami2v"] = "realcam"  # the plug-in architecture of the weights
    config: str = "256"  # backbone preset (the released plug-ins are 256)


def main(cfg: ReleasedConfig) -> dict:
    """Convert (strictly: :class:`ReleasedConversionError`); the key report of conversion.json and the written
    plug-in's path (``plugin``)."""
    path = convert_file(cfg.checkpoint, cfg.out, cfg.kind, cfg.config)
    return {**json.loads((Path(cfg.out) / "conversion.json").read_text()), "plugin": str(path)}


def _run(cfg: ReleasedConfig, args) -> int:
    try:
        report = main(cfg)
    except (ReleasedConversionError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {cfg.checkpoint}: {e}", file=sys.stderr)
        return 2
    path = report.pop("plugin")
    print(json.dumps(report, indent=1))
    print(f"wrote {path}")
    return 0


def command():
    from annotate.command import Command

    from ..command_line import BACKBONE_FLAG, preset_reader

    return Command(ReleasedConfig, _run, "python -m train.camera.released", __doc__.split("\n\n")[0],
                   positionals=("checkpoint", "out"), flags={"--kind": "kind", BACKBONE_FLAG: "config"},
                   load_preset=preset_reader("python -m train.camera.released"))


def cli(argv: list[str] | None = None) -> int:
    return command().main(argv)


if __name__ == "__main__":
    sys.exit(cli())
