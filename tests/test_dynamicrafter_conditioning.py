"""CLIP towers vs a plain re-statement of open_clip's forward on checkpoint-named weights, VAE/CLIP converters,
tokenizer, image preprocessing."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from train.dynamicrafter.conditioning import (
    ImageEncoder,
    TextEncoder,
    image_ckpt_to_native,
    image_native_to_ckpt,
    resize_antialiased,
    text_ckpt_to_native,
    text_native_to_ckpt,
)
from train.dynamicrafter.config import load_config
from train.dynamicrafter.tiny import randomize_, write_tiny_tokenizer
from train.dynamicrafter.vae import build_vae, vae_ckpt_to_native, vae_native_to_ckpt

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _resblock(x: torch.Tensor, p: dict, pre: str, heads: int, mask: torch.Tensor | None) -> torch.Tensor:
    """open_clip ResidualAttentionBlock: x + attn(ln_1 x); x + mlp(ln_2 x), nn.MultiheadAttention, exact GELU."""
    w = x.shape[-1]
    mha = nn.MultiheadAttention(w, heads, batch_first=True)
    mha.load_state_dict({k.split("attn.")[1]: v for k, v in p.items() if k.startswith(pre + "attn.")})
    h = F.layer_norm(x, (w,), p[pre + "ln_1.weight"], p[pre + "ln_1.bias"])
    x = x + mha(h, h, h, need_weights=False, attn_mask=mask)[0]
    h = F.layer_norm(x, (w,), p[pre + "ln_2.weight"], p[pre + "ln_2.bias"])
    h = F.linear(
        F.gelu(F.linear(h, p[pre + "mlp.c_fc.weight"], p[pre + "mlp.c_fc.bias"])),
        p[pre + "mlp.c_proj.weight"],
        p[pre + "mlp.c_proj.bias"],
    )
    return x + h


@torch.no_grad()
def test_text_tower_penultimate_matches_open_clip_forward():
    cfg = load_config("tiny").text_encoder
    enc = TextEncoder(cfg)
    randomize_(enc, seed=3)
    p = text_native_to_ckpt(enc.state_dict())
    ids = torch.randint(0, cfg.vocab_size, (2, cfg.context_length), generator=torch.Generator().manual_seed(0))
    x = p["token_embedding.weight"][ids] + p["positional_embedding"]
    mask = torch.full((77, 77), float("-inf")).triu(1)
    for i in range(cfg.layers - 1):  # penultimate: skip the last block
        x = _resblock(x, p, f"transformer.resblocks.{i}.", cfg.heads, mask)
    ref = F.layer_norm(x, (cfg.width,), p["ln_final.weight"], p["ln_final.bias"])
    assert torch.allclose(enc(ids), ref, atol=1e-5)


@torch.no_grad()
def test_image_tower_tokens_before_ln_post_match_open_clip_forward():
    cfg = load_config("tiny").image_encoder
    enc = ImageEncoder(cfg)
    randomize_(enc, seed=4)
    p = image_native_to_ckpt(enc.state_dict())
    image = torch.rand(2, 3, 80, 96, generator=torch.Generator().manual_seed(1)) * 2 - 1
    pixels = enc.preprocess(image)
    assert pixels.shape == (2, 3, cfg.image_size, cfg.image_size)
    x = F.conv2d(pixels, p["visual.conv1.weight"], stride=cfg.patch_size).flatten(2).transpose(1, 2)
    x = torch.cat([p["visual.class_embedding"].expand(2, 1, -1), x], dim=1) + p["visual.positional_embedding"]
    x = F.layer_norm(x, (cfg.width,), p["visual.ln_pre.weight"], p["visual.ln_pre.bias"])
    for i in range(cfg.layers):
        x = _resblock(x, p, f"visual.transformer.resblocks.{i}.", cfg.heads, None)
    assert torch.allclose(enc(image), x, atol=1e-5)


def test_clip_and_vae_converters_round_trip():
    cfg = load_config("tiny")
    for enc, to_ckpt, to_native in (
        (TextEncoder(cfg.text_encoder), text_native_to_ckpt, text_ckpt_to_native),
        (ImageEncoder(cfg.image_encoder), image_native_to_ckpt, image_ckpt_to_native),
        (build_vae(cfg.vae), lambda sd: vae_native_to_ckpt(sd, cfg.vae), lambda sd: vae_ckpt_to_native(sd, cfg.vae)),
    ):
        randomize_(enc, seed=5)
        native = enc.state_dict()
        back = to_native(to_ckpt(native))
        assert set(back) == set(native)
        assert all(torch.equal(back[k], native[k]) for k in native)
    ckpt = text_native_to_ckpt(TextEncoder(cfg.text_encoder).state_dict())
    assert ckpt["text_projection"].shape == (cfg.text_encoder.width, cfg.text_encoder.projection_dim)
    assert ckpt["transformer.resblocks.0.attn.in_proj_weight"].shape == (3 * 64, 64)


def test_tokenizer_open_clip_layout(tmp_path):
    from train.dynamicrafter.conditioning import Tokenizer

    tok = Tokenizer(str(write_tiny_tokenizer(tmp_path)))
    ids = tok(["A cat!", "", "x " * 200])
    assert ids.shape == (3, 77)
    assert ids[0, 0] == 512 and ids[1, :2].tolist() == [512, 513] and ids[1, 2:].eq(0).all()  # pad with 0
    assert ids[2, -1] == 513  # truncated, EOT kept last
    assert tok(["a cat!"]).tolist() == tok(["A  cat!"]).tolist()  # lower-cased, whitespace-cleaned


def test_resize_antialiased():
    x = torch.rand(1, 3, 448, 448)
    y = resize_antialiased(x, (224, 224))
    assert y.shape == (1, 3, 224, 224)
    const = torch.full((1, 3, 300, 200), 0.3)
    assert torch.allclose(resize_antialiased(const, (224, 224)), torch.full((1, 3, 224, 224), 0.3), atol=1e-6)
    # antialias (Gaussian pre-blur, sigma = (factor - 1) / 2) damps a checkerboard before shrinking it
    board = (torch.arange(896)[:, None] + torch.arange(896)[None]).remainder(2).float().expand(1, 3, -1, -1)
    aliased = (resize_antialiased(board, (224, 224), antialias=False) - 0.5).abs().max()
    assert (resize_antialiased(board, (224, 224)) - 0.5).abs().max() < 0.2 * aliased
