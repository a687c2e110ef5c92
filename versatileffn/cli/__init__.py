"""The ``versatileffn`` command line. Each subcommand lives in its own module of this package and
provides ``register(subparsers)``, which adds its parser and sets ``func``; modules load lazily.

Conventions every subcommand follows (a new one, e.g. ``generate``, too):

* **Help.** Every option has ``help=``; the shared formatter appends ``(default: ...)`` to every option whose
  default is a value (do not write the default into the text yourself; for a ``None`` default, say in the help
  what happens when the option is not given). ``tests/cli/test_cli_conventions.py`` checks all subcommands.
* **Common flags.** ``build_parser`` adds ``-q/--quiet`` (warnings and errors only, no progress bars) and
  ``--debug`` (tracebacks, DEBUG messages) to every subcommand; do not define them. ``args.quiet`` and
  ``args.debug`` are always set when ``func(args)`` runs.
* **Output and messages.** The command's result (JSON, tables, generated text) goes to stdout with ``print``.
  Everything else is a message: ``logging.getLogger(__name__).info(...)`` (or ``.warning``) in the subcommand and
  in the library, never ``print``. ``main`` configures logging once (``console.configure_logging``: stderr,
  INFO, WARNING with ``--quiet`` and on ranks other than 0 of a torchrun job). Progress bars:
  ``versatileffn.console.progress(...)`` (tqdm on a terminal, periodic lines in a log file; off with ``--quiet``).
* **Errors.** Bad user input raises ``versatileffn.errors.UserError``: ``main`` prints its one-line message and
  returns 2. Permission / missing-path / read-only / disk-full ``OSError``s get one line too. Anything else is a
  bug and keeps its traceback. ``--debug`` or ``VERSATILEFFN_DEBUG=1`` shows the traceback of every error.
* **Writing.** A folder is written through ``versatileffn.folders.atomic_folder(path, kind)`` (temporary sibling,
  atomic swap, never replaces a folder versatileffn did not write), a file through ``folders.write_file_atomic``;
  check output paths with ``folders.check_writable`` before long work.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import linecache
import os
import sys
from pathlib import Path

from ..console import logging_configured
from ..errors import Interrupted, UserError
from ..version import __version__

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
    "export": "export",
    "generate": "generate",
}

# OSErrors that describe the user's environment (a path, permissions, space), not a bug: one line, exit 2
USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EROFS, errno.ENOSPC,
               errno.EDQUOT, errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTEMPTY, errno.EXDEV}
PACKAGE_DIR = Path(__file__).resolve().parents[1]


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to every option whose default is a value (not None, not a plain on/off flag)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or not action.option_strings or action.default in (None, argparse.SUPPRESS, [], ""):
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._VersionAction,
                               argparse._HelpAction)):
            return text
        return f"{text} (default: %(default)s)"


def _add_common_flags(parser: argparse.ArgumentParser, top: bool) -> None:
    default = False if top else argparse.SUPPRESS  # a subcommand's flag must not undo `versatileffn --debug CMD`
    flags = [(("-q", "--quiet"), dict(dest="quiet", help="print only warnings and errors (no progress bars)")),
             (("--debug",), dict(dest="debug", help="show tracebacks and debug messages (also: VERSATILEFFN_DEBUG=1)"))]
    if not top:  # the flag eval and prepare-data had before --quiet: kept working, no longer listed
        flags.append((("--no-progress",), dict(dest="quiet", help=argparse.SUPPRESS)))
    for names, kwargs in flags:
        names = tuple(n for n in names if n not in parser._option_string_actions)  # a module's own stays
        if names:
            parser.add_argument(*names, action="store_true", default=default, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="versatileffn", formatter_class=HelpFormatter,
                                     description="VersatileFFN: layers, LM, training, evaluation")
    parser.add_argument("--version", action="version", version=f"versatileffn {__version__}",
                        help="print the version and exit")
    _add_common_flags(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
    for p in sub.choices.values():
        p.formatter_class = HelpFormatter
        _add_common_flags(p, top=False)
    return parser


def _raised_by_a_raise_of_ours(exc: BaseException) -> bool:
    """A plain ValueError / FileNotFoundError / ImportError raised by a ``raise`` statement in this package: a message
    written for the user (modules that predate ``UserError``). The same types from torch, numpy, ... stay bugs."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename
    try:
        ours = Path(filename).resolve().is_relative_to(PACKAGE_DIR)
    except (OSError, ValueError):
        return False
    return ours and linecache.getline(filename, tb.tb_lineno).strip().startswith("raise ")


def user_message(exc: BaseException) -> str | None:
    """The one-line message for a user's mistake; None for a bug (which keeps its traceback)."""
    if isinstance(exc, UserError):
        return " ".join(str(exc).split("\n"))
    if isinstance(exc, OSError) and exc.errno in USER_ERRNOS:
        where = f": {exc.filename}" if exc.filename else ""
        where += f" -> {exc.filename2}" if getattr(exc, "filename2", None) else ""
        return f"{exc.strerror or exc}{where}"
    if isinstance(exc, ModuleNotFoundError) and exc.name and not exc.name.startswith("versatileffn"):
        return f"the package {exc.name!r} is needed for this and is not installed (see the README's Install section)"
    if type(exc) in (ValueError, FileNotFoundError, ImportError) and _raised_by_a_raise_of_ours(exc):
        return str(exc)
    return None


def _debug_wanted(args) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("VERSATILEFFN_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.quiet, args.debug = bool(getattr(args, "quiet", False)), _debug_wanted(args)
    with logging_configured(quiet=args.quiet or os.environ.get("RANK", "0") != "0", debug=args.debug):
        return _run(args)


def _run(args) -> int:
    name = f"versatileffn {args.command}"
    try:
        return int(args.func(args) or 0)
    except Interrupted as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        message = user_message(exc)
        if message is None or args.debug:
            raise
        print(f"{name}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
