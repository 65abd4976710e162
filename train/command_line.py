"""What train's sampling and conversion commands share on their command lines (annotate/command.py).

Every command's ``--config`` is now its own YAML preset; the backbone preset (tiny/256/512/1024 or a backbone
YAML), which ``train.sample``, ``train.convert``, ``train.camera.released``, the editor and ``eval generate``
took as ``--config`` before, is ``--backbone`` (key ``config``, the name
:func:`train.inference.model.load_model` reads). A backbone preset given to ``--config`` is refused with that
spelling instead of failing as an unreadable or foreign preset.
"""

from __future__ import annotations

from pathlib import Path

from annotate.config import ConfigError, read_yaml

BACKBONE_FLAG = "--backbone"


def _backbone_preset(value: str) -> bool:
    from train.dynamicrafter.config import PRESET_DIR

    p = Path(value)
    if not p.suffix:
        return not p.exists() and (PRESET_DIR / f"{value}.yaml").is_file()
    if p.suffix.lower() in (".yaml", ".yml") and p.is_file():
        try:
            data = read_yaml(p)
        except ConfigError:
            return False
        return "unet" in data  # a backbone config (train/dynamicrafter/configs/*.yaml, save_config)
    return False


def preset_reader(prog: str):
    """``load_preset`` of a command with a ``--backbone`` option: this command's YAML preset, never a backbone's."""

    def read(path: str) -> dict:
        if _backbone_preset(path):
            raise ConfigError(f"{prog}: --config {path} is a backbone preset; give it as {BACKBONE_FLAG} {path} "
                              "(or config=...): --config is this command's own YAML preset (see --print-config)")
        return read_yaml(path)

    return read
