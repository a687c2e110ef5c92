"""The project's errors for bad user input (README "Reliability").

A ``UserError`` is a mistake the user can fix: a wrong config value, a path that cannot be used, a corrupt or
missing input file. The command line prints its message alone (one line, no traceback) and exits 2; ``--debug``
or ``VERSATILEFFN_DEBUG=1`` shows the traceback. Anything else that escapes a command is treated as a bug and
keeps its traceback. Both classes subclass the built-in errors that callers caught before they existed
(``ValueError``, ``FileNotFoundError``), so ``except ValueError`` keeps working.
"""
from __future__ import annotations


class UserError(ValueError):
    """Bad user input: one clear message that says what is wrong and, where possible, what to do."""


class MissingInputError(UserError, FileNotFoundError):
    """A file or folder the user pointed at does not exist (or is not what the command needs)."""


def exit_code_for_signal(signum: int) -> int:
    """The shell's convention for a process stopped by a signal: 128 + its number (130 for Ctrl-C)."""
    return 128 + int(signum)


class Interrupted(Exception):
    """Training stopped on SIGINT / SIGTERM after writing a checkpoint; the message says where. Not an error: the
    command line prints the message and exits with 128 + the signal's number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = exit_code_for_signal(signum)
