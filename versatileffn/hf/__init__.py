"""Hugging Face transformers integration: convert a dense causal LM to VersatileFFN, save / load / generate
with transformers, export back to dense.

Importing this package is cheap: transformers is imported only when one of the names below is used.
``import versatileffn`` registers the converted model types with ``AutoConfig`` / ``AutoModelForCausalLM``
as soon as transformers itself is imported (``register_with_transformers``), so plain
``AutoModelForCausalLM.from_pretrained(DIR)`` works without ``trust_remote_code``.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

_EXPORTS = {
    "convert_dense_model": "convert", "save_converted": "convert", "export_dense": "convert",
    "load_dense_model": "convert", "dense_state_dict": "convert", "versatile_state_dict": "convert",
    "copy_tokenizer_files": "convert", "load_converted": "convert", "is_converted_hf_dir": "folders",
    "ARCHITECTURES": "modeling", "CLASSES": "modeling", "PostNormVersatileFFN": "modeling",
    "VersatileCausalLMMixin": "modeling", "classes_for": "modeling", "register": "modeling",
    "TemperatureAnnealCallback": "training", "VersatileTrainer": "training", "ffn_log_metrics": "training",
    "export_native": "export", "model_card": "card", "write_model_card": "card", "write_remote_code": "remote_code",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _register_now() -> None:
    try:
        importlib.import_module(f"{__name__}.modeling")  # registers on import
    except Exception as exc:  # never break `import transformers` for the user
        warnings.warn(f"versatileffn: could not register the VersatileFFN model types with transformers: {exc}")


class _RegisterAfterTransformersImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Runs the registration right after the first ``import transformers`` finishes, and then removes itself."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "transformers":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        self._loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _register_now()

    def __getattr__(self, name):  # everything else (is_package, get_resource_reader, ...) is the real loader's
        if name == "_loader":
            raise AttributeError(name)
        return getattr(self._loader, name)


def register_with_transformers() -> None:
    """Register now if transformers is loaded, later (on its import) if it is installed, never if it is absent."""
    if "transformers" in sys.modules:
        _register_now()
    elif importlib.util.find_spec("transformers") is not None and not any(
            isinstance(f, _RegisterAfterTransformersImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterTransformersImport())


__all__ = sorted(_EXPORTS) + ["register_with_transformers"]
