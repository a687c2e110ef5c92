"""The conventions every subcommand follows (versatileffn/cli/__init__.py): --version, help text for every option
with its default shown, -q/--quiet and --debug everywhere, results on stdout and messages through logging."""
import argparse

import pytest

from versatileffn.cli import build_parser, main
from versatileffn.version import __version__

PARSER = build_parser()
SUBPARSERS = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"versatileffn {__version__}"


@pytest.mark.parametrize("name", sorted(SUBPARSERS))
def test_every_option_has_help_and_shows_its_default(name):
    parser = SUBPARSERS[name]
    text = parser.format_help()
    flags = {s for a in parser._actions for s in a.option_strings}
    assert {"-q", "--quiet", "--debug"} <= flags, name
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        assert action.help and action.help.strip(), f"{name} {action.dest}: no help text"
        shown = parser._get_formatter()._expand_help(action) if action.help else ""
        if not action.option_strings or action.required or isinstance(
                action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._AppendAction)):
            continue
        if action.default not in (None, [], "", argparse.SUPPRESS):
            assert f"(default: {action.default})" in shown, f"{name} {action.dest}: default not shown"
        else:  # no value: the help says what happens instead
            assert "default" in shown or "when not given" in shown, f"{name} {action.dest}: {shown!r}"
    assert "Traceback" not in text


def test_quiet_and_debug_work_before_and_after_the_subcommand():
    for argv in (["--debug", "info"], ["info", "--debug"], ["-q", "info"], ["info", "--quiet"]):
        args = PARSER.parse_args(argv)
        flag = "debug" if "--debug" in argv else "quiet"
        assert getattr(args, flag) is True, argv
    assert PARSER.parse_args(["info"]).debug is False


def test_results_on_stdout_messages_on_stderr(capsys):
    assert main(["info", "--preset", "micro", "--json", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("{") and err == ""
