"""The `vmic` command line: parse arguments, call one function, print, map errors to exit codes.

Each command group lives in its own module (``keys_cmd``, ``endorse_cmd``,
``verify_cmd``) and registers its subcommands here. :func:`main` takes an
argument list so that tests run commands in-process; it is the only place
that catches the root :class:`~keys.errors.VmicError`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib import metadata

from federation.cli import (
    cloud_cmd,
    context_cmd,
    endorse_cmd,
    images_cmd,
    keys_cmd,
    peer_cmd,
    policy_cmd,
    serve_cmd,
    site_cmd,
    status_cmd,
    verify_cmd,
)
from federation.cli.common import ExitCode, report_error
from federation.cli.sitelog import command_logging
from keys.errors import VmicError

PROG = "vmic"


def _version() -> str:
    try:
        return metadata.version("vmic")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "vmic: exchange trusted virtual machine images. Endorsers sign image lists; "
            "sites verify them, mirror the images and share them with peer sites."
        ),
        epilog="Run `vmic COMMAND --help` for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    keys_cmd.register(commands)
    endorse_cmd.register(commands)
    policy_cmd.register(commands)
    verify_cmd.register(commands)
    site_cmd.register(commands)
    status_cmd.register(commands)
    images_cmd.register(commands)
    serve_cmd.register(commands)
    peer_cmd.register(commands)
    cloud_cmd.register(commands)
    context_cmd.register(commands)
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
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
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
