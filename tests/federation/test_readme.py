"""README.md is true to the CLI: every command, with its help as the code prints it."""

from __future__ import annotations

import pytest

from federation.cli import build_parser, main
from federation.cli.common import ExitCode
from federation.cli.reference import README, commands, current, render


def test_readme_cli_reference_is_what_the_parsers_print() -> None:
    assert current(README.read_text()) == render(), "run `make readme` and commit README.md"


def test_every_cli_command_appears_in_the_readme() -> None:
    text = README.read_text()
    for path, _parser in commands(build_parser()):
        assert f"### `{' '.join(('vmic', *path))}`" in text


@pytest.mark.parametrize("path", [path for path, _ in commands(build_parser())])
def test_every_command_has_help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: vmic")


def test_the_exit_code_table_lists_every_code_the_program_uses() -> None:
    text = README.read_text()
    table = text[text.index("| code | reason |") :].split("\n\n", 1)[0]
    rows = {int(line.split("|")[1]) for line in table.splitlines()[2:]}
    assert rows == {int(code) for code in ExitCode}


def test_readme_shows_the_two_commands() -> None:
    text = README.read_text()
    assert "make demo" in text
    assert "make test" in text
