"""Settings on the CD: names are checked, values come out of /bin/sh exactly as given and inert.

The quoting is tested by sourcing a real ``context.sh`` with /bin/sh (and
dash when present) and printing each value back, NUL-separated.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from keys.errors import ConfigError
from site_agent.context.settings import (
    Setting,
    check_unique,
    parse_assignment,
    parse_context_sh,
    render_context_sh,
    shell_quote,
)

SHELLS = [s for s in ("/bin/sh", shutil.which("dash")) if s]

NASTY_VALUES = [
    "plain",
    "",
    "two words",
    "it's",
    "''",
    "'\\''",
    'double "quotes"',
    "$HOME and ${PATH}",
    "$(id -u)",
    "`id -u`",
    "a; echo injected",
    "a && b || c | d",
    "line one\nline two\n",
    "trailing backslash \\",
    "\\n is not a newline",
    "tab\there",
    "glob * ? [a-z]",
    "~root",
    "#not a comment",
    "é ü 中文 🙂",
    "= in value = fine",
]


def _source(shell: str, context_sh: Path, keys: list[str]) -> list[str]:
    """Source ``context_sh`` as the boot script does and print the values, NUL-separated."""
    printer = "; ".join(f'printf "%s\\0" "${key}"' for key in keys)
    result = subprocess.run(
        [shell, "-c", f'set -a; . "$1"; set +a; {printer}', "sh", str(context_sh)],
        capture_output=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
        cwd=context_sh.parent,
    )
    return result.stdout.decode("utf-8").split("\0")[:-1]


@pytest.mark.parametrize("shell", SHELLS)
def test_values_come_back_from_sh_exactly(shell: str, tmp_path: Path) -> None:
    settings = [Setting(key=f"VALUE_{n}", value=v) for n, v in enumerate(NASTY_VALUES)]
    context_sh = tmp_path / "context.sh"
    context_sh.write_bytes(render_context_sh(settings))
    assert _source(shell, context_sh, [s.key for s in settings]) == NASTY_VALUES


@pytest.mark.parametrize("shell", SHELLS)
def test_command_substitution_in_a_value_runs_nothing(shell: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    values = [
        f"$(touch {marker})",
        f"`touch {marker}`",
        f"'; touch {marker}; '",
        f"x'\ntouch {marker}\n'",
        f"$(touch {marker}1)'$(touch {marker}2)'",
    ]
    settings = [Setting(key=f"EVIL_{n}", value=v) for n, v in enumerate(values)]
    context_sh = tmp_path / "context.sh"
    context_sh.write_bytes(render_context_sh(settings))
    assert _source(shell, context_sh, [s.key for s in settings]) == values
    assert sorted(p.name for p in tmp_path.iterdir()) == ["context.sh"]


def test_settings_are_exported_to_a_child_process(tmp_path: Path) -> None:
    context_sh = tmp_path / "context.sh"
    context_sh.write_bytes(render_context_sh([Setting(key="SYSLOG_SERVER", value="logs:514")]))
    result = subprocess.run(
        [
            "/bin/sh",
            "-c",
            'set -a; . "$1"; set +a; sh -c \'echo "$SYSLOG_SERVER"\'',
            "sh",
            str(context_sh),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == "logs:514\n"


def test_context_sh_is_one_quoted_assignment_per_setting() -> None:
    text = render_context_sh(
        [Setting(key="SYSLOG_SERVER", value="logs.example.org"), Setting(key="NOTE", value="it's")]
    ).decode()
    body = [line for line in text.splitlines() if not line.startswith("#")]
    assert body == ["SYSLOG_SERVER='logs.example.org'", "NOTE='it'\\''s'"]


@pytest.mark.parametrize("value", NASTY_VALUES)
def test_context_sh_reads_back_without_running(value: str) -> None:
    settings = (Setting(key="A", value=value), Setting(key="B_2", value="after"))
    assert parse_context_sh(render_context_sh(settings)) == settings


@pytest.mark.parametrize(
    "text",
    [
        "A=unquoted\n",
        "A='x' B='y'\n",
        "A='open\n",
        "export A='x'\n",
        "A=$(id)\n",
        "a='lower'\n",
        "A='x'; touch /tmp/x\n",
    ],
)
def test_reading_back_refuses_anything_else(text: str) -> None:
    with pytest.raises(ConfigError, match=r"context\.sh"):
        parse_context_sh(text.encode())


@pytest.mark.parametrize(
    "assignment",
    ["SYSLOG_SERVER=x", "_PRIVATE=1", "A1=", "MONITORING_URL=https://mon/?a=b"],
)
def test_good_names_are_accepted(assignment: str) -> None:
    key, _, value = assignment.partition("=")
    assert parse_assignment(assignment) == Setting(key=key, value=value)


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("lower=x", "not allowed"),
        ("1ABC=x", "not allowed"),
        ("A-B=x", "not allowed"),
        ("A B=x", "not allowed"),
        ("=x", "not allowed"),
        ("ÄRGER=x", "not allowed"),
        ("$(id)=x", "not allowed"),
        ("NOEQUALS", "no '='"),
        ("PATH=/tmp", "reserved"),
        ("IFS=x", "reserved"),
        ("LD_PRELOAD=/tmp/x.so", "reserved"),
        ("VMIC_CONTEXT_DIR=/tmp", "reserved"),
        ("A=nul\0byte", "NUL"),
        ("A=\udcff", "UTF-8"),
    ],
)
def test_bad_settings_are_refused_with_a_hint(assignment: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_assignment(assignment)
    assert caught.value.hint


def test_a_key_given_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="twice"):
        check_unique([Setting(key="A", value="1"), Setting(key="A", value="2")])
    with pytest.raises(ConfigError, match="twice"):
        render_context_sh([Setting(key="A", value="1"), Setting(key="A", value="2")])


def test_shell_quote_wraps_in_single_quotes() -> None:
    assert shell_quote("a'b") == "'a'\\''b'"
    assert shell_quote("") == "''"
