"""The one preset system: YAML files shipped inside the package (``versatileffn/presets/NAME.yaml``).

A preset has the run config's sections (``model:``, ``data:``, ``train:``); model-only presets (``micro``, ``tiny``,
``small``) hold just ``model:``. A section may name another preset instead of spelling it out (``model: tiny``):
that preset's section is used. ``versatileffn train --config NAME`` and ``model_config(NAME)`` read the same files;
``--config`` also takes a path to any YAML file of the same shape.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import load_yaml
from ..errors import UserError

PRESET_DIR = Path(__file__).resolve().parent


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"unknown preset {name!r}; presets: {preset_names()}")
    return path


def load_preset(name_or_path: str | Path, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A YAML file's content, or a preset's by name, with sections that name a preset replaced by its section."""
    path = Path(name_or_path)
    if not path.is_file():
        if str(name_or_path) not in preset_names():
            raise UserError(f"config {str(name_or_path)!r} is neither a file nor a preset; presets: {preset_names()}")
        path = preset_path(str(name_or_path))
    data = load_yaml(path)
    for section, value in data.items():
        if isinstance(value, str):
            if value in _seen:
                raise UserError(f"{path}: presets name each other in a circle ({' -> '.join(_seen + (value,))})")
            if value not in preset_names():
                raise UserError(f"{path}: {section}: unknown preset {value!r} (a section or a preset name); "
                                f"presets: {preset_names()}")
            other = load_preset(preset_path(value), _seen + (path.stem, value))
            if not isinstance(other.get(section), dict):
                raise UserError(f"{path}: {section}: {value} names a preset without a {section!r} section")
            data[section] = other[section]
    return data


def model_preset(name: str) -> dict[str, Any]:
    """The ``model:`` section of a preset (``paper-354m``, ``small``, ``tiny``, ``micro``, ...)."""
    if name not in preset_names():
        raise UserError(f"unknown model preset {name!r}; choose one of {preset_names()}")
    model = load_preset(name).get("model")
    if not isinstance(model, dict):
        raise UserError(f"preset {name!r} has no model section")
    return model
