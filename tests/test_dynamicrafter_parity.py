"""Parity with the original DynamiCrafter UNet and Resampler (fixture produced by the official code)."""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from train.dynamicrafter.checkpoint import load_strict
from train.dynamicrafter.config import ResamplerConfig, UNetConfig, from_dict
from train.dynamicrafter.resampler import Resampler
from train.dynamicrafter.unet import UNetModel

DEFAULT = Path(__file__).parent / "fixtures/dynamicrafter/dynamicrafter_unet_tiny_parity.safetensors"
FIXTURE = Path(os.environ.get("REALCAM_PARITY_FIXTURE", DEFAULT))
ATOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _group(sd: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def parity():
    meta = json.loads(FIXTURE.with_suffix(".json").read_text())
    sd = load_file(str(FIXTURE))
    unet_sd = {k: v for k, v in sd.items() if not k.startswith(("parity_input.", "parity_output.", "resampler."))}
    with torch.device("meta"):
        unet = UNetModel(from_dict(UNetConfig, meta["unet_config"]))
        resampler = Resampler(from_dict(ResamplerConfig, meta["resampler"]["config"]))
    load_strict(unet, unet_sd, "unet")
    load_strict(resampler, _group(sd, meta["resampler"]["key_prefix"]), "resampler")
    assert len(unet_sd) == meta["state_dict"]["num_tensors"]
    assert sum(v.numel() for v in unet_sd.values()) == meta["state_dict"]["num_elements"]
    return unet.eval(), resampler.eval(), _group(sd, "parity_input."), _group(sd, "parity_output.")


@pytest.mark.parametrize(
    "output, context, with_fs",
    [("y", "context", True), ("y_context_shared", "context_shared", True), ("y_default_fs", "context", False)],
)
def test_unet_matches_original(parity, output, context, with_fs):
    unet, _, inp, out = parity
    with torch.no_grad():
        y = unet(inp["x"], inp["timesteps"], context=inp[context], fs=inp["fs"] if with_fs else None)
    err = (y - out[output]).abs().max().item()
    print(f"{output}: max abs err {err:.3e}")
    assert y.shape == out[output].shape
    assert err < ATOL


def test_resampler_matches_original(parity):
    _, resampler, inp, out = parity
    with torch.no_grad():
        y = resampler(inp["clip_tokens"])
    err = (y - out["resampler_out"]).abs().max().item()
    print(f"resampler_out: max abs err {err:.3e}")
    assert err < ATOL
