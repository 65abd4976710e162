"""Checkpoint reading, strict loading with a readable key report, and meta-device construction.

Modules are built under `torch.device("meta")` and filled with `load_state_dict(assign=True)`, so the 1.4B
UNet is never allocated twice: the only real copy is the one read from the file (memory-mapped when possible).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

# The official checkpoint's key prefix of each component (here, not in model.py, so the preflight reads it
# without importing the model stack).
PREFIXES = {
    "unet": "model.diffusion_model.",
    "vae": "first_stage_model.",
    "text_encoder": "cond_stage_model.model.",
    "image_encoder": "embedder.model.",
    "image_proj_model": "image_proj_model.",
}
COMPONENTS = tuple(PREFIXES)  # the parts `train.convert` writes; the schedule is rebuilt from the config

_LIST_LIMIT = 50


class StateDictMismatchError(RuntimeError):
    """Raised by strict loading; the message lists the missing, unexpected and shape-mismatched keys."""


def _shape(t) -> tuple[int, ...]:
    return tuple(t.shape) if hasattr(t, "shape") else tuple(t)


@dataclass
class KeyReport:
    missing: list[str] = field(default_factory=list)  # in the model, not in the state dict
    unexpected: list[str] = field(default_factory=list)  # in the state dict, not in the model
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # key, model shape, given shape

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def format(self, name: str = "model") -> str:
        if self.ok:
            return f"{name}: all keys match"
        lines = [
            f"strict load of {name!r} failed: {len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.mismatched)} shape-mismatched keys"
        ]

        def section(title: str, rows: list[str]) -> None:
            if rows:
                lines.append(f"  {title}:")
                lines.extend(f"    {r}" for r in rows[:_LIST_LIMIT])
                if len(rows) > _LIST_LIMIT:
                    lines.append(f"    ... and {len(rows) - _LIST_LIMIT} more")

        section("missing (expected by the model, absent from the checkpoint)", self.missing)
        section("unexpected (in the checkpoint, unknown to the model)", self.unexpected)
        section(
            "shape mismatch (model vs checkpoint)",
            [f"{k}: model {list(a)} vs checkpoint {list(b)}" for k, a, b in self.mismatched],
        )
        return "\n".join(lines)


def compare_keys(expected: Mapping[str, object], given: Mapping[str, object]) -> KeyReport:
    """Compare two {key: tensor or shape} maps (order-preserving lists for readability)."""
    report = KeyReport()
    report.missing = [k for k in expected if k not in given]
    report.unexpected = [k for k in given if k not in expected]
    for k in expected:
        if k in given and _shape(expected[k]) != _shape(given[k]):
            report.mismatched.append((k, _shape(expected[k]), _shape(given[k])))
    return report


def check_keys(expected: Mapping[str, object], given: Mapping[str, object], name: str) -> None:
    report = compare_keys(expected, given)
    if not report.ok:
        msg = report.format(name)
        print(msg)
        raise StateDictMismatchError(msg)


def load_strict(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], name: str = "model", dtype: torch.dtype | None = None
) -> nn.Module:
    """Strictly load `state_dict` into `module` (possibly on meta) by assignment, after a readable key check.

    Floating tensors are cast to `dtype`, or to the dtype of the module's own tensor when None.
    """
    own = module.state_dict(keep_vars=True)
    check_keys(own, state_dict, name)
    ready = {}
    for k, v in state_dict.items():
        target = dtype if dtype is not None else own[k].dtype
        ready[k] = v.to(target) if v.is_floating_point() and v.dtype != target else v
    module.load_state_dict(ready, strict=True, assign=True)
    leftovers = [n for n, t in _named_tensors(module) if t.is_meta]
    if leftovers:
        raise StateDictMismatchError(f"{name}: tensors still on the meta device after loading: {leftovers[:20]}")
    return module


def _named_tensors(module: nn.Module):
    yield from module.named_parameters()
    yield from module.named_buffers()


def read_state_dict(path: str | Path, unsafe_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a `.ckpt`/`.pt`/`.pth` (under "state_dict", DeepSpeed fallback "module") or `.safetensors` file.

    Pickles are read with `weights_only=True` (and memory-mapped); a checkpoint that needs arbitrary unpickling
    is refused unless `unsafe_pickle=True`.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        ckpt = _torch_load(path, weights_only=True)
    except pickle.UnpicklingError as err:
        if not unsafe_pickle:
            raise RuntimeError(
                f"{path}: cannot be read with torch.load(weights_only=True) ({err}). "
                "If you trust the file, retry with unsafe_pickle=True (CLI: --unsafe-pickle)."
            ) from err
        ckpt = _torch_load(path, weights_only=False)
    if isinstance(ckpt, Mapping) and "state_dict" in ckpt:
        return dict(ckpt["state_dict"])
    if isinstance(ckpt, Mapping) and "module" in ckpt:
        # DeepSpeed: keys carry a 16-character wrapper prefix ("_forward_module.").
        return {k[16:]: v for k, v in ckpt["module"].items()}
    if isinstance(ckpt, Mapping) and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return dict(ckpt)
    raise ValueError(f"{path}: no 'state_dict' or 'module' entry and not a flat tensor dict")


def _torch_load(path: Path, weights_only: bool):
    try:  # memory-mapped: tensors are paged in on use, never copied whole into RAM
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err) and "zip" not in str(err):
            raise
        return torch.load(path, map_location="cpu", weights_only=weights_only)  # legacy (non-zip) format


def rename_legacy_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Older 256 checkpoints call the fs embedding `framestride_embed` (the official loader renames it)."""
    return {k.replace("framestride_embed", "fps_embedding"): v for k, v in state_dict.items()}


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def add_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state_dict.items()}
