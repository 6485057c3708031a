"""The `vmic` command line: parse arguments, call one function, print, map errors to exit codes.

Each command group lives in its own module (``keys_cmd``, ``endorse_cmd``,
``verify_cmd``) and registers its subcommands here. Start-up pays only for
the command given: :mod:`federation.cli.commands` names every command and its
module without importing any, so `vmic --help` and `vmic --version` import
no command module, and `vmic COMMAND` imports only that command's. :func:`main`
takes an argument list so that tests run commands in-process; it is the only
place that catches the root :class:`~keys.errors.VmicError`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from federation.cli.commands import COMMANDS, MODULES
from federation.cli.common import ExitCode, report_error
from federation.cli.sitelog import command_logging
from keys.errors import VmicError

PROG = "vmic"
ALL = "*"
"""``build_parser(ALL)``: every command module, as the README reference and the tests want."""


class _Version(argparse.Action):
    """``--version``: the installed distribution's version, looked up only when asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> None:
        from importlib import metadata  # noqa: PLC0415 - 50 ms every start-up would pay

        try:
            version = metadata.version("vmic")
        except metadata.PackageNotFoundError:
            version = "unknown"
        print(f"{parser.prog} {version}")
        parser.exit()


def chosen_command(arguments: Sequence[str]) -> str | None:
    """The command word of a command line (the first word that is not an option)."""
    return next((word for word in arguments if not word.startswith("-")), None)


def build_parser(command: str | None = ALL) -> argparse.ArgumentParser:
    """The parser; with ``command``, only that command's module is imported and registered
    (the others are listed by name and help alone); ``None``: no module at all."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "vmic: exchange trusted virtual machine images. Endorsers sign image lists; "
            "sites verify them, mirror the images and share them with peer sites."
        ),
        epilog="Run `vmic COMMAND --help` for the options of each command.",
    )
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = {c.module for c in COMMANDS if command in (ALL, c.name)}
    for module in MODULES:
        if module in wanted:
            importlib.import_module(f"federation.cli.{module}").register(commands)
            continue
        for listed in COMMANDS:  # name and help only: never parsed with
            if listed.module == module:
                commands.add_parser(listed.name, help=listed.help, add_help=False)
    return parser


def _parse(parser: argparse.ArgumentParser, arguments: list[str]) -> argparse.Namespace:
    """Parse; a command that runs a command of its own (`hooks add`) takes what follows `--`."""
    if "--" in arguments:
        at = arguments.index("--")
        head, tail = arguments[:at], arguments[at + 1 :]
        args, rest = parser.parse_known_args(head)
        if getattr(args, "takes_command", False) and not rest:
            args.command_argv = tail
            return args
    args = parser.parse_args(arguments)
    if getattr(args, "takes_command", False):
        parser.error("give the hook's command after `--`, e.g. -- /usr/local/bin/hook --flag")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(chosen_command(arguments))
    try:
        args = _parse(parser, arguments)
    except SystemExit as exc:  # argparse exits on --help, --version and usage errors
        return int(exc.code) if isinstance(exc.code, int) else ExitCode.USAGE
    try:
        # `vmic sync` and `vmic cloud` report their problems themselves, and log to the
        # site log only
        with command_logging(to_stderr=args.command not in ("sync", "cloud")):
            return int(args.func(args))
    except VmicError as error:
        return report_error(error)
    except KeyboardInterrupt:
        print("vmic: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED


def run() -> None:
    """Console-script entry point."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`vmic images | head`): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = ExitCode.FAILURE
    sys.exit(code)
