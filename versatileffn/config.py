"""The one config system's machinery: typed dataclasses, YAML files and ``key=value`` overrides.

The config classes live beside what they configure (``VersatileFFNConfig`` in ``ffn/versatile.py``,
``ModelConfig`` in ``model.py``, the run config in ``train/config.py``); this module imports nothing of the
package but its errors. Every config class validates itself in ``__post_init__`` with ``require``, which raises
``UserError`` (a ``ValueError``) naming the field and the allowed range, so a wrong value fails where it is written,
not deep inside a forward pass. ``from_dict`` builds nested dataclasses from plain dicts (YAML) and rejects unknown
keys, scalars where a section belongs and values of the wrong type (``max_steps: true``, ``tensorboard: "no"``);
``to_dict`` is its inverse; ``apply_overrides`` applies ``a.b.c=value`` strings (the CLI's ``--set``).
"""
from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import MissingInputError, UserError

T = TypeVar("T")


def require(cond: bool, name: str, allowed: str, got: Any) -> None:
    """The one validation message: ``name must be allowed; got value``."""
    if not cond:
        raise UserError(f"{name} must be {allowed}; got {got!r}")


# ----------------------------------------------------------------------------- dict / YAML / overrides


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def from_dict(cls: type[T], data: dict[str, Any], path: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) dict, rejecting unknown keys with their dotted path."""
    if not isinstance(data, dict):
        raise UserError(f"{path or cls.__name__} must be a section (a mapping of keys to values); got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f" in {path}" if path else ""
        raise UserError(f"unknown config key(s){where}: {unknown}; allowed: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        tp = hints[key]
        where = f"{path}.{key}" if path else key
        if _is_dataclass_type(tp):
            if not isinstance(value, tp):
                value = from_dict(tp, value, where)  # a scalar here is an error that names the section
        else:
            value = _coerce(value, tp, where)
        kwargs[key] = value
    return cls(**kwargs)


# Field metadata: ``to_dict`` leaves such a field out while it is None (a value its owner fills in later, such as
# an FFN config's shape inside a ModelConfig), so saved configs hold only what was chosen.
OMIT_IF_NONE = {"omit_if_none": True}


def to_dict(obj: Any) -> Any:
    """Plain dicts / lists of a (nested) dataclass, the inverse of ``from_dict``."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not (f.metadata.get("omit_if_none") and getattr(obj, f.name) is None)}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_dict(v) for v in obj)
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _parse_scalar(text: str) -> Any:
    value = yaml.safe_load(text)
    if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string; numbers should stay numbers
        try:
            return float(value)
        except ValueError:
            return value
    return text if value is None and text not in ("null", "~", "") else value


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Convert YAML scalars to the annotated type (e.g. "3e-4" -> 3e-4 for a float field); reject values of
    another kind (a boolean for a number, a string for a boolean, a scalar for a section)."""
    args = typing.get_args(tp)
    if value is None:
        if type(None) in args or tp is Any:
            return None
        raise UserError(f"{path} must not be null")
    base = [a for a in args if a is not type(None)] if args else [tp]
    if base and all(_is_dataclass_type(b) for b in base):  # a section (e.g. model.ffn: one of the FFN configs)
        if not isinstance(value, (dict, *base)):
            raise UserError(f"{path} must be a section (a mapping such as {{kind: ...}}), not a single value; "
                            f"got {value!r} (set one field with {path}.FIELD=VALUE)")
        return value
    if bool in base:
        if not isinstance(value, bool):
            raise UserError(f"{path} must be true or false; got {value!r}")
        return value
    if isinstance(value, bool) and (int in base or float in base):
        raise UserError(f"{path} must be {'a number' if float in base else 'an integer'}; got {value!r}")
    if float in base and isinstance(value, (int, str)):
        try:
            return float(value)
        except ValueError:
            raise UserError(f"{path} must be a number; got {value!r}") from None
    if int in base and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise UserError(f"{path} must be an integer; got {value!r}") from None
    if int in base and isinstance(value, float) and value.is_integer() and float not in base:
        return int(value)
    if str in base and len(base) == 1 and isinstance(value, (dict, list)):
        raise UserError(f"{path} must be a single value, not a {'section' if isinstance(value, dict) else 'list'}; "
                        f"got {value!r}")
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings to a nested dict (values parsed as YAML scalars)."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r} must look like key=value (e.g. model.d_model=256)")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = _parse_scalar(text)
    return data


def read_text(path: str | Path, what: str = "file") -> str:
    """A UTF-8 text file's content; a UserError naming the file when it is not UTF-8 or cannot be read."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} {p} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
                        ) from None
    except IsADirectoryError:
        raise UserError(f"{what} {p} is a folder, not a file") from None
    except PermissionError:
        raise UserError(f"cannot read {what} {p}: permission denied") from None


def read_json(path: str | Path, missing: str) -> Any:
    """A JSON file's content; MissingInputError(missing) when absent, a UserError naming the file when corrupt."""
    p = Path(path)
    if not p.is_file():
        raise MissingInputError(missing)
    try:
        return json.loads(read_text(p, "JSON file"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{p} is not valid JSON: {exc}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise MissingInputError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(read_text(p, "config file"))
    except yaml.YAMLError as exc:
        raise UserError(f"config file {p} is not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config file {p} must hold a mapping at the top level (model:, data:, train:); got "
                        f"{data!r}")
    return data
