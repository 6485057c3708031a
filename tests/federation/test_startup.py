"""Start-up pays only for the command given (bench/startup.py measures it).

Each case runs a fresh interpreter, as cron does, and lists the modules a
command line loaded: the network client, the store, the peer code and the
cloud SDK stay out of commands that do not use them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from federation.cli import ALL, build_parser
from federation.cli.commands import COMMANDS, HELP

PROBE = """
import contextlib, io, sys
from federation.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    main(sys.argv[1:])
print("\\n".join(sorted(sys.modules)))
"""

NETWORK_STORE_PEERS = {"aiohttp", "site_agent.store", "sqlite_utils", "federation.peers"}
CLOUD = {"openstack"}


def loaded(*argv: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(done.stdout.split())


def test_importing_the_command_line_imports_no_command() -> None:
    modules = loaded("--help")
    assert not {m for m in modules if m.startswith("federation.cli.") and m.endswith("_cmd")}
    assert not modules & (NETWORK_STORE_PEERS | CLOUD | {"lxml.etree", "signxml"})


@pytest.mark.parametrize(
    ("argv", "absent"),
    [
        (("--version",), NETWORK_STORE_PEERS | CLOUD),
        (("keys", "--help"), NETWORK_STORE_PEERS | CLOUD),
        (("endorse", "--help"), NETWORK_STORE_PEERS | CLOUD),
        (("verify", "--help"), NETWORK_STORE_PEERS | CLOUD),
        (("policy", "rules"), NETWORK_STORE_PEERS | CLOUD),
        (("images", "--help"), {"aiohttp", "federation.peers"} | CLOUD),
        (("status", "--help"), {"aiohttp", "federation.peers"} | CLOUD),
        (("sync", "--help"), CLOUD),
    ],
)
def test_a_command_imports_what_it_uses(argv: tuple[str, ...], absent: set[str]) -> None:
    assert not loaded(*argv) & absent


def test_the_lazy_parser_lists_every_command_as_the_full_one_does() -> None:
    full = build_parser(ALL)
    lazy = build_parser(None)
    for parser in (full, lazy):
        (choices,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        listed = choices._choices_actions
        assert [c.dest for c in listed] == [c.name for c in COMMANDS]
        assert [c.help for c in listed] == [HELP[c.name] for c in COMMANDS]
    assert full.format_help() == lazy.format_help()
