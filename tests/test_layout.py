"""The package's layout rules: data flows downward only, no import circles, small modules.

Every ``import`` of a ``versatileffn`` module counts, also those inside functions (they run too).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "versatileffn"
MAX_LINES = 450

# Lowest first. A module may import its own layer and the layers below it, never one above.
LAYERS = [
    ("foundations", ["version", "errors", "console", "folders", "config", "paper", "presets"]),  # nothing above
    ("the FFN family", ["ffn"]),
    ("the LM", ["model", "flops", "kvcache", "generation"]),
    ("model files and data", ["tokenizer", "io", "data"]),
    ("Hugging Face integration", ["hf"]),
    ("the one loader", ["loading"]),
    ("training", ["train"]),
    ("evaluation", ["eval"]),
    ("analysis", ["analysis"]),
    ("tools beside the library", ["demo", "bench"]),
    ("command line", ["cli"]),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> int:
    """Index in LAYERS; the package's __init__ (the public API facade) sits on top of everything."""
    if module == "versatileffn":
        return len(LAYERS)
    top = module.split(".")[1]
    for i, (_, names) in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer of tests/test_layout.py: add it to LAYERS")


def imports_of(module: str) -> set[str]:
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m in MODULES and m != module}


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_imports_go_downward_only():
    upward = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {d} ({LAYERS[layer_of(d)][0]})"
              for m, deps in GRAPH.items() for d in deps if layer_of(d) > layer_of(m)]
    assert not upward, "\n".join(upward)


def test_no_import_circles():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(GRAPH[m]):
            if state.get(d) == 1:
                circles.append(" -> ".join(path[path.index(d):] + [d]))
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])
    assert not circles, "\n".join(circles)


def test_foundations_import_nothing_of_the_package():
    for module in MODULES:
        if layer_of(module) == 0:
            assert GRAPH[module] <= {m for m in MODULES if layer_of(m) == 0}, module


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_are_small(module):
    n = len(MODULES[module].read_text().splitlines())
    assert n <= MAX_LINES, f"{MODULES[module].relative_to(ROOT)} has {n} lines (at most {MAX_LINES})"


def test_import_is_light():
    """``import versatileffn`` loads the layers and the LM, not the tools or the optional extras."""
    code = ("import sys, versatileffn; print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'versatileffn', 'transformers', 'matplotlib', 'datasets', 'tensorboard', 'lm_eval'})))")
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                cwd=ROOT).stdout.split())
    heavy = {m for m in loaded if not m.startswith("versatileffn")}
    tools = {m for m in loaded if m.split(".")[1:2] and m.split(".")[1] in ("train", "eval", "analysis", "bench",
                                                                              "cli", "demo", "data")}
    assert not heavy and not tools, (heavy, tools)
