"""Conversion of the authors' released RealCam-I2V / CamI2V camera weights (train/camera/released.py): a state
dict built with exactly their key names and shapes (ZGCTroy/CamI2V CameraControl/CamI2V: CameraPoseEncoder with
nums_rb=2, cin=384, ksize=1, sk=True; pluker_projection and Epipolar(EpipolarCrossAttention) on every temporal
BasicTransformerBlock of the LightningModule's model.diffusion_model) converts strictly into our plug-in."""

from __future__ import annotations

import math

import pytest
import torch

from train.camera.released import ReleasedConversionError, cli, convert_file, convert_released
from train.dynamicrafter.config import load_config
from train.dynamicrafter.unet import UNetModel, iter_temporal_blocks


def their_pe(length: int, dim: int) -> torch.Tensor:
    """Their PositionalEncoding buffer [1, max_len, d_model]."""
    position = torch.arange(length).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, length, dim)
    pe[0, :, 0::2] = torch.sin(position * div)
    pe[0, :, 1::2] = torch.cos(position * div)
    return pe


def released_state_dict(preset: str, meta: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    """Their names and shapes for a DynamiCrafter preset; a few backbone keys as a full checkpoint has."""
    cfg = load_config(preset)
    with torch.device("meta"):
        unet = UNetModel(cfg.unet)
    g = torch.Generator().manual_seed(seed)

    def t(*shape):
        return torch.empty(shape, device="meta") if meta else torch.randn(shape, generator=g)

    channels = [m * cfg.unet.model_channels for m in cfg.unet.channel_mult]
    sd = {"pose_encoder.encoder_conv_in.weight": t(channels[0], 384, 3, 3),
          "pose_encoder.encoder_conv_in.bias": t(channels[0])}
    for i, ch in enumerate(channels):
        for j in range(2):  # nums_rb
            cin = channels[i - 1] if (j == 0 and i != 0) else ch
            conv = f"pose_encoder.encoder_down_conv_blocks.{i}.{j}."
            if cin != ch:  # sk=True: in_conv only when the width changes, no skep
                sd[conv + "in_conv.weight"], sd[conv + "in_conv.bias"] = t(ch, cin, 1, 1), t(ch)
            sd[conv + "block1.weight"], sd[conv + "block1.bias"] = t(ch, ch, 3, 3), t(ch)
            sd[conv + "block2.weight"], sd[conv + "block2.bias"] = t(ch, ch, 1, 1), t(ch)
            att = f"pose_encoder.encoder_down_attention_blocks.{i}.{j}."
            sd[att + "attention_blocks.0.to_q.weight"] = t(ch, ch)
            sd[att + "attention_blocks.0.to_k.weight"] = t(ch, ch)
            sd[att + "attention_blocks.0.to_v.weight"] = t(ch, ch)
            sd[att + "attention_blocks.0.to_out.0.weight"], sd[att + "attention_blocks.0.to_out.0.bias"] = \
                t(ch, ch), t(ch)
            sd[att + "attention_blocks.0.pos_encoder.pe"] = their_pe(16, ch)
            sd[att + "norms.0.weight"], sd[att + "norms.0.bias"] = t(ch), t(ch)
            sd[att + "ff.net.0.proj.weight"], sd[att + "ff.net.0.proj.bias"] = t(ch * 8, ch), t(ch * 8)
            sd[att + "ff.net.2.weight"], sd[att + "ff.net.2.bias"] = t(ch, ch * 4), t(ch)
            sd[att + "ff_norm.weight"], sd[att + "ff_norm.bias"] = t(ch), t(ch)
    for name, _, block in iter_temporal_blocks(unet):
        c = block.norm1.normalized_shape[0]
        m = f"model.diffusion_model.{name}."
        sd[m + "pluker_projection.weight"], sd[m + "pluker_projection.bias"] = t(c, c), t(c)
        for p in ("to_q", "to_k", "to_v"):
            sd[m + f"epipolar.epipolar_attn.{p}.weight"] = t(c, c)
        sd[m + "epipolar.epipolar_attn.to_out.0.weight"], sd[m + "epipolar.epipolar_attn.to_out.0.bias"] = \
            t(c, c), t(c)
        sd[m + "epipolar.epipolar_attn.register_tokens"] = t(1, 4, c)
    # the frozen backbone, as in a full checkpoint: ignored
    sd["model.diffusion_model.input_blocks.0.0.weight"] = t(cfg.unet.model_channels, 8, 3, 3)
    sd["first_stage_model.encoder.conv_in.weight"] = t(4, 3, 3, 3)
    return sd


def _ours(preset: str, kind: str = "realcam") -> dict[str, torch.Tensor]:
    from train.camera import CameraPlugin
    from train.config import CameraConfig

    with torch.device("meta"):
        return CameraPlugin(UNetModel(load_config(preset).unet), CameraConfig(kind=kind)).state_dict()


def test_256_names_and_shapes_convert_strictly():
    own = _ours("256")
    sd = released_state_dict("256", meta=True)
    out, report = convert_released({"_forward_module." + k: v for k, v in sd.items()}, own)  # DeepSpeed wrapper
    assert set(out) == set(own)
    assert all(tuple(out[k].shape) == tuple(own[k].shape) for k in own)
    assert report["converted"] == len(own) and report["ignored_backbone_keys"] == 2
    assert report["positional_encodings_checked"] == 8  # 4 levels x 2 blocks


def test_strict_errors_name_the_keys():
    own = _ours("tiny")
    sd = released_state_dict("tiny", meta=True)
    key = "model.diffusion_model.input_blocks.1.2.transformer_blocks.0.pluker_projection.bias"
    with pytest.raises(ReleasedConversionError, match="pluker_projection.bias"):
        convert_released({k: v for k, v in sd.items() if k != key}, own)
    with pytest.raises(ReleasedConversionError, match="epipolar.extra"):
        convert_released({**sd, key.replace("pluker_projection.bias", "epipolar.extra"): torch.zeros(1)}, own)
    bad = dict(sd)
    bad[key] = torch.empty(3, device="meta")
    with pytest.raises(ReleasedConversionError, match="shape"):
        convert_released(bad, own)
    pe = "pose_encoder.encoder_down_attention_blocks.0.0.attention_blocks.0.pos_encoder.pe"
    with pytest.raises(ReleasedConversionError, match="positional"):
        convert_released({**sd, pe: sd[pe] + 1}, own)


def test_converted_file_loads_into_our_plugin_with_their_values(tmp_path, capsys):
    from safetensors import safe_open

    from train.dynamicrafter.tiny import build_tiny_model
    from train.inference.plugin import load_camera_plugin

    sd = released_state_dict("tiny", meta=False, seed=1)
    torch.save({"state_dict": sd}, tmp_path / "released.ckpt")
    path = convert_file(tmp_path / "released.ckpt", tmp_path / "converted", kind="realcam", config="tiny")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["kind"] == "realcam" and meta["scale_source"] == "condition_frame"
    plugin = load_camera_plugin(build_tiny_model(tmp_path / "tok", seed=0), path)  # strict
    assert plugin.modes == ("basic",)
    own = plugin.state_dict()
    blk = "input_blocks.1.2.transformer_blocks.0"
    m = f"model.diffusion_model.{blk}."
    a = f"adapters.{blk.replace('.', '__')}."
    torch.testing.assert_close(own[a + "epipolar.register_tokens"], sd[m + "epipolar.epipolar_attn.register_tokens"][0])
    torch.testing.assert_close(own[a + "proj.weight"], sd[m + "pluker_projection.weight"])
    torch.testing.assert_close(own[a + "epipolar.to_out.weight"], sd[m + "epipolar.epipolar_attn.to_out.0.weight"])
    p = "pose_encoder.encoder_down_attention_blocks.1.0."
    torch.testing.assert_close(own["pose_encoder.attn.1.0.ff_in.weight"], sd[p + "ff.net.0.proj.weight"])
    torch.testing.assert_close(own["pose_encoder.attn.1.0.norm2.bias"], sd[p + "ff_norm.bias"])
    torch.testing.assert_close(own["pose_encoder.res.1.0.in_conv.weight"],
                               sd["pose_encoder.encoder_down_conv_blocks.1.0.in_conv.weight"])
    # CamI2V: same architecture, relative cameras; through the command line
    capsys.readouterr()
    assert cli([str(tmp_path / "released.ckpt"), str(tmp_path / "cami2v"), "--kind", "cami2v", "--backbone",
                "tiny"]) == 0
    out = capsys.readouterr().out
    path2 = tmp_path / "cami2v" / "plugin.safetensors"
    assert out.rstrip().endswith(f"wrote {path2}") and '"kind": "cami2v"' in out and '"config": "tiny"' in out
    with safe_open(str(path2), "pt") as f:
        assert f.metadata()["scale_source"] == "relative"
    assert cli([str(tmp_path / "missing.ckpt"), str(tmp_path / "x"), "--backbone", "tiny"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'missing.ckpt'}: ")


def test_print_config_round_trips(tmp_path, capsys):
    from train.camera.released import ReleasedConfig, command

    assert cli(["a.ckpt", "out", "--kind", "cami2v", "--backbone", "tiny", "--print-config"]) == 0
    (tmp_path / "c.yaml").write_text(capsys.readouterr().out)
    want = ReleasedConfig(checkpoint="a.ckpt", out="out", kind="cami2v", config="tiny")
    assert command().parse(["--config", str(tmp_path / "c.yaml")])[0] == want
    assert command().parse(["a.ckpt", "out"])[0] == ReleasedConfig("a.ckpt", "out", "realcam", "256")
