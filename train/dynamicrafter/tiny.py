"""A tiny, randomly initialised DynamiCrafter for CPU tests (here and in the trainer's tests).

No downloads: the tokenizer is a byte-level CLIP vocabulary without merges (every character is a token),
written to a local folder; the weights are random, zero-inits included, so every branch contributes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .config import ModelConfig, load_config
from .model import DynamiCrafter


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2/CLIP byte-level alphabet: printable bytes map to themselves, the rest to code points >= 256.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_tiny_tokenizer(folder: str | Path) -> Path:
    """Byte-level CLIP tokenizer files: 256 bytes, 256 bytes + '</w>', <|startoftext|>, <|endoftext|> (514)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = 512
    vocab["<|endoftext|>"] = 513
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int = 0, scale: float = 1.0) -> None:
    """Overwrite every floating tensor: weights ~ N(0, 1/fan_in), 1-D params ~ 1 + 0.1 N (norm weights) or
    0.05 N (biases); zero-inits overwritten too."""
    g = torch.Generator().manual_seed(seed)
    for name, p in list(module.named_parameters()) + list(module.named_buffers()):
        if not p.is_floating_point() or "position_ids" in name:
            continue
        if p.dim() >= 2:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=g) * scale / fan_in**0.5)
        elif name.endswith("weight") and ("norm" in name or "ln" in name):
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.05 * torch.randn(p.shape, generator=g))


def build_tiny_model(tokenizer_dir: str | Path, seed: int = 0, config: ModelConfig | None = None) -> DynamiCrafter:
    cfg = config or load_config("tiny")
    cfg.text_encoder.tokenizer_path = str(write_tiny_tokenizer(tokenizer_dir))
    model = DynamiCrafter(cfg)
    schedule = {k: v.clone() for k, v in model.schedule.state_dict().items()}
    randomize_(model, seed)
    model.schedule.load_state_dict(schedule)  # keep the real noise schedule
    return model.eval()
