"""Modules built on the meta device reproduce the official checkpoints' key/shape/dtype lists exactly."""

from pathlib import Path

import pytest
import torch

from train.dynamicrafter.checkpoint import compare_keys
from train.dynamicrafter.config import load_config
from train.dynamicrafter.model import COMPONENTS, DynamiCrafter, checkpoint_to_native

FIXTURES = Path(__file__).parent / "fixtures/dynamicrafter"


def read_tsv(path: Path) -> list[tuple[str, tuple[int, ...], str]]:
    rows = [line.rstrip("\n").split("\t") for line in path.read_text().splitlines()[1:]]
    return [(k, () if s == "scalar" else tuple(int(x) for x in s.split("x")), d) for k, s, d in rows]


def listing(sd: dict) -> list[tuple[str, tuple[int, ...], str]]:
    return [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in sd.items()]


@pytest.fixture(scope="module", params=["256", "512", "1024"])
def variant(request):
    model = DynamiCrafter(load_config(request.param), meta=True)
    assert model.unet.time_embed[0].weight.is_meta
    return request.param, model


def test_unet_keys_in_order(variant):
    name, model = variant
    assert listing(model.unet.state_dict()) == read_tsv(FIXTURES / f"dynamicrafter_{name}_unet_keys.tsv")


def test_image_proj_keys_in_order(variant):
    name, model = variant
    expected = read_tsv(FIXTURES / f"dynamicrafter_{name}_image_proj_model_keys.tsv")
    assert listing(model.image_proj_model.state_dict()) == expected


def test_full_checkpoint_naming(variant):
    """native -> checkpoint names gives exactly the checkpoint's tensors (order aside)."""
    name, model = variant
    expected = read_tsv(FIXTURES / f"dynamicrafter_{name}_full_model_keys.tsv")
    got = listing(model.checkpoint_state_dict())
    report = compare_keys({k: s for k, s, _ in expected}, {k: s for k, s, _ in got})
    assert report.ok, report.format(name)
    assert sorted(got) == sorted(expected)  # dtypes too
    counts = {"256": 1532, "512": 1516, "1024": 1516}
    assert sum(k.startswith("model.diffusion_model.") for k, _, _ in got) == counts[name]


def test_checkpoint_to_native_covers_every_module_tensor(variant):
    """checkpoint names -> native gives exactly each component's own state dict (the loading direction)."""
    name, model = variant
    fake = {
        k: torch.empty(s, device="meta") for k, s, _ in read_tsv(FIXTURES / f"dynamicrafter_{name}_full_model_keys.tsv")
    }
    parts = checkpoint_to_native(fake, model.cfg)
    assert parts["_rest"] == {}
    for comp in (*COMPONENTS, "schedule"):
        report = compare_keys(getattr(model, comp).state_dict(), parts[comp])
        assert report.ok, report.format(comp)


def test_variant_detection():
    from train.dynamicrafter.diffusion import DiffusionSchedule
    from train.dynamicrafter.model import detect_preset

    for name in ("512", "1024"):
        sd = DiffusionSchedule(load_config(name).diffusion).state_dict()
        assert detect_preset(sd) == name
    assert detect_preset({"model.diffusion_model.x.attn2.alpha": torch.zeros(())}) == "256"
