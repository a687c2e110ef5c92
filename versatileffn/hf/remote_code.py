"""Self-contained remote code: the modeling files a saved Hugging Face folder carries for ``trust_remote_code=True``,
generated at save time from this package's own source, so they never drift from it and need no ``versatileffn``.

``hf/modeling.py`` and every package module it imports (found by following its relative imports, lazy ones
included) are copied flat into the folder as ``vffn__<dotted path>.py`` (``versatileffn/ffn/common.py`` ->
``vffn__ffn__common.py``) with each relative import rewritten to the flat name; nothing else in the code changes.
Flat, because transformers copies a modeling file's sibling files (the ones named in ``from .x import`` lines) into
its module cache, one folder deep. The entry file ``modeling_versatileffn.py`` (``auto_map``'s module) uses the
installed package when it is the same version (one set of classes per process, as a plain load gets) and the
folder's copy otherwise. The bundle includes this module: ``write_remote_code`` run from a folder's copy (a model
loaded with ``trust_remote_code=True`` and saved again, without the package) copies that folder's files.
"""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

from ..version import __version__

PACKAGE = "versatileffn"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
MODELING_FILE = "modeling_versatileffn.py"  # written into every saved folder for trust_remote_code=True
ROOT_MODULE = f"{PACKAGE}.hf.modeling"
BUNDLE_ROOTS = (ROOT_MODULE, f"{PACKAGE}.hf.remote_code")  # the modeling code, and this module for saving again
PREFIX = "vffn__"


def flat_name(module: str) -> str:
    """``versatileffn.ffn.common`` -> ``vffn__ffn__common`` (the module's file name in the folder, no suffix)."""
    return PREFIX + "__".join(module.split(".")[1:])


def _source_file(module: str) -> Path:
    path = PACKAGE_DIR.parent.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _absolute(package: str, node: ast.ImportFrom) -> str:
    parts = package.split(".")
    base = parts[:len(parts) - node.level + 1]
    if len(base) < 1 or base[0] != PACKAGE:
        raise ValueError(f"relative import beyond the {PACKAGE} package in {package}")
    return ".".join(base + ([node.module] if node.module else []))


def _names(node: ast.ImportFrom) -> str:
    return ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)


def _rewritten(module: str) -> tuple[str, list[str]]:
    """(the module's source with relative imports pointing at the flat files, the package modules it imports)."""
    path = _source_file(module)
    text = path.read_text()
    package = _package_of(module, path)
    lines = text.splitlines(keepends=True)
    edits, needed = [], []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == PACKAGE for a in node.names) or (
                isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == PACKAGE):
            raise ValueError(f"{path}:{node.lineno}: an absolute import of {PACKAGE}; the bundled remote code "
                             "follows relative imports only")
        if not (isinstance(node, ast.ImportFrom) and node.level):
            continue
        target = _absolute(package, node)
        if node.module is not None:
            needed.append(target)
            new = f"from .{flat_name(target)} import {_names(node)}"
        else:  # from . import x as y: the submodule itself
            subs = [f"{target}.{a.name}" for a in node.names]
            needed += subs
            new = "from . import " + ", ".join(f"{flat_name(s)} as {a.asname or a.name}"
                                               for s, a in zip(subs, node.names))
        first, last = lines[node.lineno - 1], lines[node.end_lineno - 1]
        if first[:node.col_offset].strip() or last[node.end_col_offset:].split("#")[0].strip():
            raise ValueError(f"{path}:{node.lineno}: put the import on lines of its own to bundle it")
        tail = last[node.end_col_offset:]
        edits.append((node.lineno - 1, node.end_lineno, first[:node.col_offset] + new + tail))
    for start, end, new in sorted(edits, reverse=True):
        lines[start:end] = [new]
    return "".join(lines), needed


def bundle_sources() -> dict[str, str]:
    """File name -> text of every bundled module (the entry file excluded)."""
    out, todo, seen = {}, list(BUNDLE_ROOTS), set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        text, needed = _rewritten(module)
        out[flat_name(module) + ".py"] = text
        todo += needed
    return dict(sorted(out.items()))


def _relative_import(module: str, names: str) -> str:
    # built, not written out: transformers reads `from .x import` lines in the text of every bundled file, this one too
    return "from ." + module + " import " + names


def entry_source(bundled: list[str]) -> str:
    """``modeling_versatileffn.py``: the installed package of this version, else the folder's copy."""
    listed = "\n".join("    " + _relative_import(Path(f).stem, "__name__ as _") for f in bundled)
    return f'''"""Modeling code of a VersatileFFN model saved by versatileffn {__version__} (arXiv 2512.14531).

Loads with ``AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)`` with or without the versatileffn
package: the ``{PREFIX}*.py`` files beside this one are the package's own modules of that version (imports made
relative), generated when the folder was saved.
"""
try:  # the installed package of the same version: the very classes a plain load (after `import versatileffn`) uses
    from versatileffn.version import __version__ as _installed
    if _installed != "{__version__}":
        raise ImportError(f"versatileffn {{_installed}} is installed; this folder was saved by {__version__}")
    from versatileffn.hf.modeling import *  # noqa: F401,F403
except ImportError:  # no versatileffn, or another version: this folder's copy
    {_relative_import(flat_name(ROOT_MODULE), "*")}  # noqa: F401,F403

if False:  # never runs: names every bundled file for transformers, which copies the files named in `from .x import`
{listed}
'''


def write_remote_code(folder: str | Path) -> list[str]:
    """Write the entry file and the bundled modules into ``folder``; returns the file names written."""
    folder = Path(folder)
    if not __name__.startswith(PACKAGE + "."):  # running from a saved folder's copy: that folder's files are the code
        here = Path(__file__).resolve().parent
        names = [MODELING_FILE, *sorted(p.name for p in here.glob(PREFIX + "*.py"))]
        for name in names:
            if (folder / name).resolve() != here / name:
                shutil.copyfile(here / name, folder / name)
        return names
    sources = bundle_sources()
    for name, text in sources.items():
        (folder / name).write_text(text)
    (folder / MODELING_FILE).write_text(entry_source(list(sources)))
    return [MODELING_FILE, *sources]


__all__ = ["write_remote_code", "bundle_sources", "entry_source", "flat_name"]
