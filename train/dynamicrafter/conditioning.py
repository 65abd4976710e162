"""CLIP ViT-H-14 text and image towers (transformers modules) with converters from open_clip checkpoint names.

open_clip (checkpoint)                         transformers (here)
  token_embedding.weight                         text_model.embeddings.token_embedding.weight
  positional_embedding                           text_model.embeddings.position_embedding.weight
  transformer.resblocks.i.ln_1 / ln_2            text_model.encoder.layers.i.layer_norm1 / layer_norm2
  transformer.resblocks.i.attn.in_proj_*         ... self_attn.{q,k,v}_proj.*  (split in three)
  transformer.resblocks.i.attn.out_proj          ... self_attn.out_proj
  transformer.resblocks.i.mlp.c_fc / c_proj      ... mlp.fc1 / fc2
  ln_final                                       text_model.final_layer_norm
  text_projection [w, p] (x @ P)                 text_projection.weight [p, w] (transposed)
  visual.{class_embedding, positional_embedding, conv1, ln_pre, transformer, ln_post, proj} likewise under
  vision_model.{embeddings.*, pre_layrnorm, encoder, post_layernorm} and visual_projection.
Tensors the towers never use but the checkpoint keeps (logit_scale; the text-side leftovers of the image
embedder's open_clip model) live as buffers in an `unused` submodule so loading stays strict and lossless.

Outputs: text = penultimate layer (23 of 24 blocks) + ln_final, [b, 77, 1024];
image = all tokens before ln_post (no projection), [b, 257, 1280].
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from .config import ImageEncoderConfig, TextEncoderConfig

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class _Unused(nn.Module):
    """Holds checkpoint tensors that no forward pass reads (kept for strict, lossless round trips)."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]):
        super().__init__()
        for name, shape in shapes.items():
            self.register_buffer(name, torch.zeros(shape))


def _text_leftover_shapes(vocab: int, width: int, context: int, proj: int) -> dict[str, tuple[int, ...]]:
    return {
        "token_embedding": (vocab, width),
        "positional_embedding": (context, width),
        "ln_final_weight": (width,),
        "ln_final_bias": (width,),
        "text_projection": (width, proj),
        "logit_scale": (),
    }


class TextEncoder(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.cfg = cfg
        hf = CLIPTextConfig(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.width,
            intermediate_size=int(cfg.width * cfg.mlp_ratio),
            num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads,
            max_position_embeddings=cfg.context_length,
            projection_dim=cfg.projection_dim,
            hidden_act="gelu",  # ViT-H-14 uses exact GELU, not quick_gelu
            layer_norm_eps=1e-5,
            bos_token_id=min(49406, cfg.vocab_size - 2),
            eos_token_id=min(49407, cfg.vocab_size - 1),
            pad_token_id=0,
        )
        self.clip = CLIPTextModelWithProjection(hf)
        self.unused = _Unused({"logit_scale": ()})
        _real_position_ids(self)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids [b, 77] -> penultimate hidden states after ln_final, [b, 77, width]."""
        tm = self.clip.text_model
        out = tm(input_ids=input_ids, output_hidden_states=True)
        return tm.final_layer_norm(out.hidden_states[-2])


class ImageEncoder(nn.Module):
    def __init__(self, cfg: ImageEncoderConfig):
        super().__init__()
        self.cfg = cfg
        hf = CLIPVisionConfig(
            hidden_size=cfg.width,
            intermediate_size=int(cfg.width * cfg.mlp_ratio),
            num_hidden_layers=cfg.layers,
            num_attention_heads=cfg.heads,
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            projection_dim=cfg.projection_dim,
            hidden_act="gelu",
            layer_norm_eps=1e-5,
        )
        self.clip = CLIPVisionModelWithProjection(hf)
        self.unused = _Unused(
            _text_leftover_shapes(cfg.text_vocab_size, cfg.text_width, cfg.text_context_length, cfg.projection_dim)
        )
        _real_position_ids(self)

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """[b, 3, H, W] in [-1, 1] -> CLIP input: resize (bicubic, align_corners, antialias, no crop), normalise."""
        size = self.cfg.image_size
        x = resize_antialiased(image.float(), (size, size), self.cfg.antialias)
        x = (x + 1.0) / 2.0
        mean = torch.tensor(OPENAI_CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(OPENAI_CLIP_STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """[b, 3, H, W] in [-1, 1] -> all tokens of the last block before ln_post, [b, 1 + patches, width]."""
        pixels = self.preprocess(image).to(self.clip.dtype)
        return self.clip.vision_model(pixel_values=pixels).last_hidden_state


def _real_position_ids(module: nn.Module) -> None:
    """transformers keeps `position_ids` as a non-persistent buffer: when built on the meta device no checkpoint
    fills it, so create it for real right away."""
    for sub in module.modules():
        ids = sub._buffers.get("position_ids")
        if ids is not None and ids.is_meta:
            sub.register_buffer(
                "position_ids", torch.arange(ids.shape[-1], device="cpu").expand(1, -1), persistent=False
            )


def resize_antialiased(x: torch.Tensor, size: tuple[int, int], antialias: bool = True) -> torch.Tensor:
    """Bicubic resize with align_corners=True; when shrinking, a Gaussian blur first (the kornia-style antialias
    the original preprocessing uses: sigma = (factor - 1) / 2, kernel = odd(max(4 sigma, 3)), reflect padding)."""
    h, w = x.shape[-2:]
    fh, fw = h / size[0], w / size[1]
    if antialias and (fh > 1 or fw > 1):
        sh, sw = max((fh - 1) / 2, 0.001), max((fw - 1) / 2, 0.001)
        kh, kw = int(max(4 * sh, 3)), int(max(4 * sw, 3))
        kh, kw = kh + (kh % 2 == 0), kw + (kw % 2 == 0)
        x = _gaussian_blur(x, (kh, kw), (sh, sw))
    return F.interpolate(x, size=size, mode="bicubic", align_corners=True)


def _gaussian_blur(x: torch.Tensor, ksize: tuple[int, int], sigma: tuple[float, float]) -> torch.Tensor:
    c = x.shape[1]

    def kernel(k: int, s: float) -> torch.Tensor:
        t = torch.arange(k, dtype=x.dtype, device=x.device) - k // 2
        g = torch.exp(-(t**2) / (2 * s**2))
        return g / g.sum()

    kh, kw = kernel(ksize[0], sigma[0]), kernel(ksize[1], sigma[1])
    x = F.pad(x, (ksize[1] // 2, ksize[1] // 2, ksize[0] // 2, ksize[0] // 2), mode="reflect")
    x = F.conv2d(x, kh.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(x, kw.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


# ----------------------------------------------------------------------------------------------- key converters

_BLOCK_RENAMES = [
    ("ln_1.", "layer_norm1."),
    ("ln_2.", "layer_norm2."),
    ("attn.out_proj.", "self_attn.out_proj."),
    ("mlp.c_fc.", "mlp.fc1."),
    ("mlp.c_proj.", "mlp.fc2."),
]


def _block_to_native(rest: str, value: torch.Tensor, prefix: str, out: dict) -> None:
    if rest.startswith("attn.in_proj_"):
        kind = rest[len("attn.in_proj_") :]  # "weight" | "bias"
        for name, part in zip(("q", "k", "v"), value.chunk(3, dim=0)):
            out[f"{prefix}self_attn.{name}_proj.{kind}"] = part
        return
    for old, new in _BLOCK_RENAMES:
        if rest.startswith(old):
            out[prefix + new + rest[len(old) :]] = value
            return
    out[prefix + "?" + rest] = value  # unknown: surfaces as an unexpected key


def _blocks_to_ckpt(state_dict: dict, native_prefix: str, ckpt_prefix: str, out: dict) -> set[str]:
    """transformers encoder layers -> open_clip resblocks; returns the keys consumed."""
    used = set()
    pat = re.compile(re.escape(native_prefix) + r"(\d+)\.(.*)$")
    layers: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        m = pat.match(key)
        if m:
            layers.setdefault(int(m[1]), {})[m[2]] = value
            used.add(key)
    for i in sorted(layers):
        p = layers[i]
        for kind in ("weight", "bias"):
            parts = [p.pop(f"self_attn.{n}_proj.{kind}", None) for n in ("q", "k", "v")]
            if all(t is not None for t in parts):
                out[f"{ckpt_prefix}{i}.attn.in_proj_{kind}"] = torch.cat(parts, dim=0)
        for rest, value in p.items():
            for old, new in _BLOCK_RENAMES:
                if rest.startswith(new):
                    rest = old + rest[len(new) :]
                    break
            out[f"{ckpt_prefix}{i}.{rest}"] = value
    return used


_TEXT_TOP = {
    "token_embedding.weight": "clip.text_model.embeddings.token_embedding.weight",
    "positional_embedding": "clip.text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "clip.text_model.final_layer_norm.weight",
    "ln_final.bias": "clip.text_model.final_layer_norm.bias",
    "logit_scale": "unused.logit_scale",
}
_VISION_TOP = {
    "visual.class_embedding": "clip.vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "clip.vision_model.embeddings.position_embedding.weight",
    "visual.conv1.weight": "clip.vision_model.embeddings.patch_embedding.weight",
    "visual.ln_pre.weight": "clip.vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "clip.vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "clip.vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "clip.vision_model.post_layernorm.bias",
    "token_embedding.weight": "unused.token_embedding",
    "positional_embedding": "unused.positional_embedding",
    "ln_final.weight": "unused.ln_final_weight",
    "ln_final.bias": "unused.ln_final_bias",
    "text_projection": "unused.text_projection",
    "logit_scale": "unused.logit_scale",
}
# open_clip stores projections as [in, out] matrices (x @ P); transformers Linear weights are [out, in].
_TEXT_T = {"text_projection": "clip.text_projection.weight"}
_VISION_T = {"visual.proj": "clip.visual_projection.weight"}
_TEXT = (_TEXT_TOP, "transformer.resblocks.", "clip.text_model.encoder.layers.", _TEXT_T)
_VISION = (_VISION_TOP, "visual.transformer.resblocks.", "clip.vision_model.encoder.layers.", _VISION_T)


def _to_native(state_dict: dict, top: dict, blocks_prefix: str, native_blocks: str, transposed: dict) -> dict:
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key in top:
            out[top[key]] = value
        elif key in transposed:
            out[transposed[key]] = value.t()
        elif key.startswith(blocks_prefix):
            i, rest = key[len(blocks_prefix) :].split(".", 1)
            _block_to_native(rest, value, f"{native_blocks}{i}.", out)
        else:
            out[key] = value  # unknown: surfaces as an unexpected key
    return out


def _to_ckpt(state_dict: dict, top: dict, blocks_prefix: str, native_blocks: str, transposed: dict) -> dict:
    out: dict[str, torch.Tensor] = {}
    used = _blocks_to_ckpt(state_dict, native_blocks, blocks_prefix, out)
    inv_top = {v: k for k, v in top.items()}
    inv_t = {v: k for k, v in transposed.items()}
    for key, value in state_dict.items():
        if key in used:
            continue
        if key in inv_top:
            out[inv_top[key]] = value
        elif key in inv_t:
            out[inv_t[key]] = value.t()
        else:
            out[key] = value
    return out


def text_ckpt_to_native(state_dict: dict) -> dict:
    """`cond_stage_model.model.*` (prefix stripped) -> TextEncoder state dict."""
    return _to_native(state_dict, *_TEXT)


def text_native_to_ckpt(state_dict: dict) -> dict:
    return _to_ckpt(state_dict, *_TEXT)


def image_ckpt_to_native(state_dict: dict) -> dict:
    """`embedder.model.*` (prefix stripped) -> ImageEncoder state dict."""
    return _to_native(state_dict, *_VISION)


def image_native_to_ckpt(state_dict: dict) -> dict:
    return _to_ckpt(state_dict, *_VISION)


# ---------------------------------------------------------------------------------------------------- tokenizer


class Tokenizer:
    """open_clip-style 77-token ids from a local transformers CLIPTokenizer folder (vocab.json, merges.txt).

    Like open_clip: [SOT] tokens [EOT], truncated to 77 with EOT kept last, padded with id 0 (not EOT: the
    padded positions are part of the cross-attention context, so the pad id changes the outputs).
    """

    def __init__(self, path: str, context_length: int = 77):
        from transformers import CLIPTokenizer

        self.tok = CLIPTokenizer.from_pretrained(path, local_files_only=True)
        self.context_length = context_length

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        ids = torch.zeros(len(prompts), self.context_length, dtype=torch.long)
        for i, prompt in enumerate(prompts):
            row = self.tok(prompt, add_special_tokens=True, truncation=True, max_length=self.context_length)
            row = row["input_ids"]
            ids[i, : len(row)] = torch.tensor(row)
        return ids
