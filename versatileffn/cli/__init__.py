"""The ``versatileffn`` command line. Each subcommand lives in its own module of this package and
provides ``register(subparsers)``, which adds its parser and sets ``func``; modules load lazily."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module (in this package) that registers it; order = order in --help
SUBCOMMANDS: dict[str, str] = {
    "info": "info",
    "prepare-data": "prepare_data",
    "train": "train",
    "eval": "evaluate",
    "compare": "evaluate",
    "convert": "convert",
    "analyze": "analyze",
    "bench": "bench",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="versatileffn", description="VersatileFFN: layers, LM, training, evaluation")
    sub = parser.add_subparsers(dest="command", required=True)
    seen = set()
    for module in SUBCOMMANDS.values():
        if module in seen:
            continue
        seen.add(module)
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{module}":  # a real missing dependency inside the module
                raise
            continue  # subcommand not part of this build
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as exc:  # one clear message, no traceback
        print(f"versatileffn {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
