"""Versions of the packages that made an output, for the provenance records (manifest.json, config.yaml,
benchmarks)."""

from __future__ import annotations

from importlib import metadata

ANNOTATE_PACKAGES = ("realcam", "pycolmap", "ray", "transformers", "torch", "pyarrow", "numpy")
TRAIN_PACKAGES = ("torch", "accelerate", "diffusers", "transformers", "realcam", "deepspeed")


def versions(packages: tuple[str, ...] = ANNOTATE_PACKAGES, *, skip_missing: bool = False) -> dict:
    """``{package: installed version}`` in the order given; a package that is not installed maps to None, or
    is left out with ``skip_missing``."""
    out: dict = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if not skip_missing:
                out[name] = None
    return out
