"""Site settings on the contextualisation CD: checked names, values quoted for /bin/sh.

A setting is ``KEY=VALUE`` on the command line (``--set
SYSLOG_SERVER=logs.example.org``). On the CD the settings are ``context.sh``,
one ``KEY='value'`` line each, which the in-image script sources (with
``set -a``, so they are exported) before it runs ``prolog.sh`` or
``epilog.sh``.

Names match ``[A-Z_][A-Z0-9_]*`` and are not one of the variables the shell
or the in-image script itself relies on (``PATH``, ``IFS``, ``VMIC_*``, ...).
Values are wrapped in single quotes, with each ``'`` written as ``'\\''``:
inside single quotes /bin/sh gives no character a meaning, so spaces,
``$()``, backticks, ``;`` and newlines stay text. A value cannot hold a NUL
byte (no shell variable can) and must be UTF-8.

:func:`parse_context_sh` reads ``context.sh`` back without running it; it
accepts exactly the form :func:`render_context_sh` writes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from keys.errors import ConfigError

_KEY = re.compile(r"[A-Z_][A-Z0-9_]*")

RESERVED_KEYS = frozenset(
    {
        "PATH",
        "IFS",
        "ENV",
        "HOME",
        "PWD",
        "OLDPWD",
        "SHELL",
        "PS1",
        "PS2",
        "PS4",
        "OPTIND",
        "OPTARG",
        "LINENO",
        "PPID",
        "CDPATH",
        "BASH_ENV",
        "LANG",
        "LC_ALL",
        "TZ",
    }
)
"""Names a setting may not take: the shell and every program it starts read them."""

RESERVED_PREFIXES = ("VMIC_", "LD_")
"""``VMIC_*`` belongs to the in-image script (``VMIC_CONTEXT_DIR``, ...); ``LD_*`` to the loader."""

HEADER = (
    "# Site settings written by `vmic context build`. The in-image script sources this\n"
    "# file with `set -a` (so each setting is exported) before prolog.sh and epilog.sh.\n"
    "# Values are single-quoted: nothing in them is expanded.\n"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Setting:
    key: str
    value: str


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise ConfigError(
            f"setting name {key!r} is not allowed",
            hint="names are upper-case letters, digits and _, not starting with a digit "
            "(e.g. SYSLOG_SERVER)",
        )
    if key in RESERVED_KEYS or key.startswith(RESERVED_PREFIXES):
        raise ConfigError(
            f"setting name {key} is reserved",
            hint="the shell or the in-image script uses it; choose another name "
            "(VMIC_* and LD_* are reserved too)",
        )
    return key


def check_value(key: str, value: str) -> str:
    if "\0" in value:
        raise ConfigError(f"the value of {key} holds a NUL byte", hint="a shell cannot hold one")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(
            f"the value of {key} is not valid UTF-8", hint="check the locale and the text"
        ) from exc
    return value


def parse_assignment(text: str) -> Setting:
    """``KEY=VALUE`` as given to ``--set``; the value may be empty and may hold ``=``."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ConfigError(
            f"--set {text!r} has no '='", hint="write --set KEY=VALUE, e.g. --set BATCH=htcondor"
        )
    return Setting(key=check_key(key), value=check_value(key, value))


def check_unique(settings: Iterable[Setting]) -> tuple[Setting, ...]:
    checked = tuple(settings)
    seen: set[str] = set()
    for setting in checked:
        if setting.key in seen:
            raise ConfigError(
                f"setting {setting.key} is given twice", hint="give each --set KEY once"
            )
        seen.add(setting.key)
    return checked


def shell_quote(value: str) -> str:
    """``it's $(here)`` -> ``'it'\\''s $(here)'``: the text, inert for /bin/sh."""
    return "'" + value.replace("'", "'\\''") + "'"


def render_context_sh(settings: Sequence[Setting]) -> bytes:
    """``context.sh``: the header, then ``KEY='value'`` per setting in the order given."""
    lines = [HEADER]
    for setting in check_unique(settings):
        check_key(setting.key)
        check_value(setting.key, setting.value)
        lines.append(f"{setting.key}={shell_quote(setting.value)}\n")
    return "".join(lines).encode("utf-8")


def parse_context_sh(data: bytes) -> tuple[Setting, ...]:
    """The settings of a ``context.sh`` that :func:`render_context_sh` wrote, without running it.

    Comment and blank lines are skipped; anything else that is not a
    ``KEY='...'`` assignment (with ``'\\''`` for a quote) is refused.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("context.sh is not UTF-8 text", hint=_NOT_OURS) from exc
    settings: list[Setting] = []
    at = 0
    while at < len(text):
        end = text.find("\n", at)
        line_end = len(text) if end < 0 else end
        line = text[at:line_end]
        if not line.strip() or line.lstrip().startswith("#"):
            at = line_end + 1
            continue
        match = _KEY.match(text, at)
        if match is None or text[match.end() : match.end() + 1] != "=":
            raise ConfigError(f"context.sh: cannot read line {line[:60]!r}", hint=_NOT_OURS)
        value, at = _read_quoted(text, match.end() + 1)
        settings.append(Setting(key=match.group(), value=value))
    return tuple(settings)


_NOT_OURS = "this context.sh was not written by `vmic context build`"


def _read_quoted(text: str, at: int) -> tuple[str, int]:
    """The value :func:`shell_quote` wrote at ``at``, and where the next line starts."""
    parts: list[str] = []
    while True:
        if text[at : at + 1] != "'":
            raise ConfigError("context.sh: a value is not single-quoted", hint=_NOT_OURS)
        close = text.find("'", at + 1)
        if close < 0:
            raise ConfigError("context.sh: a quote is not closed", hint=_NOT_OURS)
        parts.append(text[at + 1 : close])
        at = close + 1
        if text.startswith("\\''", at):
            parts.append("'")
            at += 2  # `\'` is a quote; the next `'` opens the following part
            continue
        if at == len(text) or text[at] == "\n":
            return "".join(parts), at + 1
        raise ConfigError("context.sh: text after a value", hint=_NOT_OURS)
